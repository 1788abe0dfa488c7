"""Training curves: fairseq's --tensorboard-logdir writes the losses, and preprocess/plot_logs.py reads
the simple and json logs of a real tiny run into the same numbers and PNG plots."""
import os
import subprocess
import sys

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import model_flags
from preprocess.plot_logs import parse_line, parse_log, write_plots

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPDATES, VALIDATE_EVERY = 4, 2


def train(demo_dir, vocab_dir, out, log_format, *extra):
    """A tiny refcoco run validating with the task metric; its stdout and stderr as one text."""
    result = subprocess.run(
        [sys.executable, "train.py", f"{demo_dir}/refcoco_train.tsv,{demo_dir}/refcoco_valid.tsv", "--task", "refcoco",
         "--vocab-dir", str(vocab_dir), *model_flags(), "--patch-image-size", "64",
         "--criterion", "constrained_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-2",
         "--batch-size", "8", "--max-update", str(UPDATES), "--validate-interval-updates", str(VALIDATE_EVERY),
         "--eval-metrics", "--eval-args", '{"beam": 2, "max_len_b": 8}', "--no-save", "--num-workers", "0",
         "--seed", "1", "--log-interval", "1", "--log-format", log_format, "--save-dir", str(out / "ckpt"), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def simple_run(demo_dir, vocab_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("simple")
    train(demo_dir, vocab_dir, out, "simple", "--tensorboard-logdir", str(out / "tb"), "--log-file", str(out / "log"))
    return out


@pytest.fixture(scope="module")
def json_run(demo_dir, vocab_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("json")
    (out / "stdout.log").write_text(train(demo_dir, vocab_dir, out, "json"))
    return out


def by_kind(entries, kind):
    return [e for e in entries if e.kind == kind]


def scalars(folder, tag):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


@pytest.mark.slow
def test_tensorboard_events_hold_the_logged_training_and_validation_scalars(simple_run):
    entries = parse_log(open(simple_run / "log", encoding="utf-8"))
    inner, valid = by_kind(entries, "train_inner"), by_kind(entries, "valid")
    assert [e.update for e in inner] == list(range(1, UPDATES + 1))
    assert [e.update for e in valid] == list(range(VALIDATE_EVERY, UPDATES + 1, VALIDATE_EVERY))
    logged = scalars(simple_run / "tb" / "train_inner", "loss")
    assert [step for step, _ in logged] == [e.update for e in inner]
    # the log rounds to 3 decimals; TensorBoard keeps the float
    assert [value for _, value in logged] == pytest.approx([e.values["loss"] for e in inner], abs=5e-4)
    for tag in ("loss", "acc@0.5", "mean_iou"):
        logged = scalars(simple_run / "tb" / "valid", tag)
        assert [step for step, _ in logged] == [e.update for e in valid]
        assert [value for _, value in logged] == pytest.approx([e.values[tag] for e in valid], abs=5e-4)


@pytest.mark.slow
def test_json_and_simple_logs_of_one_seeded_run_parse_to_the_same_values(simple_run, json_run):
    simple = parse_log(open(simple_run / "log", encoding="utf-8"))
    from_json = parse_log(open(json_run / "stdout.log", encoding="utf-8"))  # with fairseq's line prefixes
    for kind in ("train_inner", "valid", "train"):
        a, b = by_kind(simple, kind), by_kind(from_json, kind)
        assert [(e.subset, e.update) for e in a] == [(e.subset, e.update) for e in b] and a, kind
        for x, y in zip(a, b):
            for name in ("loss", "nll_loss", "acc@0.5", "mean_iou"):
                assert (name in x.values) == (name in y.values), (kind, name)
                if name in x.values:
                    assert x.values[name] == pytest.approx(y.values[name], abs=1e-3), (kind, name)


@pytest.mark.slow
def test_plots_are_written_for_the_loss_and_every_validation_metric(simple_run, tmp_path):
    paths = write_plots(parse_log(open(simple_run / "log", encoding="utf-8")), tmp_path)
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["loss.png", "valid_acc_0.5.png", "valid_mean_iou.png", "valid_nll_loss.png", "valid_ppl.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (600, 350)


def test_log_lines_of_each_format_parse_and_others_are_ignored():
    inner = parse_line("2024-01-02 03:04:05 | INFO | train_inner | epoch 001:      3 / 748 loss=7.098, "
                       "ppl=137.03, num_updates=3, lr=0.01")
    assert (inner.kind, inner.update, inner.values["loss"], inner.values["lr"]) == ("train_inner", 3, 7.098, 0.01)
    valid = parse_line("epoch 002 | valid on 'valid_b' subset | loss 6.5 | caption/cider 0.25 | num_updates 9 "
                       "| best_loss 6.5")
    assert (valid.kind, valid.subset, valid.values["caption/cider"]) == ("valid", "valid_b", 0.25)
    epoch = parse_line('{"epoch": 1, "train_loss": "7.2", "train_num_updates": "4"}')
    assert (epoch.kind, epoch.values) == ("train", {"loss": 7.2, "num_updates": 4.0})
    assert parse_line('{"epoch": 1, "valid_loss": "6.9", "valid_num_updates": "2"}').subset == "valid"
    for other in ("begin validation on \"valid\" subset", "{'_name': None}", "epoch 001:  10%|#  | 3/30", ""):
        assert parse_line(other) is None
    with pytest.raises(ValueError, match="no training or validation"):
        write_plots([], "unused")
