"""Sinusoidal codes of normalised coordinates, shared by positions and location tokens."""
import math

import torch


def sinusoid(values, dim):
    """N values in [0, 1] -> N x dim sin/cos features with geometric frequencies.

    The lowest frequency spans the unit interval once, so nearby values get
    similar codes and distant ones differ. Features have unit amplitude, the
    scale of LayerNorm outputs.
    """
    half = dim // 2
    freqs = math.pi * torch.exp(torch.arange(half, dtype=torch.float32) * (math.log(256.0) / max(half - 1, 1)))
    angles = values.float()[:, None] * freqs[None, :]
    codes = torch.cat([angles.sin(), angles.cos()], dim=1)
    if dim % 2:
        codes = torch.cat([codes, torch.zeros(len(values), 1)], dim=1)
    return codes


def coordinate_codes(values, dim):
    """N values in [0, 1] -> N x dim: each value's sinusoid in both halves of the channels.

    Image tokens keep rows in the first half and columns in the second; a value
    that is neither (a bin of either axis, an instant) fills both.
    """
    half = dim // 2
    return torch.cat([sinusoid(values, half), sinusoid(values, dim - half)], dim=1)
