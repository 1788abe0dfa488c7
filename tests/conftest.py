"""Shared fixtures: a small demo world, its vocabulary, and tasks built as fairseq builds them."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
sys.path.insert(0, ROOT)

import criterions  # noqa: E402,F401  (registers)
import models  # noqa: E402,F401
import tasks  # noqa: E402,F401
from helpers import tiny_model_args  # noqa: E402
from preprocess import build_vocab, make_demo_data  # noqa: E402


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    make_demo_data.main(["--out", str(out), "--seed", "3", "--train-images", "48", "--valid-images", "12",
                         "--image-size", "64", "--train-videos", "24", "--valid-videos", "6", "--train-audio", "24",
                         "--valid-audio", "6", "--train-ie", "40", "--valid-ie", "30"])
    return out


@pytest.fixture(scope="session")
def vocab_dir(demo_dir):
    out = demo_dir / "vocab"
    inputs = ["caption_train.tsv:2", "refcoco_train.tsv:2", "video_caption_train.tsv:2", "audio_caption_train.tsv:2",
              "video_qa_train.tsv:2", "temporal_train.tsv:4", "ner_train.tsv:4", "re_train.tsv:4", "ee_train.tsv:4"]
    flags = [arg for name in inputs for arg in ("--input", f"{demo_dir}/{name}")]
    build_vocab.main(flags + ["--out-dir", str(out), "--vocab-size", "400"])
    return out


def model_flags():
    return [f"--{key.replace('_', '-')}={value}" for key, value in tiny_model_args().items()]


@pytest.fixture(scope="session")
def checkpoints(demo_dir, vocab_dir, tmp_path_factory):
    """Three different checkpoints of one run, after 2, 4 and 6 updates, with EMA weights; the vocabulary
    given by a relative path, as the run scripts give it."""
    save_dir = tmp_path_factory.mktemp("averaging")
    result = subprocess.run(
        [sys.executable, "train.py",
         f"{demo_dir}/refcoco_train.tsv,{demo_dir}/refcoco_valid.tsv", "--task", "refcoco", "--vocab-dir",
         os.path.relpath(vocab_dir, ROOT), *model_flags(), "--patch-image-size", "64",
         "--criterion", "constrained_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-2",
         "--batch-size", "8", "--max-update", "6", "--save-interval-updates", "2", "--keep-interval-updates", "3",
         "--no-epoch-checkpoints", "--disable-validation", "--store-ema", "--ema-decay", "0.9",
         "--num-workers", "0", "--seed", "1", "--log-format", "simple", "--save-dir", str(save_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return [save_dir / f"checkpoint_1_{step}.pt" for step in (2, 4, 6)]
