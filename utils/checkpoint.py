"""Checkpoint loading that never runs pickled code unless told to.

``torch.load(weights_only=True)`` rebuilds only tensors, containers and the
allowlisted types below. Older fairseq, OFA and UnIVAL checkpoints keep their
options in an ``argparse.Namespace``, a plain attribute bag, so it is
allowlisted; anything else needs ``trust_pickle=True``, which a user must ask for.
"""
import argparse
import pickle

import torch
from fairseq import checkpoint_utils
from fairseq.dataclass.utils import overwrite_args_by_name
from omegaconf import OmegaConf

SAFE_GLOBALS = [argparse.Namespace]


class UntrustedCheckpointError(RuntimeError):
    pass


class MissingEmaError(ValueError):
    pass


def allow_checkpoint_types():
    """Let every ``torch.load`` with ``weights_only=True`` (fairseq's resume too) read our checkpoints."""
    torch.serialization.add_safe_globals(SAFE_GLOBALS)


def load_state(path, trust_pickle=False):
    """The raw checkpoint dict; refuses pickled code unless ``trust_pickle``."""
    try:
        with open(path, "rb") as f, torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(f, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        refused = next((line.strip() for line in str(error).splitlines() if "Unsupported global" in line),
                       "an object outside the allowlist")
        raise UntrustedCheckpointError(
            f"{path}: refusing to unpickle it ({refused}). "
            "If you trust where this file comes from, pass --trust-pickle.") from None


def ema_state_dict(state, path):
    """The EMA weights fairseq keeps in ``extra_state["ema"]`` with ``--store-ema``."""
    ema = (state.get("extra_state") or {}).get("ema")
    if ema is None:
        raise MissingEmaError(f"{path}: no EMA weights (extra_state['ema']); "
                              "fairseq keeps them only when trained with --store-ema")
    return ema


def load_models_and_task(path, overrides=None, trust_pickle=False, use_ema=False):
    """Models, config and task from a checkpoint, with task options overridden (e.g. ``data``).

    ``use_ema`` builds the models from the checkpoint's EMA weights instead of its ``model``.
    """
    state = load_state(path, trust_pickle)
    if use_ema:
        state["model"] = ema_state_dict(state, path)
    overrides = overrides or {}
    if state.get("args") is not None:
        for name, value in overrides.items():
            setattr(state["args"], name, value)
    if state.get("cfg") is not None:
        state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})
        overwrite_args_by_name(state["cfg"], overrides)
    state = checkpoint_utils._upgrade_state_dict(state)
    return checkpoint_utils.load_model_ensemble_and_task([path], state=state)
