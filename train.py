"""Train with fairseq's trainer, this repository as the user dir.

Takes fairseq-train's arguments: ``python train.py DATA ...`` is
``fairseq-train --user-dir <repo> --ignore-unused-valid-subsets DATA ...``. The second
flag is needed because fairseq otherwise lists the folder of DATA looking for
binarized valid shards, while our DATA names TSV files.
"""
import os
import sys

from fairseq_cli.train import cli_main

ROOT = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    if "--user-dir" not in sys.argv:
        sys.argv[1:1] = ["--user-dir", ROOT]
    if "--ignore-unused-valid-subsets" not in sys.argv:
        sys.argv[1:1] = ["--ignore-unused-valid-subsets"]
    cli_main()
