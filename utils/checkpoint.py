"""Checkpoint loading that never runs pickled code unless told to, and writing that a kill cannot tear.

``torch.load(weights_only=True)`` rebuilds only tensors, containers and the
allowlisted types below. Older fairseq, OFA and UnIVAL checkpoints keep their
options in an ``argparse.Namespace``, a plain attribute bag, so it is
allowlisted; anything else needs ``trust_pickle=True``, which a user must ask for.
fairseq's resume path and checkpoint writes are routed through here by ``utils/fairseq_fixes.py``.
A checkpoint's task state holds its ``identity`` (vocabulary fingerprint, bin counts, training
layout), checked wherever it is loaded.
"""
import argparse
import contextlib
import contextvars
import functools
import logging
import os
import pickle
import shutil

import torch
from fairseq import checkpoint_utils
from fairseq.dataclass.utils import overwrite_args_by_name
from omegaconf import OmegaConf

from utils.files import atomic_open

SAFE_GLOBALS = [argparse.Namespace]
IDENTITY = "identity"  # the task-state key of what decoding depends on (UniGroundTask.identity)
DECODING_KEYS = {"vocab": "vocabulary fingerprint", "num_bins": "num_bins", "num_time_bins": "num_time_bins"}
_restoring_into = contextvars.ContextVar("restoring_into", default=None)  # the task a trainer restores into
logger = logging.getLogger(__name__)


class UntrustedCheckpointError(RuntimeError):
    pass


class MissingEmaError(ValueError):
    pass


class CheckpointWriteError(RuntimeError):
    pass


class CheckpointReadError(RuntimeError):
    pass


class CheckpointMismatchError(ValueError):
    pass


def check_identity(current, recorded, path):
    """Refuse to decode with another vocabulary or other bin counts than the checkpoint was trained with:
    the same ids would mean other pieces and other places. A checkpoint from before identities were
    recorded is accepted, with one warning when ``path`` is given."""
    if recorded is None:
        if path:
            _warn_without_identity(path)
        return
    for key, name in DECODING_KEYS.items():
        if recorded.get(key) != current[key]:
            where = f" (--vocab-dir {current['vocab_dir']}; the checkpoint's was {recorded.get('vocab_dir')})"
            raise CheckpointMismatchError(
                f"{path + ': ' if path else ''}{name} {recorded.get(key)} in the checkpoint, {current[key]} here"
                f"{where if key == 'vocab' else ''}: decoding would be wrong; use the checkpoint's value")


@functools.cache
def _warn_without_identity(path):
    logger.warning("%s records no vocabulary fingerprint or bin counts (an older checkpoint): they are not "
                   "checked, so they must be the ones it was trained with", path)


def load_state(path, trust_pickle=False):
    """The raw checkpoint dict; refuses pickled code unless ``trust_pickle``. ``weights_only`` is always
    passed, so TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (which only changes torch.load's default) cannot turn
    code execution back on."""
    try:
        with open(path, "rb") as f, torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(f, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        refused = next((line.strip() for line in str(error).splitlines() if "Unsupported global" in line), None)
        if refused is None:
            raise _unreadable(path, error) from None
        raise UntrustedCheckpointError(
            f"{path}: refusing to unpickle it ({refused}). If you trust where this file comes from, "
            "evaluate.py and average_save_models.py take --trust-pickle.") from None
    except (EOFError, RuntimeError, ValueError) as error:  # what torch.load raises on a torn or foreign file
        raise _unreadable(path, error) from None
    except OSError as error:  # torch reports a zip read past a truncated end as a bare "Invalid argument"
        if os.path.isfile(path):
            raise _unreadable(path, error) from None
        raise


def check_finite_weights(weights, path):
    """Refuse weights holding NaN or Inf (a diverged run's): generation would never choose EOS and end in
    fairseq's bare ``AssertionError: 32 < 32``."""
    bad = [key for key, value in weights.items()
           if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise CheckpointReadError(f"{path}: {len(bad)} of its {len(weights)} weight tensors hold NaN or Inf "
                                  f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): the run that wrote it "
                                  "diverged; use an earlier checkpoint")


def _unreadable(path, error):
    reason = str(error).split(". ")[0] or type(error).__name__
    size = os.path.getsize(path)
    return CheckpointReadError(f"{path}: not a readable checkpoint ({reason}; {size} bytes): the file is "
                               "truncated or corrupt (an interrupted copy or download?)")


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
    check_finite_weights(state["model"], path)
    state = _with_overrides(state, overrides or {})
    if IDENTITY not in (state.get("task_state") or {}):
        _warn_without_identity(path)
    try:
        return checkpoint_utils.load_model_ensemble_and_task([path], state=state)
    except CheckpointMismatchError as error:  # raised by the task's load_state_dict, which has no path
        raise CheckpointMismatchError(f"{path}: {error}") from None


def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
    """fairseq's ``checkpoint_utils.load_checkpoint_to_cpu`` (resume, --restore-file,
    --finetune-from-model) through ``load_state``, so training never unpickles code either; the task
    being restored into checks the checkpoint's vocabulary and bins (its ``check_restored``)."""
    state = _with_overrides(load_state(path), arg_overrides or {})
    check_finite_weights(state["model"], path)
    task = _restoring_into.get()
    if hasattr(task, "check_restored"):
        task.check_restored(state, path)
    return state


def _with_overrides(state, overrides):
    """The state with options replaced in its ``args`` or ``cfg`` and upgraded, as fairseq's loader does."""
    if state.get("args") is not None:
        for name, value in overrides.items():
            setattr(state["args"], name, value)
    if state.get("cfg") is not None:
        state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})
        settled_in_training(state["cfg"].task, state.get("task_state") or {})
        overwrite_args_by_name(state["cfg"], overrides)
    return checkpoint_utils._upgrade_state_dict(state)


@contextlib.contextmanager
def restoring_into(task):
    """While a trainer restores a checkpoint into ``task``, ``load_checkpoint_to_cpu`` checks the
    checkpoint's identity against the task's."""
    token = _restoring_into.set(task)
    try:
        yield
    finally:
        _restoring_into.reset(token)


def settled_in_training(task_cfg, task_state):
    """Fill the task options left unset in training (the length limits, sized to the training data)
    with the values the task kept in its state under the same name."""
    for name, value in task_state.items():
        if name in task_cfg and task_cfg[name] is None:
            task_cfg[name] = value


# ---- writing --------------------------------------------------------------------------------------


def write_checkpoint(state, path):
    """``torch.save`` to ``path`` through a fixed-name ``.partial`` file that is fsynced and renamed."""
    with _located_write_errors(path), atomic_open(path, "wb", partial=f"{path}.partial") as f:
        torch.save(state, f)


def copy_checkpoint(source, path):
    """A copy of ``source`` at ``path``, replacing it only once whole."""
    with _located_write_errors(path), open(source, "rb") as src, \
            atomic_open(path, "wb", partial=f"{path}.partial") as f:
        shutil.copyfileobj(src, f, 16 << 20)


@contextlib.contextmanager
def _located_write_errors(path):
    """A failed write becomes a ``CheckpointWriteError`` saying where, why, and that nothing was replaced."""
    try:
        yield
    except CheckpointWriteError:
        raise
    except (OSError, RuntimeError) as error:
        # torch.save reports a failed write on a file object as an opaque RuntimeError ("unexpected pos");
        # the OSError that caused it (ENOSPC, EFBIG) is its context.
        cause = error if isinstance(error, OSError) else error.__context__ or error
        raise CheckpointWriteError(
            f"cannot write checkpoint {path}: {cause}. Nothing was replaced: the checkpoints already in "
            f"{os.path.dirname(os.path.abspath(path))} are intact; free space and restart to resume "
            "from checkpoint_last.pt.") from error
