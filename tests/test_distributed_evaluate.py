"""Data-parallel evaluate.py through torch.distributed with gloo on CPU: two ranks share out the batches
(rank r the batches r, r + 2, ...), and rank 0 writes byte for byte the files one process writes."""
import json
import os
import re
import subprocess
import sys

import pytest

import evaluate
from conftest import ROOT
from helpers import TORCHRUN, free_port, read_lines, set_cell, start_rank, write_tsv

pytestmark = pytest.mark.slow
BATCH = 5  # 12 rows: rank 0 gets the batches of lines 1-5 and 11-12, rank 1 that of lines 6-10 and an empty one


def two_bad_rows(demo_dir, tmp_path):
    """12 refcoco rows whose images on lines 2 and 7 are broken: one in each rank's share."""
    rows = read_lines(demo_dir / "refcoco_valid.tsv", 12)
    for line in (2, 7):
        rows[line - 1] = set_cell(rows[line - 1], 5, "@@@")
    return write_tsv(tmp_path / "rows.tsv", rows)


def eval_flags(checkpoint, data, results_dir, *extra):
    return ["evaluate.py", "--path", str(checkpoint), "--data", data, "--results-dir", str(results_dir), "--beam", "2",
            "--batch-size", str(BATCH), "--num-workers", "0", "--cpu", *extra]


def test_two_ranks_write_the_files_of_one_process_and_rank_1_writes_nothing(checkpoints, demo_dir, tmp_path):
    data = two_bad_rows(demo_dir, tmp_path)
    # one thread, as each rank has: another thread count sums in another order, and moves scores in the 6th digit
    single = subprocess.Popen([sys.executable, *eval_flags(checkpoints[-1], data, tmp_path / "one", "--skip-bad-rows",
                                                           "2")], cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                              stdout=open(tmp_path / "one.log", "w"), stderr=subprocess.STDOUT)
    port = free_port()
    ranks = [start_rank(rank, port, eval_flags(checkpoints[-1], data, tmp_path / f"rank{rank}", "--skip-bad-rows", "2"),
                        tmp_path / f"rank{rank}.log") for rank in (0, 1)]
    assert single.wait(timeout=120) == 0, (tmp_path / "one.log").read_text()[-3000:]
    codes = [rank.wait(timeout=120) for rank in ranks]
    logs = [(tmp_path / f"rank{rank}.log").read_text() for rank in (0, 1)]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]

    files = sorted(evaluate.RESULT_FILES)
    assert sorted(os.listdir(tmp_path / "rank0")) == sorted(os.listdir(tmp_path / "one")) == files
    for name in files:
        assert (tmp_path / "rank0" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    metrics = json.loads((tmp_path / "rank0" / "metrics.json").read_text())
    assert metrics["rows"] == 10 and metrics["bad_rows"] == 2
    assert not (tmp_path / "rank1").exists()  # rank 1 was given a results folder of its own: it never made it
    # each rank read only its own batches
    assert f"{data}:2: column 5 (image)" in logs[0] and f"{data}:7:" not in logs[0]
    assert f"{data}:7: column 5 (image)" in logs[1] and f"{data}:2:" not in logs[1]
    assert "evaluated: 7/7 rows" in logs[0] and "evaluated: 5/5 rows" in logs[1]


def test_the_bad_row_budget_counts_the_rows_of_every_rank(checkpoints, demo_dir, tmp_path):
    """Each rank meets one bad row, within --skip-bad-rows 1; the two together are not, as in one process."""
    data = two_bad_rows(demo_dir, tmp_path)
    error = f"2 bad rows, more than --skip-bad-rows 1; the last: {data}:7: column 5 (image)"
    with pytest.raises(RuntimeError, match=re.escape(error)):
        evaluate.main(eval_flags(checkpoints[-1], data, tmp_path / "one", "--skip-bad-rows", "1")[1:])

    result = subprocess.run(
        [TORCHRUN, "--nproc-per-node", "2", "--master-port", str(free_port()),
         *eval_flags(checkpoints[-1], data, tmp_path / "two", "--skip-bad-rows", "1")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.count(f"RuntimeError: {error}") == 2, output[-3000:]  # on both ranks
    assert not (tmp_path / "one").exists() and not (tmp_path / "two").exists()
