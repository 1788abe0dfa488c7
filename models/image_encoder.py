"""Images -> tokens: a timm backbone's feature map, projected, with 2-D positions."""
import functools
import logging

import timm
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from models.positions import sinusoid

logger = logging.getLogger(__name__)
# Pixels become (x / 255 - mean) / std, as in UnIVAL and OFA: [-1, 1].
PIXEL_MEAN, PIXEL_STD = 0.5, 0.5


def model_pixels(pixels):
    """uint8 pixels (any leading dimensions: a batch, frames) -> the float model input, in one pass on
    their device, so that images travel from the loader as uint8 (a quarter of the bytes) and a GPU does
    the conversion. Float pixels are taken as the model input already."""
    if pixels.dtype != torch.uint8:
        return pixels
    return pixels.float().mul_(1.0 / (255.0 * PIXEL_STD)).add_(-PIXEL_MEAN / PIXEL_STD)


class FrozenBatchNorm2d(torchvision.ops.FrozenBatchNorm2d):
    """BatchNorm with its statistics and affine fixed, as buffers (torchvision's: BatchNorm2d weights load
    into it), computed by ``batch_norm`` in inference mode: one kernel that keeps the input's dtype, where
    torchvision's ``x * scale + bias`` turns bf16 activations under autocast into fp32 ones."""

    def __init__(self, num_features, eps=1e-5, device=None, dtype=None):  # timm passes device and dtype
        super().__init__(num_features, eps)
        self.to(device=device, dtype=dtype)

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


# The backbone's normalisation layers. GroupNorm keeps no running statistics: a backbone that images and
# video frames share (different sizes, different content) normalises each batch the same way in training
# and evaluation, where BatchNorm's running averages would mix the two media. Frozen BatchNorm is for
# fine-tuning a trained backbone (OFA's --freeze-resnet): no statistics to compute or update, and its backward
# is one multiplication.
BACKBONE_NORMS = {"batch": None, "group": functools.partial(timm.layers.GroupNorm, num_groups=8),
                  "frozen": FrozenBatchNorm2d}


def build_backbone(name, out_index, weights_path=None, norm="batch"):
    """A timm feature extractor with ``norm`` layers (a key of ``BACKBONE_NORMS``); weights come only from
    a local file, never from a hub."""
    if norm not in BACKBONE_NORMS:
        raise ValueError(f"unknown backbone norm {norm!r} (supported: {', '.join(BACKBONE_NORMS)})")
    norm_layer = {} if BACKBONE_NORMS[norm] is None else {"norm_layer": BACKBONE_NORMS[norm]}
    backbone = timm.create_model(name, pretrained=False, features_only=True, out_indices=(out_index,), **norm_layer)
    if weights_path:
        load_backbone_weights(backbone, weights_path)
    return backbone


def load_backbone_weights(backbone, path):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
    used = set(state) & set(backbone.state_dict())
    if not used:
        raise ValueError(f"{path}: no tensor matches the backbone's parameter names")
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    logger.info("backbone weights from %s: %d tensors loaded, %d missing, %d unused",
                path, len(used), len(missing), len(unexpected))


class ImageEncoder(nn.Module):
    """B x 3 x H x W pixels -> B x (h*w) x dim tokens with learned row/column positions.

    Position tables are indexed by grid cell, up to ``max_grid`` cells a side, and
    start as sinusoids of the cell centre for the configured image size, rows in
    the first half of the channels and columns in the second. Kept apart, x and y
    can each be read out linearly (a sum of two codes in the same channels mixes
    them), which is what emitting a box's bin tokens needs.
    """

    def __init__(self, dim, backbone, out_index, image_size, max_grid=64, weights_path=None, norm="batch"):
        super().__init__()
        # channels-last (NHWC) activations and weights: the layout CPU (oneDNN) and GPU (cuDNN) convolutions
        # run on, which NCHW tensors are converted to and from at every layer
        self.backbone = build_backbone(backbone, out_index, weights_path, norm).to(memory_format=torch.channels_last)
        info = self.backbone.feature_info
        self.project = nn.Sequential(nn.Linear(info.channels()[-1], dim), nn.LayerNorm(dim))
        self.max_grid = max_grid
        grid = max(1, image_size // info.reduction()[-1])
        centres = ((torch.arange(max_grid) + 0.5) / grid).clamp(max=1.0)
        half = dim // 2
        rows, cols = torch.zeros(max_grid, dim), torch.zeros(max_grid, dim)
        rows[:, :half] = sinusoid(centres, half)
        cols[:, half:] = sinusoid(centres, dim - half)
        self.row = nn.Embedding.from_pretrained(rows, freeze=False)
        self.col = nn.Embedding.from_pretrained(cols, freeze=False)

    def forward(self, pixels):
        """B x 3 x H x W pixels (uint8, or floats normalised by ``model_pixels``) -> the tokens, a
        B x (h*w) mask of the ones to attend (None: all of them) and the 1 x (h*w) x dim positions
        the tokens include."""
        tokens, positions = self.grid_tokens(self.features(pixels))
        return tokens, None, positions[None]

    def features(self, pixels):
        """N x 3 x H x W pixels -> the backbone's N x C x h x w feature map (channels-last in memory)."""
        return self.backbone(model_pixels(pixels).contiguous(memory_format=torch.channels_last))[-1]

    def grid_tokens(self, features):
        """B x C x h x w backbone features -> B x (h*w) x dim tokens with their grid positions, and
        those (h*w) x dim positions."""
        h, w = features.shape[-2:]
        if h > self.max_grid or w > self.max_grid:
            raise ValueError(f"image feature grid {h}x{w} exceeds --max-image-grid {self.max_grid}")
        tokens = self.project(features.permute(0, 2, 3, 1).flatten(1, 2))  # a view of channels-last features
        rows = torch.arange(h, device=features.device)
        cols = torch.arange(w, device=features.device)
        positions = (self.row(rows)[:, None, :] + self.col(cols)[None, :, :]).flatten(0, 1)
        return tokens + positions, positions
