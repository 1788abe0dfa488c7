"""Audio -> tokens: log-mel frames through a strided 1-D convolution stem, with their time."""
import torch
from torch import nn

from models.positions import coordinate_codes

STRIDES = (2, 2, 2)  # 10 ms mel frames -> 80 ms tokens


class AudioEncoder(nn.Module):
    """B x T x M log-mel features (padded) and B valid frame counts -> B x T/8 x dim tokens and their mask.

    Each clip is standardised over its own valid frames first, so loudness stays
    relative within the clip (a faint background and a loud burst remain apart)
    whatever the recording level. A token's time is its centre as a fraction of
    the clip's valid length: the code time tokens start from.
    """

    def __init__(self, num_mels, dim):
        super().__init__()
        layers, width = [], num_mels
        for stride in STRIDES:
            layers += [nn.Conv1d(width, dim, kernel_size=2 * stride + 1, stride=stride, padding=stride), nn.GELU()]
            width = dim
        self.stem = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)
        self.reduction = 1
        for stride in STRIDES:
            self.reduction *= stride

    def forward(self, features, lengths):
        frames = torch.arange(features.size(1), device=features.device)
        valid = frames[None, :] < lengths[:, None]
        features = standardise(features, valid)
        tokens = self.norm(self.stem(features.transpose(1, 2)).transpose(1, 2))
        token_lengths = (lengths + self.reduction - 1) // self.reduction
        index = torch.arange(tokens.size(1), device=features.device)
        keep = index[None, :] < token_lengths[:, None]
        times = ((index[None, :] + 0.5) / token_lengths[:, None]).clamp(max=1.0)
        codes = coordinate_codes(times.flatten(), tokens.size(-1)).to(tokens).view_as(tokens)
        return tokens + codes, keep


def standardise(features, valid):
    """Zero mean, unit variance over each clip's valid frames; padding set to zero."""
    weight = valid[:, :, None].to(features)
    count = weight.sum(dim=(1, 2), keepdim=True).clamp(min=1) * features.size(2)
    mean = (features * weight).sum(dim=(1, 2), keepdim=True) / count
    var = (((features - mean) * weight) ** 2).sum(dim=(1, 2), keepdim=True) / count
    return (features - mean) / (var + 1e-5).sqrt() * weight
