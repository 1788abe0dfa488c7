"""Changes to fairseq 0.12, applied when the user dir loads: fixes where it breaks on current PyTorch,
and the progress lines of training and validation."""
import functools
import math
import time

import fairseq.trainer
from fairseq.models.ema import EMA

from utils.progress import TRAINING_INTERVAL_SECONDS, Progress, TrainingProgress


def build_ema_copying_integer_buffers(model, cfg, device):
    """fairseq's EMA multiplies every buffer by the decay, which PyTorch 2 refuses for integer
    buffers (BatchNorm's num_batches_tracked): those are copied instead."""
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
    """fairseq logs only every --log-interval updates: the first hundred show nothing."""
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


def apply():
    fairseq.trainer.build_ema = build_ema_copying_integer_buffers
    trainer = fairseq.trainer.Trainer
    trainer.get_train_iterator = remembering_train_iterator(trainer.get_train_iterator)
    trainer.train_step = reporting_progress(trainer.train_step)
    trainer.get_valid_iterator = remembering_valid_batches(trainer.get_valid_iterator)
    trainer.valid_step = reporting_validation_progress(trainer.valid_step)
