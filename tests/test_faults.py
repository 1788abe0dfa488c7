"""Faults during training: a NaN or Inf loss, and a disk that fills up while a checkpoint is written."""
import logging
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch

from helpers import build_trainer
from train import LOCK_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_FLAGS = ["--arch", "unify_tiny", "--embed-dim", "32", "--ffn-dim", "64", "--attention-heads", "2",
               "--encoder-layers", "1", "--decoder-layers", "1", "--dropout", "0", "--image-backbone", "test_resnet",
               "--image-backbone-out-index", "2", "--patch-image-size", "32"]
TRAIN_FLAGS = ["--task", "caption", *MODEL_FLAGS, "--criterion", "constrained_label_smoothed_cross_entropy",
               "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "4", "--seed", "1"]


# ---- NaN and Inf losses, through fairseq's own trainer --------------------------------------------


@pytest.fixture
def trainer(demo_dir, vocab_dir, tmp_path):
    """fairseq's Trainer on the caption task, built as fairseq-train builds it, and its first batches."""
    trainer = build_trainer([f"{demo_dir}/caption_train.tsv,{demo_dir}/caption_valid.tsv", "--vocab-dir",
                             str(vocab_dir), *TRAIN_FLAGS, "--save-dir", str(tmp_path), "--max-nonfinite-steps", "2"])
    batches = trainer.get_train_iterator(epoch=1).next_epoch_itr(shuffle=False)
    return trainer, [next(batches) for _ in range(8)]


def poison(trainer, value):
    """Until the handle is removed, a NaN in the decoder's output (hence in the loss), or an infinite loss."""
    if value != value:
        return trainer.model.decoder.final_norm.register_forward_hook(lambda module, inputs, output: output * value)
    return trainer.criterion.register_forward_hook(lambda module, inputs, output: (output[0] * value, *output[1:]))


def weights_and_adam(trainer):
    weights = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    adam = {key: {name: torch.as_tensor(value).clone() for name, value in moments.items()}
            for key, moments in trainer.optimizer.state_dict()["state"].items()}
    return weights, adam


def assert_same(before, after):
    for part in (0, 1):
        assert before[part].keys() == after[part].keys()
        for key, value in before[part].items():
            if part == 0:
                assert torch.equal(value, after[part][key]), key
            else:
                assert all(torch.equal(v, after[part][key][n]) for n, v in value.items()), key


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_loss_skips_the_update_and_training_goes_on(trainer, value, caplog):
    trainer, batches = trainer
    for batch in batches[:2]:  # Adam gets momentum, which an empty step would follow
        assert trainer.train_step([batch])["loss"] > 0
    before = weights_and_adam(trainer)
    lines = sorted(i + 1 for i in batches[2]["id"].tolist())
    handle = poison(trainer, value)
    with caplog.at_level(logging.WARNING):
        log = trainer.train_step([batches[2]])
    handle.remove()
    assert log["nonfinite"] == 1 and log["sample_size"] == 0
    assert_same(before, weights_and_adam(trainer))
    warning = next(r.getMessage() for r in caplog.records if "batch skipped" in r.getMessage())
    assert f"update 3: loss {value}" in warning and "caption_train.tsv" in warning
    assert sorted(int(n) for n in warning.split("lines [")[1].split("]")[0].split(", ")) == lines
    assert trainer.get_num_updates() == 3  # the batch is consumed; the schedule counts it

    assert trainer.train_step([batches[3]])["loss"] > 0  # learning resumes
    after = weights_and_adam(trainer)
    assert not all(torch.equal(v, after[0][k]) for k, v in before[0].items())
    assert trainer.task.nonfinite_in_a_row == 0


def test_too_many_nonfinite_losses_in_a_row_stop_with_update_and_rows(trainer, tmp_path):
    trainer, batches = trainer
    trainer.train_step([batches[0]])
    poison(trainer, float("nan"))
    for batch in batches[1:3]:  # --max-nonfinite-steps 2: two are skipped
        assert trainer.train_step([batch])["nonfinite"] == 1
    with pytest.raises(FloatingPointError) as info:
        trainer.train_step([batches[3]])
    lines = [i + 1 for i in batches[3]["id"].tolist()]
    message = str(info.value)
    assert message.startswith(f"update 4: loss nan on the batch of lines {lines} of ")
    assert "3 batches in a row" in message and "--max-nonfinite-steps 2" in message
    assert (tmp_path / "crash.pt").exists()  # fairseq's crash checkpoint, written atomically too


# ---- a disk that fills up -------------------------------------------------------------------------------


def limit_file_size(limit):
    """In the child: writes beyond ``limit`` bytes fail with EFBIG instead of killing it with SIGXFSZ."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def train(demo_dir, vocab_dir, save_dir, max_update, preexec_fn=None):
    command = [sys.executable, "train.py", f"{demo_dir}/caption_train.tsv,{demo_dir}/caption_valid.tsv", "--vocab-dir",
               str(vocab_dir), *TRAIN_FLAGS, "--max-update", str(max_update), "--save-interval-updates", "2",
               "--num-workers", "0", "--log-format", "simple", "--save-dir", str(save_dir)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, preexec_fn=preexec_fn,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.slow
def test_a_full_disk_stops_training_with_the_previous_checkpoint_intact(demo_dir, vocab_dir, tmp_path):
    save_dir = tmp_path / "ckpt"
    first = train(demo_dir, vocab_dir, save_dir, 2)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    before = {path.name: path.read_bytes() for path in save_dir.iterdir() if path.name != LOCK_FILE}
    assert {"checkpoint_last.pt", "checkpoint_1_2.pt"} <= set(before)

    size = len(before["checkpoint_last.pt"])
    result = train(demo_dir, vocab_dir, save_dir, 4, preexec_fn=limit_file_size(size // 2))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Loaded checkpoint" in output, output[-3000:]
    error = output.strip().splitlines()[-1]
    assert error.startswith("utils.checkpoint.CheckpointWriteError: cannot write checkpoint "), error
    assert f"{save_dir}/checkpoint_1_4.pt: [Errno 27] File too large" in error
    assert "Nothing was replaced" in error and str(save_dir) in error
    assert "| ERROR | fairseq.checkpoint_utils" not in output  # fairseq's three tries 2.5 s apart are gone
    after = {path.name: path.read_bytes() for path in save_dir.iterdir() if path.name != LOCK_FILE}
    assert after == before  # no partial file left, every checkpoint byte for byte as it was
    state = torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert state["optimizer_history"][-1]["num_updates"] == 2


@pytest.mark.slow
def test_a_second_training_into_a_held_save_dir_fails_at_once_naming_it_and_the_holder(demo_dir, vocab_dir, tmp_path):
    save_dir = tmp_path / "ckpt"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from utils.files import lock_folder; "
                               f"lock = lock_folder(sys.argv[1], {LOCK_FILE!r}); print('held', flush=True); time.sleep(120)",
         str(save_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        result = train(demo_dir, vocab_dir, save_dir, 2)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: --save-dir {save_dir} is in use by another process (pid {holder.pid},"), error
    assert sorted(os.listdir(save_dir)) == [LOCK_FILE]
    again = train(demo_dir, vocab_dir, save_dir, 2)  # the holder's end released the lock
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]


@pytest.mark.slow
def test_a_folder_as_training_data_is_one_line_naming_it(demo_dir, vocab_dir, tmp_path):
    command = [sys.executable, "train.py", f"{demo_dir}/caption_train.tsv,{tmp_path}", "--vocab-dir", str(vocab_dir),
               *TRAIN_FLAGS, "--max-update", "1", "--num-workers", "0", "--save-dir", str(tmp_path / "ckpt")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"DataFileError: {tmp_path}: a folder; give a TSV file"
    assert "Traceback" not in result.stderr
