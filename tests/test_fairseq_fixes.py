"""Each patch of utils/fairseq_fixes.py, called the way fairseq calls it; each test fails without the patch.
Covered end to end elsewhere: load_checkpoint_to_cpu (test_checkpoint_trust.py), the identity check on
restore (test_checkpoint_identity.py), the progress lines (test_console_output.py)."""
import argparse
import contextlib
import io
import os
import resource
import signal

import fairseq.trainer
import numpy as np
import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.data import data_utils
from fairseq.dataclass.configs import EMAConfig

from utils import fairseq_fixes
from utils.checkpoint import CheckpointWriteError

LIMIT = 64 << 10  # bytes a file may grow to while a test's disk is "full"


@pytest.fixture(autouse=True)
def patched():
    fairseq_fixes.apply()


@contextlib.contextmanager
def file_size_limit(limit):
    """Writes beyond ``limit`` bytes fail with EFBIG (instead of SIGXFSZ killing the process), as on a full disk."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    saved = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, saved[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, saved)
        signal.signal(signal.SIGXFSZ, handler)


def checkpoint_file(path, values):
    torch.save({"model": {"w": torch.arange(values, dtype=torch.float32)}}, path)
    return path.read_bytes()


def test_torch_load_allows_the_namespace_of_older_checkpoints():
    buffer = io.BytesIO()
    torch.save({"args": argparse.Namespace(task="caption")}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["args"].task == "caption"


def test_a_failed_checkpoint_write_stops_at_once_and_leaves_the_old_file(tmp_path):
    path = tmp_path / "checkpoint_last.pt"
    old = checkpoint_file(path, 10)
    with file_size_limit(LIMIT), pytest.raises(CheckpointWriteError, match="Nothing was replaced"):
        checkpoint_utils.torch_persistent_save({"model": {"w": torch.zeros(LIMIT)}}, str(path))
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == [path.name]  # no .tmp or .partial left behind


def test_copying_checkpoint_last_replaces_it_only_once_whole(tmp_path):
    best, last = tmp_path / "checkpoint_best.pt", tmp_path / "checkpoint_last.pt"
    checkpoint_file(best, LIMIT)
    old = checkpoint_file(last, 10)
    with file_size_limit(LIMIT), pytest.raises(CheckpointWriteError):
        checkpoint_utils.PathManager.copy(str(best), str(last), overwrite=True)
    assert last.read_bytes() == old
    assert checkpoint_utils.PathManager.copy(str(best), str(last), overwrite=True)
    assert last.read_bytes() == best.read_bytes()
    assert sorted(os.listdir(tmp_path)) == [best.name, last.name]


def test_ema_copies_integer_buffers_and_decays_the_rest():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    ema = fairseq.trainer.build_ema(model, EMAConfig(ema_decay=0.5), torch.device("cpu"))
    before = model[0].weight.detach().clone()
    with torch.no_grad():
        model(torch.randn(4, 3))
        model[0].weight.add_(1.0)
    ema.step(model)
    averaged = ema.get_model()
    assert averaged[1].num_batches_tracked.item() == 1
    assert torch.allclose(averaged[0].weight, before + 0.5)


@pytest.mark.parametrize("rows, max_sentences, sizes",
                         [(4, 4, [4]), (3, 8, [3]), (20, 16, [16, 4]), (101, 32, [32, 32, 32, 5])])
def test_batching_keeps_the_rows_past_the_last_multiple_of_eight(rows, max_sentences, sizes):
    indices = np.arange(rows)[::-1].copy()
    batches = data_utils.batch_by_size(indices, lambda i: 10, num_tokens_vec=np.full(rows, 10),
                                       max_sentences=max_sentences, required_batch_size_multiple=8)
    assert [len(b) for b in batches] == sizes
    assert np.array_equal(np.concatenate(batches), indices)  # every row once, in the order given

