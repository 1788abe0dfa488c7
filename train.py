"""Train with fairseq's trainer, this repository as the user dir.

Takes fairseq-train's arguments: ``python train.py DATA ...`` is
``fairseq-train --user-dir <repo> --ignore-unused-valid-subsets DATA ...``. The second
flag is needed because fairseq otherwise lists the folder of DATA looking for
binarized valid shards, while our DATA names TSV files.

Several processes, on one machine or many: ``torchrun --nproc-per-node N train.py ...``, or
run_scripts/slurm/train.sbatch, which gives each Slurm task torchrun's environment. Each process
joins the group as rank RANK of WORLD_SIZE through fairseq's own machinery (``call_main``), with
gloo and fairseq's legacy_ddp wrapper when there is no GPU. A rank that dies ends the job through
its launcher (torchrun and ``srun --kill-on-bad-exit`` stop the others); a rank that makes no
progress for ``--heartbeat-timeout`` seconds (default 600 here), because it hangs or waits on a
peer that hangs, is ended by fairseq's heartbeat with "Killing job for not making progress".
"""
import os
import signal
import sys

from utils.logs import add_verbose_flag, set_up_logging

if __name__ == "__main__":
    set_up_logging(stream=sys.stdout)  # before fairseq is imported (utils/logs.py says why); stdout as fairseq

from fairseq_cli.train import main as train_main  # noqa: E402

import torch  # noqa: E402
from fairseq import options  # noqa: E402
from fairseq.dataclass.utils import convert_namespace_to_omegaconf  # noqa: E402
from fairseq.distributed import utils as distributed_utils  # noqa: E402
from torch.distributed.elastic.multiprocessing.errors import record  # noqa: E402

from data.errors import DataFileError
from utils.checkpoint import CheckpointMismatchError, CheckpointReadError, UntrustedCheckpointError
from utils.files import OutputError, lock_folder

ROOT = os.path.dirname(os.path.abspath(__file__))
HEARTBEAT_SECONDS = 600
LOCK_FILE = "train.lock"
# failures of the user's files: reported in a line, without a traceback
USER_ERRORS = (CheckpointMismatchError, CheckpointReadError, DataFileError, UntrustedCheckpointError)


def launcher_flags(env):
    """fairseq options for one process of a torchrun-style launch (WORLD_SIZE, RANK, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT). fairseq 0.12 reads that environment itself only when
    --distributed-world-size already matches it (its default is the GPU count, so on a CPU machine
    every rank would silently train alone), and then picks the device as rank % GPU count.

    On resume every rank reads the checkpoint itself: fairseq would otherwise pickle rank 0's copy
    across and unpickle it with torch.load's weights_only default, which refuses the config in it."""
    world_size = int(env.get("WORLD_SIZE", 1))
    if world_size == 1:
        return []
    flags = ["--distributed-init-method", "env://", "--distributed-world-size", str(world_size),
             "--distributed-rank", env["RANK"], "--device-id", env.get("LOCAL_RANK", "0"), "--distributed-no-spawn",
             "--load-checkpoint-on-all-dp-ranks"]
    if not torch.cuda.is_available():
        # torch's DistributedDataParallel wants a GPU device id from fairseq; legacy_ddp all-reduces itself
        flags += ["--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
    return flags


@record  # under torchrun, its failure summary then shows each rank's error rather than a link to the docs
def main(argv):
    defaults = ["--user-dir", ROOT, "--ignore-unused-valid-subsets", "--heartbeat-timeout", str(HEARTBEAT_SECONDS)]
    # options given later win, so the command line overrides the defaults and the launcher's
    parser = options.get_training_parser()
    add_verbose_flag(parser)
    args = options.parse_args_and_arch(parser, defaults + launcher_flags(os.environ) + argv)
    set_up_logging(args.verbose, stream=sys.stdout)
    for name in ("vocab_dir", "bpe_dir"):  # recorded in checkpoints: absolute, so found from any folder
        if getattr(args, name, None):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    if getattr(args, "bad_rows_file", "") is None:  # a UniGround task lists skipped rows beside its checkpoints
        args.bad_rows_file = os.path.join(args.save_dir, "bad_rows.jsonl")
    if os.environ.get("RANK", "0") == "0":  # one process of a job holds the lock; its ranks share the folder
        try:
            lock = lock_folder(args.save_dir, LOCK_FILE)  # noqa: F841  (held until the process ends)
        except OutputError as error:
            raise SystemExit(f"error: --save-dir {error}") from None
    if args.distributed_init_method == "env://":
        # fairseq's heartbeat ends a stalled rank with SIGINT, which Python would only act on once
        # the collective the rank waits in returns: never, when a peer hangs. The default action
        # ends the process at once.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        distributed_utils.call_main(convert_namespace_to_omegaconf(args), train_main)
    except USER_ERRORS as error:
        raise SystemExit(f"{type(error).__name__}: {error}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
