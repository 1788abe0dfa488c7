"""run_scripts/slurm/*.sbatch submitted to a real Slurm: .ci/slurm_up.sh starts a one-node one on
loopback and prints the SLURM_CONF to export. Without a reachable Slurm these tests skip, or fail
when UNIGROUND_REQUIRE_SLURM=1 (as in .ci/run)."""
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import ROOT
from utils.checkpoint import load_state

pytestmark = pytest.mark.slurm
MAX_UPDATE = 8


def why_no_slurm():
    if not shutil.which("sbatch"):
        return "no sbatch on PATH (sh .ci/slurm_up.sh installs and starts a local Slurm)"
    config = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    if not os.path.isfile(config):
        return f"no Slurm config at {config} (set SLURM_CONF to the one .ci/slurm_up.sh prints)"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"no slurmctld answers ({config}): {(ping.stdout + ping.stderr).strip()}"
    return None


@pytest.fixture(scope="session", autouse=True)  # session: before the demo world is built
def slurm():
    problem = why_no_slurm()
    if problem and os.environ.get("UNIGROUND_REQUIRE_SLURM") == "1":
        pytest.fail(problem)
    if problem:
        pytest.skip(problem)


def submit(script, env, log, *options, wait=True):
    """sbatch the script from the repository root, on this CPU-only node: two tasks of one CPU."""
    command = ["sbatch", "--parsable", f"--output={log}", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0",
               "--cpus-per-task=1", *(["--wait"] if wait else []), f"run_scripts/slurm/{script}", *options]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, **env), capture_output=True, text=True,
                            timeout=600)
    return result, result.stdout.strip().split(";")[0]


def train_env(demo_dir, vocab_dir, save_dir, max_update=MAX_UPDATE, save_every=4):
    """unify_tiny on the demo captions: 2 ranks x batch 4 x update-freq 2 = a global batch of 16."""
    return {"TASK": "caption", "DATA": f"{demo_dir}/caption_train.tsv,{demo_dir}/caption_valid.tsv",
            "VOCAB": str(vocab_dir), "ARCH": "unify_tiny", "PATCH": "32", "BATCH": "4", "GLOBAL_BATCH": "16",
            "MAX_UPDATE": str(max_update), "WARMUP": "2", "VALID_EVERY": str(save_every), "WORKERS": "0",
            "SAVE_DIR": str(save_dir)}


def updates_in(log):
    """The update numbers of the train_inner lines of a --log-format simple log."""
    return [int(n) for n in re.findall(r"num_updates=(\d+)", log)]


def trained_updates(checkpoint):
    return load_state(checkpoint)["optimizer_history"][-1]["num_updates"]


def test_train_sbatch_trains_on_two_ranks_then_eval_sbatch_scores_the_checkpoint(demo_dir, vocab_dir, tmp_path):
    save_dir = tmp_path / "ckpt"
    result, job = submit("train.sbatch", train_env(demo_dir, vocab_dir, save_dir), tmp_path / "train.log",
                         "--log-interval", "1")
    log = (tmp_path / "train.log").read_text()
    assert result.returncode == 0, result.stderr + log[-3000:]
    assert f"job {job}: caption on 2 ranks" in log and "update-freq 2" in log
    assert "distributed init (rank 0)" in log and "distributed init (rank 1)" in log
    assert "training on 2 devices" in log
    assert updates_in(log)[-1] == MAX_UPDATE
    assert re.findall(r"bsz=(\d+), num_updates=", log) == ["16"] * MAX_UPDATE  # the global batch on every update
    assert len(re.findall(r"valid on 'valid' subset \| .*\| cider [\d.]+ \|", log)) == 2  # scored across ranks
    assert log.count("Saved checkpoint") == 2  # at 4 and 8 updates, once each: rank 0 writes
    state = load_state(save_dir / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == MAX_UPDATE
    assert state["cfg"]["distributed_training"]["distributed_world_size"] == 2
    assert state["cfg"]["optimization"]["update_freq"] == [2]

    results = tmp_path / "results"
    eval_env = {"TASK": "caption", "CKPT": str(save_dir / "checkpoint_last.pt"), "BEAM": "1", "BATCH": "6",
                "DATA": f"{demo_dir}/caption_valid.tsv", "RESULTS": str(results)}
    result, _ = submit("eval.sbatch", eval_env, tmp_path / "eval.log", "--num-workers", "0")
    eval_log = (tmp_path / "eval.log").read_text()
    assert result.returncode == 0, result.stderr + eval_log[-3000:]
    assert "evaluating caption on 2 ranks" in eval_log
    assert eval_log.count("evaluated: 6/6 rows") == 2  # each rank generated its batch of the two
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["rows"] == 12 and set(metrics) >= {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
    assert len((results / "predictions.jsonl").read_text().splitlines()) == 12


def wait_for(condition, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.2)


def job_gone(job):
    return subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip() == ""


def test_a_cancelled_job_resubmitted_resumes_from_its_last_checkpoint(demo_dir, vocab_dir, tmp_path):
    save_dir, max_update = tmp_path / "ckpt", 16
    env = train_env(demo_dir, vocab_dir, save_dir, max_update=max_update, save_every=2)
    first_log = tmp_path / "first.log"
    result, job = submit("train.sbatch", env, first_log, "--disable-validation", "--log-interval", "1", wait=False)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: first_log.exists() and "Saved checkpoint" in first_log.read_text() or job_gone(job))
    subprocess.run(["scancel", job], check=True)
    wait_for(lambda: job_gone(job))
    cancelled_at = trained_updates(save_dir / "checkpoint_last.pt")
    assert 2 <= cancelled_at < max_update, first_log.read_text()[-3000:]
    assert updates_in(first_log.read_text())[-1] < max_update

    result, _ = submit("train.sbatch", env, tmp_path / "second.log", "--disable-validation", "--log-interval", "1")
    log = (tmp_path / "second.log").read_text()
    assert result.returncode == 0, result.stderr + log[-3000:]
    loaded = rf"Loaded checkpoint \S+checkpoint_last.pt \(epoch \d+ @ {cancelled_at} updates\)"
    assert re.search(loaded, log), log[-3000:]
    assert updates_in(log)[0] == cancelled_at + 1 and updates_in(log)[-1] == max_update
    assert trained_updates(save_dir / "checkpoint_last.pt") == max_update
