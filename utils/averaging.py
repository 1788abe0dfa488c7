"""Weighted averages of checkpoints (model merging), shared by average_save_models.py and the
weight_average task.

All checkpoints must share the architecture, keys and shapes; ``on_missing`` says what to do with
keys that differ. Floating tensors are averaged in float64 and cast back to their dtype; integer
buffers (BatchNorm's num_batches_tracked) are the first checkpoint's. Checkpoints are read one at a
time into a running sum, so memory does not grow with their number.
"""
import argparse
import logging
import os

import torch

from utils.checkpoint import DECODING_KEYS, IDENTITY, ema_state_dict, load_state
from utils.progress import track

logger = logging.getLogger(__name__)

WEIGHT_TOLERANCE = 1e-6
ARCHITECTURE_FIELDS = ("_name", "arch")
ARCHITECTURE_SUFFIXES = ("_dim", "_layers", "_heads")
MAX_LISTED = 50


class AveragingError(ValueError):
    pass


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


def tensors_of(state, path, ema):
    """The state dict to average: the model's, or its EMA's."""
    return ema_state_dict(state, path) if ema else state["model"]


def architecture(state):
    """Name and size fields of the model config (``cfg.model``, or ``args`` in older checkpoints), and
    the vocabulary fingerprint and bin counts, where recorded: weights over other ids do not average."""
    fields = (state.get("cfg") or {}).get("model") or state.get("args") or {}
    if isinstance(fields, argparse.Namespace):
        fields = vars(fields)
    identity = (state.get("task_state") or {}).get(IDENTITY) or {}
    return {**{name: value for name, value in fields.items()
               if name in ARCHITECTURE_FIELDS or name.endswith(ARCHITECTURE_SUFFIXES)},
            **{name: identity[name] for name in DECODING_KEYS if name in identity}}


def read_signature(path, ema, trust_pickle):
    """The architecture and ``{key: shape}`` of one checkpoint."""
    state = load_state(path, trust_pickle)
    shapes = {key: tuple(value.shape) for key, value in tensors_of(state, path, ema).items()}
    logger.info(f"read {path}: {len(shapes)} tensors")
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
        logger.info(f"keys that differ, {action}:\n{listing(differences)}")
    return mismatched


def read_first(path, ema, trust_pickle):
    """The first checkpoint's tensors to average, and the rest of it without optimizer state or EMA."""
    state = load_state(path, trust_pickle)
    tensors = tensors_of(state, path, ema)
    rest = {key: value for key, value in state.items() if key not in ("model", "last_optimizer_state")}
    rest["extra_state"] = {key: value for key, value in (state.get("extra_state") or {}).items()
                           if key not in ("ema", "ema_fp32_params")}
    logger.info(f"read {path}")
    return rest, tensors


def add_weighted(sums, tensors, weight):
    for key, total in sums.items():
        total.add_(tensors[key].to(torch.float64), alpha=weight)


def weighted_sum(paths, weights, first_tensors, keys, ema, trust_pickle):
    """sum_i w_i * x_i in float64 over ``keys``, reading one checkpoint at a time."""
    sums = {key: torch.zeros_like(first_tensors[key], dtype=torch.float64) for key in keys}
    inputs = track(list(zip(paths, weights)), "averaged", unit="checkpoints", interval=0, log=logger)
    for index, (path, weight) in enumerate(inputs):
        if weight == 0:  # skipped rather than added, since 0 * inf would be nan
            logger.info(f"skipped {path} (weight 0)")
            continue
        add_weighted(sums, first_tensors if index == 0 else tensors_of(load_state(path, trust_pickle), path, ema),
                     weight)
        logger.info(f"added {path} with weight {weight:g}")
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
