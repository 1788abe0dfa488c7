"""Convert an OFA or UnIVAL checkpoint to a UniGround one (safetensors weights plus a JSON config) and back.

    python preprocess/convert_checkpoint.py ofa_base.pt converted/      # -> converted/model.safetensors, config.json
    python preprocess/convert_checkpoint.py converted/ ofa_base_again.pt

The OFA file is read with the safe loader (``weights_only``, ``argparse.Namespace`` allowed) and
must name an ``ofa_*`` or ``unival_*`` architecture. Weights go to ``model.safetensors``, each tensor once: names
that share one tensor (OFA ties its token embeddings and output projection) are recorded as
aliases and tied again on the way back. Everything else (``cfg`` with its ``Namespace``, ``args``,
the training bookkeeping) goes to ``config.json``. The round trip is bit-exact, except that an
optimizer state (``last_optimizer_state``, moments as big as the model) is dropped, and said so.
"""
import argparse
import json
import logging
import os
import sys

import safetensors.torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.ofa import checkpoint_options  # noqa: E402
from models.unival import checkpoint_model_class  # noqa: E402
from utils.checkpoint import UntrustedCheckpointError, load_state, write_checkpoint  # noqa: E402
from utils.files import atomic_open  # noqa: E402

logger = logging.getLogger("convert_checkpoint")
WEIGHTS, CONFIG = "model.safetensors", "config.json"
FORMAT = "uniground-ofa-checkpoint/1"
DROPPED = "last_optimizer_state"


class ConversionError(ValueError):
    pass


def to_json(value, where):
    """``value`` as JSON, with Namespaces and tuples tagged so that they come back as they were."""
    if isinstance(value, argparse.Namespace):
        return {"__namespace__": to_json(vars(value), where)}
    if isinstance(value, tuple):
        return {"__tuple__": to_json(list(value), where)}
    if isinstance(value, list):
        return [to_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ConversionError(f"{where}: a dict with keys that are not strings cannot be converted")
        return {key: to_json(item, f"{where}.{key}") for key, item in value.items() if key != DROPPED}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConversionError(f"{where}: a {type(value).__name__} cannot be converted")


def from_json(value):
    if isinstance(value, list):
        return [from_json(item) for item in value]
    if isinstance(value, dict):
        if set(value) == {"__namespace__"}:
            return argparse.Namespace(**from_json(value["__namespace__"]))
        if set(value) == {"__tuple__"}:
            return tuple(from_json(value["__tuple__"]))
        return {key: from_json(item) for key, item in value.items()}
    return value


def unique_tensors(weights):
    """(tensors stored once, {alias: name}) for names that share one tensor."""
    stored, aliases, seen = {}, {}, {}
    for name, tensor in weights.items():
        identity = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                    tuple(tensor.stride()), tensor.dtype)
        if identity in seen:
            aliases[name] = seen[identity]
        else:
            seen[identity] = name
            stored[name] = tensor.contiguous()
    return stored, aliases


def to_uniground(path, out_dir):
    state = load_state(path)
    checkpoint_options(state, path, checkpoint_model_class(state))
    dropped = [i for i, entry in enumerate(state.get("optimizer_history") or []) if DROPPED in entry]
    if dropped:
        logger.info("%s: dropping the optimizer state (%s of optimizer_history %s)", path, DROPPED, dropped)
    rest = {key: value for key, value in state.items() if key != "model"}
    stored, aliases = unique_tensors(state["model"])
    config = {"format": FORMAT, "keys": list(state), "order": list(state["model"]), "aliases": aliases,
              "checkpoint": to_json(rest, path)}
    os.makedirs(out_dir, exist_ok=True)
    with atomic_open(os.path.join(out_dir, WEIGHTS), "wb") as f:
        f.write(safetensors.torch.save(stored))
    with atomic_open(os.path.join(out_dir, CONFIG)) as f:
        json.dump(config, f, indent=1)


def to_ofa(in_dir, path):
    with open(os.path.join(in_dir, CONFIG), encoding="utf-8") as f:
        config = json.load(f)
    if config.get("format") != FORMAT:
        raise ConversionError(f"{os.path.join(in_dir, CONFIG)}: not a converted OFA checkpoint "
                              f"(format {config.get('format')!r}, expected {FORMAT!r})")
    with open(os.path.join(in_dir, WEIGHTS), "rb") as f:
        stored = safetensors.torch.load(f.read())
    weights = {name: stored[config["aliases"].get(name, name)] for name in config["order"]}
    state = from_json(config["checkpoint"])
    state["model"] = weights
    write_checkpoint({key: state[key] for key in config["keys"]}, path)  # in the original's key order


def main(argv=None):
    logging.basicConfig(format="%(levelname)s | %(name)s | %(message)s", level=logging.INFO)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="an OFA checkpoint (.pt), or a folder this script wrote")
    parser.add_argument("output", help="the folder to write, or the OFA checkpoint (.pt) to write")
    args = parser.parse_args(argv)
    try:
        if os.path.isdir(args.input):
            to_ofa(args.input, args.output)
        else:
            to_uniground(args.input, args.output)
    except (ValueError, OSError, UntrustedCheckpointError) as error:
        raise SystemExit(f"convert_checkpoint: {error}") from None


if __name__ == "__main__":
    main()
