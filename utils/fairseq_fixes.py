"""Every change this repository makes to fairseq 0.12 and torch, in one place: ``apply()``, called once
when the user dir loads (``__init__.py``; train.py, evaluate.py and fairseq-train's spawned ranks all
import it). Each patch names the upstream behaviour it replaces; what it routes to lives with its
concern (checkpoint reading and writing in ``utils/checkpoint.py``, training and validation progress lines in
``utils/progress.py``).
"""
import functools
import math
import os
import time

import fairseq.trainer
import numpy as np
import torch
from fairseq import checkpoint_utils
from fairseq.data import data_utils
from fairseq.distributed import LegacyDistributedDataParallel
from fairseq.file_io import PathManager
from fairseq.models.ema import EMA

from utils.checkpoint import SAFE_GLOBALS, copy_checkpoint, load_checkpoint_to_cpu, restoring_into, write_checkpoint
from utils.progress import TRAINING_INTERVAL_SECONDS, Progress, TrainingProgress

_applied = []


def apply():
    """Install every patch below; the wrappers once per process however often the user dir is imported."""
    # torch.load(weights_only=True) refuses argparse.Namespace, in which fairseq, OFA and UnIVAL checkpoints
    # keep their options (adding to torch's allowlist again is harmless)
    torch.serialization.add_safe_globals(SAFE_GLOBALS)
    if _applied:
        return
    _applied.append(True)
    # fairseq's load_checkpoint_to_cpu unpickles with torch.load's default, which runs pickled code where
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set, and never checks vocabulary or bins
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu
    trainer = fairseq.trainer.Trainer
    trainer.load_checkpoint = restoring_into_its_task(trainer.load_checkpoint)
    # fairseq writes <name>.tmp without fsync, retries a failed write three times 2.5 s apart, leaves the
    # .tmp behind, and makes checkpoint_last.pt with PathManager.copy, which writes in place: a kill
    # during that copy truncates the very file a restart resumes from
    checkpoint_utils.torch_persistent_save = atomic_persistent_save(checkpoint_utils.torch_persistent_save)
    checkpoint_utils.PathManager = AtomicCopyPathManager
    # fairseq's batching leaves out the rows after the last full multiple of --required-batch-size-multiple
    data_utils.batch_by_size = keeping_every_row(data_utils.batch_by_size)
    # fairseq's EMA multiplies every buffer by the decay, which PyTorch 2 refuses for integer buffers
    fairseq.trainer.build_ema = build_ema_copying_integer_buffers
    # fairseq logs only every --log-interval updates: the first hundred show nothing
    trainer.get_train_iterator = remembering_train_iterator(trainer.get_train_iterator)
    trainer.train_step = reporting_progress(trainer.train_step)
    # and says nothing between 'begin validation' and its result
    trainer.get_valid_iterator = remembering_valid_batches(trainer.get_valid_iterator)
    trainer.valid_step = reporting_validation_progress(trainer.valid_step)
    # fairseq's legacy DDP (CPU ranks) flattens each gradient with .view(-1), which a channels-last
    # convolution's gradient (models/image_encoder.py) refuses
    legacy = LegacyDistributedDataParallel
    legacy.all_reduce_grads = with_contiguous_grads(legacy.all_reduce_grads)


def with_contiguous_grads(all_reduce_grads):
    @functools.wraps(all_reduce_grads)
    def wrapper(self):
        for param in self.module.parameters():
            if param.grad is not None and not param.grad.is_contiguous():
                param.grad = param.grad.contiguous()
        return all_reduce_grads(self)
    return wrapper


def keeping_every_row(batch_by_size):
    """fairseq's ``batch_by_size`` (its Cython ``batch_by_size_vec``) makes every batch a multiple of
    ``required_batch_size_multiple`` (8 by default) and silently leaves out the rows after the last
    multiple: 4 of 100 rows at --batch-size 32, and every row of a set smaller than 8, which then fails
    with "The dataset is empty". The rows it left out become further batches, in their order."""
    @functools.wraps(batch_by_size)
    def batches(indices, num_tokens_fn, num_tokens_vec=None, max_tokens=None, max_sentences=None,
                required_batch_size_multiple=1, fixed_shapes=None):
        made = batch_by_size(indices, num_tokens_fn, num_tokens_vec, max_tokens, max_sentences,
                             required_batch_size_multiple, fixed_shapes)
        indices = np.asarray(indices, dtype=np.int64)
        if fixed_shapes is not None or sum(map(len, made)) == len(indices):
            return made
        left = ~np.isin(indices, np.concatenate(made) if made else np.zeros(0, np.int64))
        tokens = None if num_tokens_vec is None else np.asarray(num_tokens_vec)[left]
        return list(made) + list(batch_by_size(indices[left], num_tokens_fn, tokens, max_tokens, max_sentences, 1))
    return batches


def restoring_into_its_task(load_checkpoint):
    """fairseq's trainer never shows a checkpoint's task state to its task: the task is put at hand for
    ``load_checkpoint_to_cpu``'s identity check."""
    @functools.wraps(load_checkpoint)
    def load(trainer, *args, **kwargs):
        with restoring_into(trainer.task):
            return load_checkpoint(trainer, *args, **kwargs)
    return load


def atomic_persistent_save(fairseq_save):
    """Checkpoints written through ``write_checkpoint``: fsynced, renamed from a fixed ``<name>.partial``
    (which a later write of that checkpoint overwrites, and which fairseq's resume and pruning never read),
    and a failed write stops at once with ``CheckpointWriteError``, the files on disk untouched.
    Asynchronous writes (--write-checkpoints-asynchronously, through iopath) are left to fairseq."""
    @functools.wraps(fairseq_save)
    def save(obj, filename, async_write=False):
        if async_write:
            return fairseq_save(obj, filename, async_write=True)
        write_checkpoint(obj, filename)
    return save


class AtomicCopyPathManager(PathManager):
    """fairseq's PathManager, whose ``copy`` (checkpoint_last.pt, checkpoint_best.pt) replaces the
    destination only once the copy is whole."""
    @staticmethod
    def copy(src_path, dst_path, overwrite=False):
        if not overwrite and os.path.exists(dst_path):
            return False
        copy_checkpoint(src_path, dst_path)
        return True


def build_ema_copying_integer_buffers(model, cfg, device):
    """Integer buffers (BatchNorm's num_batches_tracked) are copied into the EMA model, not decayed."""
    integer = {key for key, value in model.state_dict().items() if not value.is_floating_point()}
    return EMA(model, cfg, device, skip_keys=integer)


def remembering_train_iterator(get_train_iterator):
    """The trainer keeps the epoch's iterator that fairseq's loop asks it for, for the position in the epoch."""
    @functools.wraps(get_train_iterator)
    def get(trainer, *args, **kwargs):
        trainer.train_iterator = get_train_iterator(trainer, *args, **kwargs)
        return trainer.train_iterator
    return get


def training_position(trainer):
    """What the progress line counts: (what, updates done, total)."""
    max_update, epoch_itr = trainer.cfg.optimization.max_update, getattr(trainer, "train_iterator", None)
    if max_update or epoch_itr is None:  # the latter: a trainer driven by hand, not by fairseq's loop
        return "train", trainer.get_num_updates(), max_update or None
    update_freq = trainer.cfg.optimization.update_freq
    batches_per_update = update_freq[min(epoch_itr.epoch, len(update_freq)) - 1]
    return (f"epoch {epoch_itr.epoch}", math.ceil(epoch_itr.iterations_in_epoch / batches_per_update),
            math.ceil(len(epoch_itr) / batches_per_update))


def reporting_progress(train_step):
    """A progress line from the first update on (``TrainingProgress``), then every interval."""
    @functools.wraps(train_step)
    def step(trainer, samples, raise_oom=False):
        started = time.monotonic()
        output = train_step(trainer, samples, raise_oom)
        progress = trainer.__dict__.setdefault("training_progress", TrainingProgress())
        progress.updated(*training_position(trainer), started)
        return output
    return step


def remembering_valid_batches(get_valid_iterator):
    """Each validation pass starts a progress line over the batches of the subset's iterator."""
    @functools.wraps(get_valid_iterator)
    def get(trainer, subset, *args, **kwargs):
        iterator = get_valid_iterator(trainer, subset, *args, **kwargs)
        trainer.validation_progress = Progress(f"valid on '{subset}'", len(iterator), "batches",
                                               TRAINING_INTERVAL_SECONDS)
        return iterator
    return get


def reporting_validation_progress(valid_step):
    """fairseq says nothing between 'begin validation' and its result: a line after the first batch, then one
    every few seconds."""
    @functools.wraps(valid_step)
    def step(trainer, sample, raise_oom=False):
        output = valid_step(trainer, sample, raise_oom)
        progress = getattr(trainer, "validation_progress", None)
        if progress is not None:
            progress.update()
            if progress.done == 1:
                progress.report()
        return output
    return step

