"""Average fairseq checkpoints, or interpolate between two, into a checkpoint evaluate.py loads as is.

    python preprocess/average_save_models.py --inputs a.pt b.pt c.pt [--weights 0.5 0.3 0.2] --output avg.pt
    python preprocess/average_save_models.py --inputs a.pt b.pt --lambdas 0 0.5 1 --output-dir interp/

The average is sum_i w_i * model_i, with weights that sum to 1 (uniform unless given). Interpolation
writes ``lambda_<l>.pt`` = (1 - l) * a + l * b for each l. All checkpoints must share the architecture,
keys and shapes; ``--on-missing`` says what to do with keys that differ. Floating tensors are averaged
in float64 and cast back to their dtype; integer buffers (BatchNorm's num_batches_tracked) are the first
checkpoint's. Checkpoints are read one at a time into a running sum, so memory does not grow with
their number.

The output is the first checkpoint with ``model`` replaced by the average and
``extra_state["provenance"]`` saying how it was made. Its optimizer state is dropped (fine-tune from
it with --reset-optimizer), and so are its EMA weights, which would be the first checkpoint's alone,
unless ``--ema`` averaged those: then the average is both ``model`` and ``extra_state["ema"]``.
"""
import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.checkpoint import MissingEmaError, UntrustedCheckpointError, ema_state_dict, load_state  # noqa: E402
from utils.files import atomic_open  # noqa: E402

WEIGHT_TOLERANCE = 1e-6
ARCHITECTURE_FIELDS = ("_name", "arch")
ARCHITECTURE_SUFFIXES = ("_dim", "_layers", "_heads")
MAX_LISTED = 50


class AveragingError(ValueError):
    pass


def finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text}")
    return value


def check_weights(weights, count):
    """Weights as given: one per checkpoint, non-negative, summing to 1 (a partial sum is never rescaled)."""
    if len(weights) != count:
        raise AveragingError(f"{len(weights)} weights for {count} checkpoints: give one per checkpoint")
    if min(weights) < 0:
        raise AveragingError(f"negative weight in {weights}: weights must be >= 0")
    if abs(sum(weights) - 1) > WEIGHT_TOLERANCE:
        raise AveragingError(f"weights {weights} sum to {sum(weights):.8g}, not 1")
    return weights


def check_lambdas(lambdas, allow_extrapolation):
    outside = [value for value in lambdas if not 0 <= value <= 1]
    if outside and not allow_extrapolation:
        raise AveragingError(f"lambdas {outside} are outside [0, 1]; --allow-extrapolation allows them")
    return lambdas


def lambda_file_name(value):
    return f"lambda_{str(value).removesuffix('.0')}.pt"


def planned_outputs(args):
    """(output path, weights) for each checkpoint to write."""
    count = len(args.inputs)
    if args.lambdas is None:
        return [(args.output, check_weights(args.weights or [1 / count] * count, count))]
    return [(os.path.join(args.output_dir, lambda_file_name(value)), [1 - value, value])
            for value in check_lambdas(args.lambdas, args.allow_extrapolation)]


def check_files_exist(paths):
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise AveragingError(f"checkpoint not found: {', '.join(missing)}")


def tensors_of(state, path, ema):
    """The state dict to average: the model's, or its EMA's."""
    return ema_state_dict(state, path) if ema else state["model"]


def architecture(state):
    """Name and size fields of the model config (``cfg.model``, or ``args`` in older checkpoints)."""
    fields = (state.get("cfg") or {}).get("model") or state.get("args") or {}
    if isinstance(fields, argparse.Namespace):
        fields = vars(fields)
    return {name: value for name, value in fields.items()
            if name in ARCHITECTURE_FIELDS or name.endswith(ARCHITECTURE_SUFFIXES)}


def read_signature(path, ema, trust_pickle):
    """The architecture and ``{key: shape}`` of one checkpoint."""
    state = load_state(path, trust_pickle)
    shapes = {key: tuple(value.shape) for key, value in tensors_of(state, path, ema).items()}
    print(f"read {path}: {len(shapes)} tensors")
    return architecture(state), shapes


def architecture_differences(paths, architectures):
    first_path, first = paths[0], architectures[0]
    return [f"{path}: {name}={fields[name]!r}, but {first[name]!r} in {first_path}"
            for path, fields in zip(paths[1:], architectures[1:])
            for name in sorted(first.keys() & fields.keys()) if fields[name] != first[name]]


def key_differences(paths, shapes):
    """Lines describing each difference from the first checkpoint, and the first's keys that differ."""
    first_path, first = paths[0], shapes[0]
    lines, mismatched = [], set()
    for path, these in zip(paths[1:], shapes[1:]):
        missing = [key for key in first if key not in these]
        extra = [key for key in these if key not in first]
        reshaped = [key for key in first if key in these and these[key] != first[key]]
        if missing:
            lines.append(f"{path}: lacks {len(missing)} keys of {first_path}: {', '.join(missing)}")
        if extra:
            lines.append(f"{path}: has {len(extra)} keys {first_path} lacks: {', '.join(extra)}")
        lines += [f"{key}: shape {list(first[key])} in {first_path}, {list(these[key])} in {path}" for key in reshaped]
        mismatched.update(missing, reshaped)
    return lines, mismatched


def listing(lines):
    shown = [f"  {line}" for line in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        shown.append(f"  ... and {len(lines) - MAX_LISTED} more")
    return "\n".join(shown)


def check_compatible(paths, ema, on_missing, trust_pickle):
    """The first checkpoint's keys that differ elsewhere; an error listing the differences unless allowed."""
    architectures, shapes = zip(*(read_signature(path, ema, trust_pickle) for path in paths))
    differences = architecture_differences(paths, architectures)
    if differences:
        raise AveragingError(f"the checkpoints hold different architectures:\n{listing(differences)}")
    differences, mismatched = key_differences(paths, shapes)
    if differences and on_missing == "error":
        raise AveragingError("the checkpoints' keys or shapes differ (--on-missing skip-key drops those keys, "
                             f"take-first takes them from the first checkpoint):\n{listing(differences)}")
    if differences:
        action = "dropped" if on_missing == "skip-key" else f"taken from {paths[0]}"
        print(f"keys that differ, {action}:\n{listing(differences)}")
    return mismatched


def read_first(path, ema, trust_pickle):
    """The first checkpoint's tensors to average, and the rest of it without optimizer state or EMA."""
    state = load_state(path, trust_pickle)
    tensors = tensors_of(state, path, ema)
    rest = {key: value for key, value in state.items() if key not in ("model", "last_optimizer_state")}
    rest["extra_state"] = {key: value for key, value in (state.get("extra_state") or {}).items()
                           if key not in ("ema", "ema_fp32_params")}
    print(f"read {path}")
    return rest, tensors


def add_weighted(sums, tensors, weight):
    for key, total in sums.items():
        total.add_(tensors[key].to(torch.float64), alpha=weight)


def weighted_sum(paths, weights, first_tensors, keys, ema, trust_pickle):
    """sum_i w_i * x_i in float64 over ``keys``, reading one checkpoint at a time."""
    sums = {key: torch.zeros_like(first_tensors[key], dtype=torch.float64) for key in keys}
    for index, (path, weight) in enumerate(zip(paths, weights)):
        if weight == 0:  # skipped rather than added, since 0 * inf would be nan
            print(f"skipped {path} (weight 0)")
            continue
        add_weighted(sums, first_tensors if index == 0 else tensors_of(load_state(path, trust_pickle), path, ema),
                     weight)
        print(f"added {path} with weight {weight:g}")
    return sums


def average_checkpoints(paths, weights, ema, mismatched, on_missing, trust_pickle):
    """The first checkpoint with ``model`` (and with ``ema``, its EMA) replaced by the weighted average."""
    rest, first_tensors = read_first(paths[0], ema, trust_pickle)
    kept = [key for key in first_tensors if not (on_missing == "skip-key" and key in mismatched)]
    averaged = [key for key in kept if key not in mismatched and first_tensors[key].is_floating_point()]
    sums = weighted_sum(paths, weights, first_tensors, averaged, ema, trust_pickle)
    model = {key: sums.pop(key).to(first_tensors[key].dtype) if key in sums else first_tensors[key]
             for key in kept}
    extra_state = dict(rest["extra_state"], provenance=provenance(paths, weights, ema, mismatched, on_missing))
    if ema:
        extra_state["ema"] = model
    return dict(rest, model=model, extra_state=extra_state)


def provenance(paths, weights, ema, mismatched, on_missing):
    """How the average was made, in plain types so that ``weights_only`` loading reads it."""
    return {"inputs": [os.path.abspath(path) for path in paths], "weights": [float(w) for w in weights],
            "ema": ema, "integer_buffers": "first", "on_missing": on_missing, "mismatched_keys": sorted(mismatched)}


def save(state, path):
    """Replaces ``path`` only once the whole file is written."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    print(f"wrote {path}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", nargs="+", required=True, help="checkpoints; the first gives cfg and buffers")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--weights", nargs="+", type=finite_float, help="one per input, >= 0, summing to 1")
    mode.add_argument("--lambdas", nargs="+", type=finite_float,
                      help="interpolate between two inputs: (1 - l) * first + l * second for each l")
    output = parser.add_mutually_exclusive_group(required=True)
    output.add_argument("--output", help="the averaged checkpoint")
    output.add_argument("--output-dir", help="where --lambdas writes lambda_<l>.pt")
    parser.add_argument("--ema", action="store_true", help="average the EMA weights (extra_state['ema'])")
    parser.add_argument("--on-missing", choices=["error", "skip-key", "take-first"], default="error",
                        help="keys absent from, or shaped differently in, some checkpoint: stop, drop them, "
                             "or take them from the first checkpoint")
    parser.add_argument("--allow-extrapolation", action="store_true", help="allow lambdas outside [0, 1]")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow legacy checkpoints' pickled objects (runs code: trusted files only)")
    args = parser.parse_args(argv)
    if (args.lambdas is None) != (args.output_dir is None):
        parser.error("--lambdas writes into --output-dir; an average goes to --output")
    if args.lambdas is not None and len(args.inputs) != 2:
        parser.error(f"--lambdas interpolates between two --inputs, not {len(args.inputs)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        outputs = planned_outputs(args)
        check_files_exist(args.inputs)
        mismatched = check_compatible(args.inputs, args.ema, args.on_missing, args.trust_pickle)
        for path, weights in outputs:
            save(average_checkpoints(args.inputs, weights, args.ema, mismatched, args.on_missing, args.trust_pickle),
                 path)
    except (AveragingError, MissingEmaError, UntrustedCheckpointError) as error:
        raise SystemExit(f"error: {error}") from None
    return [path for path, _ in outputs]


if __name__ == "__main__":
    main()
