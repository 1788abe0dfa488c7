"""What the entry points print: no debug lines or third-party notices unless -v asks for them
(utils/logs.py), and training's progress line from the first update on (utils/progress.py)."""
import logging
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import model_flags
from helpers import build_trainer
from evaluation.metrics import ptb_tokenize
from utils.progress import TrainingProgress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = ("DEBUG", "tensorboardX")
# "train: 51/100 updates [00:10<01:38,  0.50 updates/s]"
PROGRESS = re.compile(r"(?P<what>train|epoch \d+): (?P<done>\d+)/(?P<total>\d+) updates \[(?P<elapsed>[\d:]+)<(?P<left>[\d:]+), ")


def run(*args):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("script", ["evaluate.py", "train.py", "preprocess/build_vocab.py"])
def test_help_prints_the_usage_and_nothing_else(script):
    result = run(script, "--help")
    assert result.stdout.startswith("usage:")
    assert result.stderr == ""
    assert not [word for word in NOISE if word in result.stdout]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["evaluate.py", "train.py"])
def test_verbose_brings_back_debug_lines_and_notices(script):
    result = run(script, "--help", "-v")
    assert all(word in result.stdout + result.stderr for word in NOISE)


def seconds(clock):
    return sum(int(part) * 60 ** power for power, part in enumerate(reversed(clock.split(":"))))


def progress_lines(records):
    return [PROGRESS.match(record.getMessage()) for record in records]


def test_training_progress_logs_the_first_update_at_once_then_waits_for_the_interval(caplog):
    progress = TrainingProgress(interval=3600, log=logging.getLogger("test_progress"))
    started = time.monotonic() - 100
    with caplog.at_level(logging.INFO, logger="test_progress"):
        progress.updated("train", 51, 100, started)  # a resumed run: 50 updates were done before
        progress.updated("train", 52, 100, started)
        progress.updated("epoch 2", 1, 8, started)
    lines = progress_lines(caplog.records)
    assert [(line["what"], line["done"], line["total"]) for line in lines] == [("train", "51", "100"),
                                                                               ("epoch 2", "1", "8")]
    # the rate counts only this run's update: 49 more take 49 times the elapsed time
    elapsed, left = seconds(lines[0]["elapsed"]), seconds(lines[0]["left"])
    assert elapsed > 0 and left == pytest.approx(49 * elapsed, rel=0.02)
    assert lines[0].string.endswith(" 0.01 updates/s]")  # a rate below one still reads as updates per second


def test_training_progress_logs_again_once_the_interval_has_passed(caplog):
    progress = TrainingProgress(interval=0, log=logging.getLogger("test_progress"))
    with caplog.at_level(logging.INFO, logger="test_progress"):
        for done in (1, 2, 3):
            progress.updated("train", done, 3, time.monotonic())
    assert [line["done"] for line in progress_lines(caplog.records)] == ["1", "2", "3"]


@pytest.mark.slow
def test_training_without_max_update_shows_progress_through_the_epoch_from_the_first_update(demo_dir, vocab_dir,
                                                                                            tmp_path):
    result = run("train.py", f"{demo_dir}/refcoco_train.tsv", "--task", "refcoco", "--vocab-dir", str(vocab_dir),
                 *model_flags(), "--patch-image-size", "64", "--criterion", "constrained_label_smoothed_cross_entropy",
                 "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "16", "--max-epoch", "1",
                 "--disable-validation", "--no-save", "--num-workers", "0", "--log-format", "simple",
                 "--log-interval", "100", "--save-dir", str(tmp_path / "ckpt"))
    output = result.stdout + result.stderr
    assert not [word for word in (*NOISE, "FutureWarning") if word in output]
    lines = [match for match in map(PROGRESS.search, output.splitlines()) if match]
    updates = int(re.search(r"\| num_updates (\d+)", output)[1])  # fairseq's end-of-epoch line
    assert lines and (lines[0]["what"], lines[0]["done"], lines[0]["total"]) == ("epoch 1", "1", str(updates))
    assert "train_inner" not in output  # fairseq itself said nothing before its 100th update


def test_validation_logs_its_progress_from_the_first_batch(demo_dir, vocab_dir, tmp_path, caplog):
    trainer = build_trainer([f"{demo_dir}/refcoco_train.tsv,{demo_dir}/refcoco_valid.tsv", "--task", "refcoco",
                             "--vocab-dir", str(vocab_dir), *model_flags(), "--patch-image-size", "64",
                             "--criterion", "constrained_label_smoothed_cross_entropy", "--optimizer", "adam",
                             "--lr", "1e-3", "--batch-size", "4", "--save-dir", str(tmp_path)])
    trainer.task.load_dataset("valid")
    batches = trainer.get_valid_iterator("valid")
    total = len(batches)
    with caplog.at_level(logging.INFO, logger="utils.progress"):
        for batch in batches.next_epoch_itr(shuffle=False):
            trainer.valid_step(batch)
    lines = [match for match in (re.match(r"valid on 'valid': (\d+)/(\d+) batches \[", record.getMessage())
                                 for record in caplog.records) if match]
    assert total > 1 and lines and lines[0].groups() == ("1", str(total))  # later lines only every few seconds


def test_the_java_tokenizers_stderr_becomes_debug_lines(capfd, caplog):
    with caplog.at_level(logging.DEBUG, logger="evaluation.metrics"):
        tokens = ptb_tokenize({"a": ["A red Square."]})
    assert tokens == {"a": ["a red square"]}
    assert capfd.readouterr().err == ""
    assert any(record.getMessage().startswith("PTBTokenizer tokenized") for record in caplog.records)
