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
import logging
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.logs import MESSAGE_ONLY, add_verbose_flag, set_up_logging  # noqa: E402

if __name__ == "__main__":
    set_up_logging(fmt=MESSAGE_ONLY)  # before fairseq is imported (utils/logs.py says why)

from utils.averaging import (AveragingError, average_checkpoints, check_compatible, check_lambdas,  # noqa: E402
                             check_weights)
from utils.checkpoint import CheckpointReadError, MissingEmaError, UntrustedCheckpointError  # noqa: E402
from utils.files import OutputError, atomic_open, check_outputs  # noqa: E402


def finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text}")
    return value


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


def save(state, path):
    """Replaces ``path`` only once the whole file is written."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    logging.getLogger("average_save_models").info("wrote %s", path)


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
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if (args.lambdas is None) != (args.output_dir is None):
        parser.error("--lambdas writes into --output-dir; an average goes to --output")
    if args.lambdas is not None and len(args.inputs) != 2:
        parser.error(f"--lambdas interpolates between two --inputs, not {len(args.inputs)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    set_up_logging(args.verbose, MESSAGE_ONLY)
    try:
        outputs = planned_outputs(args)
        check_files_exist(args.inputs)
        check_outputs([path for path, _ in outputs], args.inputs)
        mismatched = check_compatible(args.inputs, args.ema, args.on_missing, args.trust_pickle)
        for path, weights in outputs:
            save(average_checkpoints(args.inputs, weights, args.ema, mismatched, args.on_missing, args.trust_pickle),
                 path)
    except (AveragingError, CheckpointReadError, MissingEmaError, OutputError, UntrustedCheckpointError) as error:
        raise SystemExit(f"error: {error}") from None
    return [path for path, _ in outputs]


if __name__ == "__main__":
    main()
