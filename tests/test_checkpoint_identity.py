"""A checkpoint records its vocabulary's fingerprint, its bin counts and its training data's layout:
evaluating or fine-tuning it with others is an error naming both, not a wrong score."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

import evaluate
from conftest import model_flags
from utils.checkpoint import IDENTITY, load_models_and_task, load_state
from data.vocab import DICT_FILE, fingerprint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def other_vocab(vocab_dir, tmp_path_factory):
    """The same vocabulary with two pieces trading ids: same size, same files but for two lines."""
    out = tmp_path_factory.mktemp("other_vocab")
    shutil.copytree(vocab_dir, out, dirs_exist_ok=True)
    lines = (out / DICT_FILE).read_text(encoding="utf-8").splitlines(keepends=True)
    lines[10], lines[11] = lines[11], lines[10]
    (out / DICT_FILE).write_text("".join(lines), encoding="utf-8")
    return out


def run_evaluate(checkpoint, data, results_dir, *flags):
    return evaluate.main(["--path", str(checkpoint), "--data", str(data), "--results-dir", str(results_dir),
                          "--beam", "1", "--batch-size", "8", "--num-workers", "0", "--cpu", *flags])


def train(demo_dir, vocab_dir, save_dir, task, *flags):
    command = [sys.executable, "train.py", f"{demo_dir}/{task}_train.tsv,{demo_dir}/{task}_valid.tsv", "--task", task,
               "--vocab-dir", str(vocab_dir), *model_flags(), "--patch-image-size", "64",
               "--criterion", "constrained_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-3",
               "--batch-size", "4", "--max-update", "1", "--disable-validation", "--no-epoch-checkpoints",
               "--num-workers", "0", "--seed", "1", "--log-format", "simple", "--save-dir", str(save_dir), *flags]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_checkpoint_records_vocabulary_bins_and_layout(checkpoints, vocab_dir, demo_dir):
    identity = load_state(checkpoints[0])["task_state"][IDENTITY]
    assert identity["vocab"] == fingerprint(vocab_dir) and len(identity["vocab"]) == 16
    assert (identity["num_bins"], identity["num_time_bins"]) == (1000, 100)
    assert identity["layout"] == ["-", "-", "-", "box", "-"]  # refcoco: uniq-id, image-id, text, box, image


def test_checkpoint_finds_its_vocabulary_from_any_folder(checkpoints, vocab_dir, demo_dir, tmp_path, monkeypatch):
    """Trained with a relative --vocab-dir, the checkpoint records the folder's absolute path."""
    assert load_state(checkpoints[0])["cfg"]["task"]["vocab_dir"] == str(vocab_dir)
    monkeypatch.chdir(tmp_path)
    run_evaluate(checkpoints[0], demo_dir / "refcoco_valid.tsv", tmp_path)
    assert (tmp_path / "metrics.json").exists()


def test_an_option_the_checkpoints_task_lacks_is_refused_not_skipped(checkpoints, demo_dir, tmp_path):
    """fairseq's override of a checkpoint's options skips a name its config lacks: a misspelt option."""
    with pytest.raises(SystemExit, match="^UnknownTaskOptionError: the refcoco task has no option 'skip_bad_row'"):
        run_evaluate(checkpoints[0], demo_dir / "refcoco_valid.tsv", tmp_path, "--task-option", "skip_bad_row=1")
    assert not (tmp_path / "metrics.json").exists()


def test_evaluating_with_another_vocabulary_of_the_same_size_is_refused(checkpoints, other_vocab, vocab_dir,
                                                                        demo_dir, tmp_path):
    with pytest.raises(SystemExit, match="CheckpointMismatchError: ") as info:
        run_evaluate(checkpoints[0], demo_dir / "refcoco_valid.tsv", tmp_path, "--vocab-dir", str(other_vocab))
    message = str(info.value)
    assert str(checkpoints[0]) in message and "vocabulary fingerprint" in message
    assert fingerprint(vocab_dir) in message and fingerprint(other_vocab) in message
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("flags", [[], ["--task", "refcoco"]])
def test_decoding_options_other_than_the_checkpoints_are_refused(flags, checkpoints, demo_dir, tmp_path):
    with pytest.raises(SystemExit, match="num_bins 1000 in the checkpoint, 500 here") as info:
        run_evaluate(checkpoints[0], demo_dir / "refcoco_valid.tsv", tmp_path, "--task-option", "num_bins=500", *flags)
    assert str(checkpoints[0]) in str(info.value)


def test_a_checkpoint_without_identity_still_loads_with_one_warning(checkpoints, tmp_path, caplog):
    state = load_state(checkpoints[0])
    del state["task_state"][IDENTITY]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    with caplog.at_level("WARNING"):
        models, _, task = load_models_and_task(str(old))
        load_models_and_task(str(old))
    assert models and task.cfg.num_bins == 1000
    assert [r.message for r in caplog.records if "records no vocabulary fingerprint" in r.message] == [
        f"{old} records no vocabulary fingerprint or bin counts (an older checkpoint): they are not checked, "
        "so they must be the ones it was trained with"]


def test_fine_tuning_with_another_vocabulary_is_refused(checkpoints, other_vocab, demo_dir, tmp_path):
    result = train(demo_dir, other_vocab, tmp_path / "ft", "refcoco", "--restore-file", str(checkpoints[0]),
                   "--reset-optimizer", "--reset-dataloader", "--reset-meters", "--reset-lr-scheduler")
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert "CheckpointMismatchError" in error and str(checkpoints[0]) in error and "vocabulary fingerprint" in error
    assert not (tmp_path / "ft" / "checkpoint_last.pt").exists()


def test_a_caption_checkpoint_on_a_refcoco_file_is_an_error_not_a_score(demo_dir, vocab_dir, tmp_path):
    result = train(demo_dir, vocab_dir, tmp_path / "caption", "caption")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    checkpoint = tmp_path / "caption" / "checkpoint_last.pt"
    run_evaluate(checkpoint, demo_dir / "caption_valid.tsv", tmp_path / "ok")  # its own layout is fine
    with pytest.raises(SystemExit, match="laid out for another task: column 4 holds 'box'") as info:
        run_evaluate(checkpoint, demo_dir / "refcoco_valid.tsv", tmp_path / "out")
    assert str(demo_dir / "refcoco_valid.tsv") in str(info.value)
    assert not (tmp_path / "out" / "metrics.json").exists()
