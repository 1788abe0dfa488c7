"""SIGKILL at random points of a training run, then restart: training goes on from the last checkpoint
exactly as if never stopped, and no checkpoint on disk is ever torn. Same for average_save_models.py.

The runs take well under a second of training, too short to hit a phase by timing a kill from outside,
so the child (this file run as a script) kills itself with SIGKILL at a planned point: inside an update,
during validation, in the middle of writing a checkpoint's bytes, with the whole ``.partial`` file
written but not yet renamed, and in the middle of copying it to ``checkpoint_last.pt``. The points are
drawn from a seeded RNG.
"""
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_UPDATE, SAVE_EVERY = 8, 2
SAVES = range(SAVE_EVERY, MAX_UPDATE + 1, SAVE_EVERY)
PHASES = ("step", "valid", "write", "rename", "copy")

pytestmark = pytest.mark.slow


# ---- the child: a run that kills itself at the planned point --------------------------------------


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def checkpoint_update(state):
    return state["optimizer_history"][-1]["num_updates"]


def plant(kill):
    """Patch the functions a training or averaging run goes through so that it dies at ``kill``."""
    import fairseq_cli.train  # noqa: F401  (first, as in train.py: it sets up fairseq's log format)
    from fairseq.trainer import Trainer

    phase, update, fraction = kill["phase"], kill.get("update"), kill.get("fraction", 0.5)
    real_save, real_replace, real_copy = torch.save, os.replace, shutil.copyfileobj
    clip, valid = Trainer.clip_grad_norm, Trainer.valid_step

    def clip_grad_norm(self, *args, **kwargs):  # between backward and the optimizer step
        if phase == "step" and self.get_num_updates() == update - 1:
            die()
        return clip(self, *args, **kwargs)

    def valid_step(self, *args, **kwargs):
        if phase == "valid" and self.get_num_updates() == update:
            die()
        return valid(self, *args, **kwargs)

    def save(obj, f, *args, **kwargs):  # the checkpoint's bytes, cut short
        is_ours = phase == "average_write" or (
            phase == "write" and isinstance(obj, dict) and "optimizer_history" in obj and checkpoint_update(obj) == update)
        if not is_ours or not hasattr(f, "write"):
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: int(len(buffer.getvalue()) * fraction)])
        f.flush()
        die()

    def replace(source, target):  # the .partial file complete, not yet renamed
        if phase == "rename" and os.path.basename(target) == f"checkpoint_1_{update}.pt":
            die()
        return real_replace(source, target)

    def copyfileobj(source, target, length=0):  # checkpoint_last.pt half copied
        written = os.readlink(f"/proc/self/fd/{target.fileno()}")
        if phase == "copy" and os.path.basename(source.name) == f"checkpoint_1_{update}.pt" \
                and written.endswith("checkpoint_last.pt.partial"):
            target.write(source.read(int(os.path.getsize(source.name) * fraction)))
            target.flush()
            die()
        return real_copy(source, target, length)

    Trainer.clip_grad_norm, Trainer.valid_step = clip_grad_norm, valid_step
    torch.save, os.replace, shutil.copyfileobj = save, replace, copyfileobj


def child(kill, script, argv):
    import runpy

    sys.path.insert(0, ROOT)
    os.chdir(ROOT)
    plant(json.loads(kill))
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")


# ---- the parent ---------------------------------------------------------------------------------------


TRAIN_FLAGS = ["--task", "caption", "--arch", "unify_tiny", "--embed-dim", "32", "--ffn-dim", "64",
               "--attention-heads", "2", "--encoder-layers", "1", "--decoder-layers", "1", "--dropout", "0",
               "--image-backbone", "test_resnet", "--image-backbone-out-index", "2", "--patch-image-size", "32",
               "--criterion", "constrained_label_smoothed_cross_entropy", "--label-smoothing", "0.1",
               "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4",
               "--batch-size", "8", "--max-update", str(MAX_UPDATE), "--save-interval-updates", str(SAVE_EVERY),
               "--log-interval", "1", "--num-workers", "0", "--log-format", "simple", "--seed", "1"]


def run(script, argv, kill=None):
    command = [sys.executable, __file__, json.dumps(kill), script, *argv] if kill else [sys.executable, script, *argv]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")  # the log up to the kill
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)


def train(demo_dir, vocab_dir, save_dir, kill=None):
    data = f"{demo_dir}/caption_train.tsv,{demo_dir}/caption_valid.tsv"
    result = run("train.py", [data, "--vocab-dir", str(vocab_dir), "--save-dir", str(save_dir), *TRAIN_FLAGS], kill)
    output = result.stdout + result.stderr
    expected = -signal.SIGKILL if kill else 0
    assert result.returncode == expected, f"{kill}: exit {result.returncode}\n{output[-3000:]}"
    return output


def losses(output):
    """{update: logged training loss} from --log-interval 1 lines."""
    found = re.findall(r"\| train_inner \| .*?loss=([\d.]+), .*?num_updates=(\d+),", output)
    return {int(update): loss for loss, update in found}


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_every_checkpoint_whole(save_dir):
    """Each *.pt loads; returns the update of checkpoint_last.pt (0 if none yet)."""
    for path in save_dir.glob("*.pt"):
        state = load(path)
        assert state["model"], path
    last = save_dir / "checkpoint_last.pt"
    return checkpoint_update(load(last)) if last.exists() else 0


def plan_kill(rng, phase, resumed_from):
    """A kill at a random eligible update after the checkpoint the run resumes from."""
    updates = range(resumed_from + 1, MAX_UPDATE + 1) if phase == "step" else [u for u in SAVES if u > resumed_from]
    return {"phase": phase, "update": rng.choice(list(updates)), "fraction": round(rng.uniform(0.05, 0.95), 3)}


@pytest.fixture(scope="module")
def uninterrupted(demo_dir, vocab_dir, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("uninterrupted")
    return save_dir, losses(train(demo_dir, vocab_dir, save_dir))


def test_killed_run_resumes_to_the_same_weights_and_losses(uninterrupted, demo_dir, vocab_dir, tmp_path):
    reference_dir, reference_losses = uninterrupted
    assert sorted(reference_losses) == list(range(1, MAX_UPDATE + 1)), reference_losses
    rng = random.Random(8)
    save_dir = tmp_path / "killed"
    survived, logged = [], {}
    for phase in rng.sample(PHASES, len(PHASES)):
        resumed_from = assert_every_checkpoint_whole(save_dir) if save_dir.exists() else 0
        kill = plan_kill(rng, phase, resumed_from)
        output = train(demo_dir, vocab_dir, save_dir, kill)
        assert assert_every_checkpoint_whole(save_dir) == max(s for s in [0, *SAVES] if s < kill["update"]), kill
        if phase in ("write", "rename", "copy"):  # the kill did land in the middle of a write
            assert list(save_dir.glob("*.partial")), sorted(os.listdir(save_dir))
        for update, loss in losses(output).items():  # every update, before and after resuming, as uninterrupted
            assert loss == reference_losses[update], (kill, update, loss, reference_losses[update])
            logged[update] = loss
        survived.append(kill)
    output = train(demo_dir, vocab_dir, save_dir)
    logged.update(losses(output))
    assert logged == reference_losses
    assert assert_every_checkpoint_whole(save_dir) == MAX_UPDATE
    assert not list(save_dir.glob("*.partial")), "a partial write was left behind although it was redone"
    assert len(survived) == len(PHASES)
    print("kills survived:", survived)

    resumed, reference = load(save_dir / "checkpoint_last.pt"), load(reference_dir / "checkpoint_last.pt")
    for key, value in reference["model"].items():
        assert torch.allclose(resumed["model"][key], value, rtol=0, atol=1e-6), key
    resumed_adam, reference_adam = resumed["last_optimizer_state"]["state"], reference["last_optimizer_state"]["state"]
    assert resumed_adam.keys() == reference_adam.keys()
    for key, moments in reference_adam.items():
        for name, value in moments.items():
            assert torch.allclose(torch.as_tensor(resumed_adam[key][name]), torch.as_tensor(value), rtol=0,
                                  atol=1e-8), (key, name)
    assert resumed["extra_state"]["train_iterator"] == reference["extra_state"]["train_iterator"]
    assert resumed["optimizer_history"][-1] == reference["optimizer_history"][-1]  # lr scheduler state, updates


def test_killed_average_leaves_the_old_output_whole(uninterrupted, tmp_path):
    reference_dir, _ = uninterrupted
    fraction = round(random.Random(8).uniform(0.05, 0.95), 3)
    inputs = [str(reference_dir / f"checkpoint_1_{update}.pt") for update in (4, 6)]
    output = tmp_path / "average.pt"
    shutil.copyfile(inputs[0], output)
    before = output.read_bytes()
    argv = ["--inputs", *inputs, "--output", str(output)]
    result = run("preprocess/average_save_models.py", argv, {"phase": "average_write", "fraction": fraction})
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert output.read_bytes() == before  # the old file, untouched
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".average.pt.")]
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < len(before)
    result = run("preprocess/average_save_models.py", argv)
    assert result.returncode == 0, result.stderr[-2000:]
    averaged, first, second = load(output), load(inputs[0]), load(inputs[1])
    key = "decoder.final_norm.weight"
    assert torch.allclose(averaged["model"][key], (first["model"][key] + second["model"][key]) / 2, atol=1e-6)


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], sys.argv[3:])
