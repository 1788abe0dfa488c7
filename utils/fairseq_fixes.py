"""Fixes for fairseq 0.12 where it breaks on current PyTorch; applied when the user dir loads."""
import fairseq.trainer
from fairseq.models.ema import EMA


def build_ema_copying_integer_buffers(model, cfg, device):
    """fairseq's EMA multiplies every buffer by the decay, which PyTorch 2 refuses for integer
    buffers (BatchNorm's num_batches_tracked): those are copied instead."""
    integer = {key for key, value in model.state_dict().items() if not value.is_floating_point()}
    return EMA(model, cfg, device, skip_keys=integer)


def apply():
    fairseq.trainer.build_ema = build_ema_copying_integer_buffers
