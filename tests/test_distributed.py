"""Data-parallel training through torch.distributed with gloo on CPU, as train.py runs it.

Two ranks of batch 8 must train exactly as one process of batch 8 with --update-freq 2: fairseq
gives rank r the batches r, r + 2, ... of the epoch, and the one process groups the same batches in
the same pairs. The ranks are started with torchrun, or by hand with torchrun's environment as
run_scripts/slurm/rank_env.sh starts each Slurm task.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, model_flags
from helpers import TORCHRUN, build_task, free_port, read_lines, set_cell, start_rank, write_tsv
from utils.checkpoint import load_state


def shard_iterator(task, batch_size, epoch, rank, world_size=2):
    """The batch iterator fairseq's trainer builds for ``rank``."""
    return task.get_batch_iterator(task.dataset("train"), max_sentences=batch_size, seed=1, epoch=epoch,
                                   num_shards=world_size, shard_id=rank, num_workers=0)


def rows_per_rank(task, batch_size, epoch, world_size=2):
    """Row ids each rank trains on in ``epoch``, batch by batch."""
    return [[batch["id"].tolist() if batch else []
             for batch in shard_iterator(task, batch_size, epoch, rank, world_size).next_epoch_itr(shuffle=True)]
            for rank in range(world_size)]


def test_ranks_share_out_every_row_exactly_once_per_epoch(demo_dir, vocab_dir):
    task = build_task("caption", f"{demo_dir}/caption_train.tsv", vocab_dir)
    task.load_dataset("train")
    rows = len(task.dataset("train"))
    orders = []
    for epoch in (1, 2):
        shards = rows_per_rank(task, 7, epoch)  # 144 rows: 21 batches, the last one short
        assert len(shards[0]) == len(shards[1])  # the rank short of a batch gets an empty one, not fewer steps
        assert [] in shards[1] and [] not in shards[0]
        seen = [i for shard in shards for batch in shard for i in batch]
        assert sorted(seen) == list(range(rows))
        orders.append(seen)
    assert orders[0] != orders[1]  # a fresh order each epoch, the same on every rank


def train_flags(demo_dir, vocab_dir, data, save_dir, *extra):
    return ["train.py", f"{data},{demo_dir}/caption_valid.tsv", "--task", "caption", "--vocab-dir", str(vocab_dir),
            *model_flags(), "--patch-image-size", "64", "--criterion", "constrained_label_smoothed_cross_entropy",
            "--optimizer", "adam", "--lr", "3e-3", "--num-workers", "0", "--disable-validation",
            "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "1", "--seed", "1",
            "--save-dir", str(save_dir), *extra]


def updates(log):
    """The train_inner records of a json-format fairseq log."""
    return [json.loads(line.split("| train_inner | ", 1)[1]) for line in log.splitlines() if "| train_inner | " in line]


def parameters(path):
    """The trained weights of a checkpoint: BatchNorm's running statistics are left out, as every rank
    keeps its own (fairseq's legacy_ddp does not broadcast buffers) and only rank 0's are saved."""
    return {k: v for k, v in load_state(path)["model"].items() if "running_" not in k and "num_batches" not in k}


@pytest.mark.slow
def test_two_ranks_train_as_one_process_with_the_same_global_batch_and_only_rank_0_saves(
        demo_dir, vocab_dir, tmp_path):
    data = f"{demo_dir}/caption_train.tsv"
    single = subprocess.run(
        [sys.executable, *train_flags(demo_dir, vocab_dir, data, tmp_path / "one", "--batch-size", "8",
                                      "--update-freq", "2", "--max-epoch", "1")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]

    port = free_port()
    ranks = [start_rank(rank, port, train_flags(demo_dir, vocab_dir, data, tmp_path / f"rank{rank}",
                                                "--batch-size", "8", "--max-epoch", "1"), tmp_path / f"rank{rank}.log")
             for rank in (0, 1)]
    assert [rank.wait(timeout=300) for rank in ranks] == [0, 0], (tmp_path / "rank0.log").read_text()[-3000:]

    log = (tmp_path / "rank0.log").read_text()
    assert "training on 2 devices" in log
    one, two = updates(single.stdout), updates(log)
    assert [u["num_updates"] for u in two] == [str(n) for n in range(1, 10)]  # 144 rows / (2 x 8) per update
    assert sum(int(u["bsz"]) for u in two) == len(read_lines(data))  # every row once
    for a, b in zip(one, two):
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), abs=2e-3)  # logged to 3 decimals
        assert float(b["gnorm"]) == pytest.approx(float(a["gnorm"]), abs=2e-3)

    trained = parameters(tmp_path / "rank0" / "checkpoint_last.pt")
    reference = parameters(tmp_path / "one" / "checkpoint_last.pt")
    assert trained.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(trained[key], reference[key], rtol=1e-4, atol=1e-5, msg=key)
    assert not (tmp_path / "rank1").exists()  # rank 1 was given a save dir of its own: it never made it


def corrupt_row(demo_dir, tmp_path, line):
    """caption_train.tsv with the image cell of ``line`` (1-based) replaced by a broken one."""
    rows = read_lines(f"{demo_dir}/caption_train.tsv")
    rows[line - 1] = set_cell(rows[line - 1], 5, "bm90IGFuIGltYWdl")  # base64 of "not an image"
    return write_tsv(tmp_path / "caption_train.tsv", rows)


@pytest.mark.slow
def test_a_bad_row_in_one_rank_s_shard_ends_the_whole_job_with_its_location(demo_dir, vocab_dir, tmp_path):
    task = build_task("caption", f"{demo_dir}/caption_train.tsv", vocab_dir)
    task.load_dataset("train")
    iterator = shard_iterator(task, 8, epoch=1, rank=1)
    shared = iterator.first_batch["id"].tolist()  # every rank builds this one at start, as its dummy batch
    bad_line = next(i for i in next(iterator.next_epoch_itr(shuffle=True))["id"].tolist() if i not in shared) + 1
    data = corrupt_row(demo_dir, tmp_path, bad_line)

    started = time.monotonic()
    result = subprocess.run(
        [TORCHRUN, "--nproc-per-node", "2", "--master-port", str(free_port()),
         *train_flags(demo_dir, vocab_dir, data, tmp_path / "ckpt", "--batch-size", "8", "--max-update", "50")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert time.monotonic() - started < 120  # torchrun stops rank 0 rather than letting it wait
    error = f"data.errors.BadInputError: {data}:{bad_line}: column 5 (image)"
    assert f"[rank1]: {error}" in output and f"[rank0]: {error}" not in output, output[-3000:]
    assert "train.py FAILED" in output  # torchrun's summary, with each failed rank's error


def wait_for_update(log_path, update, process, timeout=120):
    deadline = time.monotonic() + timeout
    while f'"num_updates": "{update}"' not in log_path.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.1)


@pytest.mark.slow
def test_a_rank_waiting_on_a_hung_peer_is_ended_by_the_heartbeat(demo_dir, vocab_dir, tmp_path):
    port = free_port()
    flags = train_flags(demo_dir, vocab_dir, f"{demo_dir}/caption_train.tsv", tmp_path / "ckpt", "--batch-size", "8",
                        "--max-update", "1000", "--heartbeat-timeout", "5")
    ranks = [start_rank(rank, port, flags, tmp_path / f"rank{rank}.log") for rank in (0, 1)]
    try:
        wait_for_update(tmp_path / "rank0.log", 2, ranks[0])
        ranks[1].send_signal(signal.SIGSTOP)  # alive, holding its sockets open, never answering
        stopped = time.monotonic()
        assert ranks[0].wait(timeout=120) == -signal.SIGINT
        assert 5 <= time.monotonic() - stopped < 60
        assert "Killing job for not making progress in 5 seconds" in (tmp_path / "rank0.log").read_text()
    finally:
        for rank in ranks:
            rank.kill()
            rank.wait()


@pytest.mark.slow
def test_a_killed_rank_fails_its_peer_at_once_without_a_launcher(demo_dir, vocab_dir, tmp_path):
    port = free_port()
    flags = train_flags(demo_dir, vocab_dir, f"{demo_dir}/caption_train.tsv", tmp_path / "ckpt", "--batch-size", "8",
                        "--max-update", "1000")
    ranks = [start_rank(rank, port, flags, tmp_path / f"rank{rank}.log") for rank in (0, 1)]
    try:
        wait_for_update(tmp_path / "rank0.log", 2, ranks[0])
        ranks[1].kill()
        killed = time.monotonic()
        assert ranks[0].wait(timeout=120) == 1
        assert time.monotonic() - killed < 30  # far below the 600 s heartbeat: gloo sees the closed socket
        assert re.search(r"Connection (reset|closed) by peer", (tmp_path / "rank0.log").read_text())  # gloo's words
    finally:
        for rank in ranks:
            rank.kill()
            rank.wait()
