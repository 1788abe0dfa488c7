"""Residual backbones with OFA's and UnIVAL's parameter names, so their checkpoints load as they are.

- ``OFAResNet``: the first three stages of a torchvision-v1.5 ResNet (stride 16, 1024 channels), or with
  ``stages=4`` UnIVAL's ``timm_resnet`` (stride 32, 2048 channels, an unused ImageNet classifier ``fc``).
- ``ResNeXt3D``: UnIVAL's video backbone, the Kinetics 3-D ResNeXt (cardinality 32) on B x C x T x H x W
  clips, three stages (1024 channels) or four (2048).

Both are one stem (7-wide convolution, BatchNorm, ReLU, 3-wide stride-2 max-pool) and stages of
bottleneck blocks whose 3-wide convolution carries the stride. Residual branches may be dropped per
sample in training (stochastic depth, rising linearly within each stage, OFA's ResNet only).
"""
import torch
from torch import nn

from models.image_encoder import FrozenBatchNorm2d

STAGE_BLOCKS = {  # OFA builds every type from bottleneck blocks, resnet18 and resnet34 included
    "resnet18": (2, 2, 2),
    "resnet34": (3, 4, 6),
    "resnet50": (3, 4, 6),
    "resnet101": (3, 4, 23),
    "resnet152": (3, 8, 36),
}
FOURTH_STAGE_BLOCKS = 3  # resnet50/101/152 and the ResNeXt3D depths alike
IMAGENET_CLASSES = 1000


def drop_path(x, rate, training, sample_dim=0):
    """Zero whole samples of a residual branch with probability ``rate``, scaling the rest up."""
    if rate == 0.0 or not training:
        return x
    shape = [1] * x.dim()
    shape[sample_dim] = x.size(sample_dim)
    keep = torch.rand(shape, dtype=x.dtype, device=x.device).add_(1 - rate).floor_()
    return x.div(1 - rate) * keep


class Bottleneck(nn.Module):
    """1-wide, 3-wide (strided, grouped), 1-wide convolutions, each with BatchNorm, plus a shortcut."""

    def __init__(self, in_channels, width, out_channels, stride, norm, conv, groups=1, drop_path_rate=0.0):
        super().__init__()
        self.conv1 = conv(in_channels, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = conv(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = norm(width)
        self.conv3 = conv(width, out_channels, 1, bias=False)
        self.bn3 = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(conv(in_channels, out_channels, 1, stride=stride, bias=False),
                                            norm(out_channels))
        self.drop_path_rate = drop_path_rate

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(identity + drop_path(out, self.drop_path_rate, self.training))


class ResidualBackbone(nn.Module):
    """Stem and bottleneck stages; stage ``i`` has ``blocks[i]`` blocks of width ``widths[i]`` and
    ``expansion * widths[i]`` output channels, the first block of every stage but the first striding by 2."""

    def __init__(self, blocks, widths, expansion, conv, norm, stem_stride, groups=1, drop_path_rate=0.0):
        super().__init__()
        self.conv1 = conv(3, 64, 7, stride=stem_stride, padding=3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (nn.MaxPool2d if conv is nn.Conv2d else nn.MaxPool3d)(3, stride=2, padding=1)
        channels = 64
        self.stages = []
        for index, (count, width) in enumerate(zip(blocks, widths)):
            rates = torch.linspace(0, drop_path_rate, count).tolist()
            rates[0] = 0.0  # OFA never drops a stage's first block
            stage = []
            for block in range(count):
                stride = 2 if block == 0 and index > 0 else 1
                stage.append(Bottleneck(channels, width, width * expansion, stride, norm, conv, groups, rates[block]))
                channels = width * expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
            self.stages.append(f"layer{index + 1}")
        self.out_channels = channels

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stages:
            x = getattr(self, name)(x)
        return x


class OFAResNet(ResidualBackbone):
    """``frozen_norm``: BatchNorm with fixed statistics and affine (OFA's and UnIVAL's --freeze-resnet)."""

    def __init__(self, resnet_type, drop_path_rate=0.0, batch_norm_eps=1e-5, stages=3, frozen_norm=False):
        blocks = STAGE_BLOCKS[resnet_type] + (FOURTH_STAGE_BLOCKS,) * (stages - 3)
        def norm(channels):
            return (FrozenBatchNorm2d if frozen_norm else nn.BatchNorm2d)(channels, eps=batch_norm_eps)
        super().__init__(blocks, (64, 128, 256, 512)[:stages], 4, nn.Conv2d, norm, 2, drop_path_rate=drop_path_rate)
        if stages == 4:  # timm's classifier: in UnIVAL's checkpoints, never used
            self.fc = nn.Linear(self.out_channels, IMAGENET_CLASSES)


class ResNeXt3D(ResidualBackbone):
    def __init__(self, blocks, cardinality=32):
        super().__init__(blocks, (128, 256, 512, 1024)[:len(blocks)], 2, nn.Conv3d, nn.BatchNorm3d, (1, 2, 2),
                         groups=cardinality)
