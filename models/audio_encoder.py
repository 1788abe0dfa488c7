"""Audio -> tokens: log-mel frames through a strided 1-D convolution stem, with their time."""
import torch
import torch.nn.functional as F
from torch import nn

from models.positions import coordinate_codes

STRIDES = (2, 2, 2)  # 10 ms mel frames -> 80 ms tokens


class AudioEncoder(nn.Module):
    """B x T x M log-mel features (padded) and B valid frame counts -> B x T/8 x dim tokens, their mask and
    the time codes the tokens include.

    Each clip is standardised over its own valid frames first, so loudness stays
    relative within the clip (a faint background and a loud burst remain apart)
    whatever the recording level. Padding is zeroed after every convolution, so a
    clip's tokens do not depend on how far its batch pads it. A token's time is its
    centre as a fraction of the clip's valid length: the code time tokens start from.
    """

    def __init__(self, num_mels, dim):
        super().__init__()
        widths = [num_mels] + [dim] * len(STRIDES)
        self.convs = nn.ModuleList(
            nn.Conv1d(widths[i], widths[i + 1], kernel_size=2 * stride + 1, stride=stride, padding=stride)
            for i, stride in enumerate(STRIDES))
        self.norm = nn.LayerNorm(dim)

    def forward(self, features, lengths):
        x = standardise(features, valid_mask(lengths, features.size(1))).transpose(1, 2)
        for conv, stride in zip(self.convs, STRIDES):
            lengths = (lengths + stride - 1) // stride
            x = F.gelu(conv(x))
            x = x * valid_mask(lengths, x.size(2))[:, None, :]
        tokens = self.norm(x.transpose(1, 2))
        keep = valid_mask(lengths, tokens.size(1))
        times = ((torch.arange(tokens.size(1), device=x.device)[None, :] + 0.5) / lengths[:, None]).clamp(max=1.0)
        codes = coordinate_codes(times.flatten(), tokens.size(-1)).to(tokens).view_as(tokens)
        return tokens + codes, keep, codes


def valid_mask(lengths, size):
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def standardise(features, valid):
    """Zero mean, unit variance over each clip's valid frames; padding set to zero."""
    weight = valid[:, :, None].to(features)
    count = weight.sum(dim=(1, 2), keepdim=True).clamp(min=1) * features.size(2)
    mean = (features * weight).sum(dim=(1, 2), keepdim=True) / count
    var = (((features - mean) * weight) ** 2).sum(dim=(1, 2), keepdim=True) / count
    return (features - mean) / (var + 1e-5).sqrt() * weight
