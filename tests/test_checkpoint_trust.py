"""Loading a checkpoint never runs pickled code unless --trust-pickle says so; real checkpoints need no trust."""
import argparse
import base64
import io
import json
import os
import subprocess
import sys

import pytest
import torch
from fairseq import checkpoint_utils
from PIL import Image

from preprocess import average_save_models
from utils import fairseq_fixes
from utils.checkpoint import CheckpointReadError, UntrustedCheckpointError, load_models_and_task, load_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Evil:
    """Unpickling this creates ``marker``: any code could run in its place."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def only_our_allowlist():
    """load_state must work on its own, whatever another import added to torch's safe globals."""
    saved = list(torch.serialization.get_safe_globals())
    torch.serialization.clear_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(saved)


def crafted(tmp_path, where):
    marker = tmp_path / "MARKER"
    evil = Evil(marker)
    state = {"model": {}, "cfg": None}
    if where == "top":
        state["evil"] = evil
    elif where == "nested":
        state["cfg"] = {"task": {"_name": "refcoco", "extra": [1, {"deep": evil}]}}
    elif where == "in_namespace":  # the allowlisted Namespace must not smuggle anything in
        state["args"] = argparse.Namespace(task="refcoco", evil=evil)
    path = tmp_path / "crafted.pt"
    torch.save(state, path)
    assert not marker.exists()
    return path, marker


@pytest.mark.parametrize("where", ["top", "nested", "in_namespace"])
def test_crafted_checkpoint_is_refused_without_running_its_code(where, tmp_path, only_our_allowlist):
    fairseq_fixes.apply()  # as evaluate.py and fairseq-train run: Namespace allowed, nothing else
    path, marker = crafted(tmp_path, where)
    with pytest.raises(UntrustedCheckpointError, match="--trust-pickle") as info:
        load_state(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_trust_pickle_is_what_runs_the_code(tmp_path):
    path, marker = crafted(tmp_path, "top")
    state = load_state(path, trust_pickle=True)
    state["evil"].close()
    assert marker.exists()


def test_legacy_namespace_checkpoint_loads_without_trust(tmp_path, only_our_allowlist):
    """fairseq/OFA/UnIVAL checkpoints keep options in an argparse.Namespace, which is allowlisted."""
    path = tmp_path / "legacy.pt"
    torch.save({"args": argparse.Namespace(task="refcoco", lr=[1e-4]), "model": {"w": torch.ones(2)}}, path)
    state = load_state(path)
    assert state["args"].task == "refcoco" and torch.equal(state["model"]["w"], torch.ones(2))


def test_average_save_models_refuses_a_crafted_input(tmp_path, only_our_allowlist):
    path, marker = crafted(tmp_path, "nested")
    output = tmp_path / "average.pt"
    with pytest.raises(SystemExit, match="--trust-pickle") as info:
        average_save_models.main(["--inputs", str(path), str(path), "--output", str(output)])
    assert str(path) in str(info.value)
    assert not marker.exists() and not output.exists()


@pytest.mark.parametrize("force_no_weights_only", ["0", "1"])
def test_resuming_training_refuses_a_crafted_checkpoint(force_no_weights_only, tmp_path, only_our_allowlist,
                                                        monkeypatch):
    """fairseq's resume (checkpoint_last.pt, --restore-file, --finetune-from-model) loads through
    load_checkpoint_to_cpu, which passes weights_only=True itself: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD,
    which flips only torch.load's default, cannot turn code execution back on."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", force_no_weights_only)
    fairseq_fixes.apply()
    path, marker = crafted(tmp_path, "top")
    with pytest.raises(UntrustedCheckpointError, match="Unsupported global"):
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert not marker.exists()


@pytest.mark.slow
def test_train_restore_file_never_runs_a_checkpoints_pickle_whatever_the_environment(tmp_path, demo_dir, vocab_dir):
    """The issue's case: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 and train.py --restore-file evil.pt."""
    path, marker = crafted(tmp_path, "top")
    result = subprocess.run(
        [sys.executable, "train.py", f"{demo_dir}/refcoco_train.tsv,{demo_dir}/refcoco_valid.tsv", "--vocab-dir",
         str(vocab_dir), "--save-dir", str(tmp_path / "save"), *TRAIN_FLAGS, "--restore-file", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env=dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"UntrustedCheckpointError: {path}: refusing")
    assert not marker.exists()
    assert not (tmp_path / "save" / "checkpoint_last.pt").exists()


@pytest.mark.parametrize("kept", [0, 10, 0.5, -10])
def test_truncated_checkpoint_is_an_error_naming_it(kept, checkpoints, tmp_path):
    whole = checkpoints[0].read_bytes()
    path = tmp_path / "torn.pt"
    path.write_bytes(whole[:int(kept * len(whole)) if isinstance(kept, float) else kept % len(whole)])
    with pytest.raises(CheckpointReadError, match="truncated or corrupt") as info:
        load_state(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_an_error_naming_the_checkpoint_and_tensor(value, checkpoints, tmp_path):
    """Not fairseq's 'AssertionError: 32 < 32', which generation with NaN scores ends in."""
    state = load_state(checkpoints[0])
    key = next(key for key, tensor in state["model"].items() if "norm" in key and tensor.is_floating_point())
    state["model"][key].view(-1)[0] = value
    path = tmp_path / "diverged.pt"
    torch.save(state, path)
    for load in (load_models_and_task, checkpoint_utils.load_checkpoint_to_cpu):  # evaluation, and resuming
        fairseq_fixes.apply()
        with pytest.raises(CheckpointReadError, match=f"{path}: 1 of its .* weight tensors hold NaN or Inf \\({key}\\)"):
            load(str(path))


def test_average_save_models_names_the_truncated_input(checkpoints, tmp_path):
    torn = tmp_path / "torn.pt"
    torn.write_bytes(checkpoints[1].read_bytes()[:-1000])
    with pytest.raises(SystemExit, match="truncated or corrupt") as info:
        average_save_models.main(["--inputs", str(checkpoints[0]), str(torn), "--output", str(tmp_path / "a.pt")])
    assert str(torn) in str(info.value) and str(checkpoints[0]) not in str(info.value)


def run(*command):
    return subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_evaluate_refuses_a_crafted_checkpoint(tmp_path, demo_dir):
    path, marker = crafted(tmp_path, "top")
    result = run("evaluate.py", "--path", str(path), "--data", f"{demo_dir}/refcoco_valid.tsv",
                 "--results-dir", str(tmp_path / "out"), "--beam", "1")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "--trust-pickle" in output and "UntrustedCheckpointError" in output, output[-2000:]
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


# ---- a checkpoint from a real training run ------------------------------------------------------

TRAIN_FLAGS = ["--task", "refcoco", "--arch", "unify_tiny", "--embed-dim", "32", "--ffn-dim", "64",
               "--attention-heads", "2", "--encoder-layers", "1", "--decoder-layers", "1",
               "--image-backbone", "test_resnet", "--image-backbone-out-index", "2", "--patch-image-size", "64",
               "--criterion", "constrained_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-3",
               "--batch-size", "4", "--max-update", "3", "--num-workers", "0", "--log-format", "simple",
               "--seed", "1"]


@pytest.fixture(scope="module")
def trained(demo_dir, vocab_dir, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("trained")
    result = run("train.py", f"{demo_dir}/refcoco_train.tsv,{demo_dir}/refcoco_valid.tsv", "--vocab-dir",
                 str(vocab_dir), "--save-dir", str(save_dir), *TRAIN_FLAGS)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return save_dir / "checkpoint_last.pt"


@pytest.mark.slow
def test_trained_checkpoint_loads_weights_only(trained, only_our_allowlist):
    state = load_state(trained)
    assert state["model"] and all(isinstance(v, torch.Tensor) for v in state["model"].values())
    assert state["cfg"]["task"]["_name"] == "refcoco"
    plain = torch.load(trained, map_location="cpu", weights_only=True)
    assert plain.keys() == state.keys()
    assert plain["optimizer_history"][-1]["num_updates"] == 3


def image_sizes(tsv):
    sizes = []
    with open(tsv, encoding="utf-8") as f:
        for line in f:
            image = Image.open(io.BytesIO(base64.b64decode(line.rstrip("\n").split("\t")[4])))
            sizes.append(image.size)
    return sizes


@pytest.mark.slow
def test_evaluate_writes_predictions_and_metrics(trained, demo_dir, tmp_path):
    valid = f"{demo_dir}/refcoco_valid.tsv"
    out = tmp_path / "out"
    result = run("evaluate.py", "--path", str(trained), "--data", valid, "--results-dir", str(out), "--beam", "1",
                 "--cpu")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    sizes = image_sizes(valid)
    with open(out / "predictions.jsonl", encoding="utf-8") as f:
        predictions = [json.loads(line) for line in f]
    assert len(predictions) == len(sizes) == 27
    with open(valid, encoding="utf-8") as f:
        uniq_ids = [line.split("\t")[0] for line in f]
    assert [p["uniq_id"] for p in predictions] == uniq_ids
    for prediction, (width, height) in zip(predictions, sizes):
        box = prediction["box"]
        if box is None:
            continue
        assert len(box) == 4 and all(isinstance(v, float) for v in box)
        x0, y0, x1, y1 = box
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height, box
    with open(out / "metrics.json", encoding="utf-8") as f:
        metrics = json.load(f)
    assert {"acc@0.5", "mean_iou"} <= set(metrics)
    assert 0.0 <= metrics["acc@0.5"] <= 1.0 and 0.0 <= metrics["mean_iou"] <= 1.0
    assert metrics["rows"] == 27 and metrics["bad_rows"] == 0
