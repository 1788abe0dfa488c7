"""Shared fixtures: a small demo world, its vocabulary, and tasks built as fairseq builds them."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
sys.path.insert(0, ROOT)

import criterions  # noqa: E402,F401  (registers)
import models  # noqa: E402,F401
import tasks  # noqa: E402,F401
from preprocess import build_vocab, make_demo_data  # noqa: E402


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    make_demo_data.main(["--out", str(out), "--seed", "3", "--train-images", "48", "--valid-images", "12",
                         "--image-size", "64"])
    return out


@pytest.fixture(scope="session")
def vocab_dir(demo_dir):
    out = demo_dir / "vocab"
    build_vocab.main(["--input", f"{demo_dir}/caption_train.tsv:2", "--input", f"{demo_dir}/refcoco_train.tsv:2",
                      "--out-dir", str(out), "--vocab-size", "400"])
    return out
