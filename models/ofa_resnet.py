"""OFA's image backbone: the first three stages of a torchvision-v1.5 ResNet (stride 16, 1024 channels).

Parameter names follow OFA's, so its checkpoints load as they are. There is no
fourth stage, pooling or classifier; residual branches may be dropped per
sample in training (stochastic depth, rising linearly within each stage).
"""
import torch
from torch import nn

STAGE_BLOCKS = {  # OFA builds every type from bottleneck blocks, resnet18 and resnet34 included
    "resnet18": (2, 2, 2),
    "resnet34": (3, 4, 6),
    "resnet50": (3, 4, 6),
    "resnet101": (3, 4, 23),
    "resnet152": (3, 8, 36),
}


def drop_path(x, rate, training, sample_dim=0):
    """Zero whole samples of a residual branch with probability ``rate``, scaling the rest up."""
    if rate == 0.0 or not training:
        return x
    shape = [1] * x.dim()
    shape[sample_dim] = x.size(sample_dim)
    keep = torch.rand(shape, dtype=x.dtype, device=x.device).add_(1 - rate).floor_()
    return x.div(1 - rate) * keep


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, width, stride, norm, drop_path_rate=0.0):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)  # v1.5: stride on the 3x3
        self.bn2 = norm(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                            norm(out_channels))
        self.drop_path_rate = drop_path_rate

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(identity + drop_path(out, self.drop_path_rate, self.training))


class OFAResNet(nn.Module):
    def __init__(self, resnet_type, drop_path_rate=0.0, batch_norm_eps=1e-5):
        super().__init__()
        def norm(channels):
            return nn.BatchNorm2d(channels, eps=batch_norm_eps)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for index, (blocks, width, stride) in enumerate(zip(STAGE_BLOCKS[resnet_type], (64, 128, 256), (1, 2, 2))):
            rates = torch.linspace(0, drop_path_rate, blocks).tolist()
            rates[0] = 0.0  # OFA never drops a stage's first block
            stage = []
            for block in range(blocks):
                stage.append(Bottleneck(channels, width, stride if block == 0 else 1, norm, rates[block]))
                channels = width * Bottleneck.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))

    def forward(self, images):
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer3(self.layer2(self.layer1(x)))
