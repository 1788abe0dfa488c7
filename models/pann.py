"""UnIVAL's audio backbone: PANN's Cnn6, Cnn10 and Cnn14 on raw waveforms, with PANN's parameter names.

The log-mel front end is a strided convolution with the checkpoint's STFT kernels
(``spectrogram_extractor.stft.conv_real`` / ``conv_imag``) and a product with its mel
filterbank (``logmel_extractor.melW``): those are parameters of the checkpoint and are
loaded, never recomputed (a fresh model starts from the analytic Hann-window DFT and
Slaney mel filterbank). Then ``bn0`` over the mel bins and the convolution blocks, each
average-pooled 2 x 2 (Cnn14's last block not at all). Output: B x C x time x mel.
SpecAugment and dropout act in training only.
"""
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

AUDIO_CFG = dict(sample_rate=48000, clip_samples=480000, mel_bins=64, window_size=1024, hop_size=480, fmin=50,
                 fmax=14000, class_num=527)  # UnIVAL's defaults; its options override mel_bins and hop_size
AMIN_DB = 1e-10
DROPOUT = 0.2


class PANNVariant(NamedTuple):
    kernel: int  # of every convolution
    convs_per_block: int
    widths: tuple  # output channels of each block
    last_pool: int  # the last block's average-pool size (the others pool 2 x 2)
    head: bool  # an (unused) classifier head in the state dict
    bn0_follows_mel_bins: bool  # else bn0 normalises 64 bins whatever mel_bins is


PANN_VARIANTS = {
    "Cnn6": PANNVariant(5, 1, (64, 128, 256, 512), 2, True, False),
    "Cnn10": PANNVariant(3, 2, (64, 128, 256, 512, 1024), 2, False, True),
    "Cnn14": PANNVariant(3, 2, (64, 128, 256, 512, 1024, 2048), 1, False, True),
}


class STFT(nn.Module):
    def __init__(self, n_fft, hop):
        super().__init__()
        bins = n_fft // 2 + 1
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        angle = 2 * math.pi * torch.arange(bins, dtype=torch.float64)[:, None] * torch.arange(n_fft) / n_fft
        with torch.no_grad():
            self.conv_real.weight.copy_((torch.cos(angle) * window)[:, None, :])
            self.conv_imag.weight.copy_((-torch.sin(angle) * window)[:, None, :])


class Spectrogram(nn.Module):
    def __init__(self, n_fft, hop):
        super().__init__()
        self.n_fft = n_fft
        self.stft = STFT(n_fft, hop)

    def forward(self, waveform):
        """B x L -> B x 1 x frames x bins power spectrum, frames centred (reflect-padded by n_fft/2)."""
        x = F.pad(waveform[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        real, imag = self.stft.conv_real(x), self.stft.conv_imag(x)
        return (real ** 2 + imag ** 2)[:, None].transpose(2, 3)


class LogMel(nn.Module):
    def __init__(self, sample_rate, n_fft, mel_bins, fmin, fmax):
        super().__init__()
        self.melW = nn.Parameter(torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, fmin, fmax, mel_bins, sample_rate, norm="slaney", mel_scale="slaney"),
            requires_grad=False)

    def forward(self, power):
        return 10.0 * torch.log10(torch.clamp(torch.matmul(power, self.melW), min=AMIN_DB))


class ConvBlock(nn.Module):
    def __init__(self, in_channels, out_channels, kernel, convs, pool):
        super().__init__()
        self.convs, self.pool = convs, pool
        for index in range(1, convs + 1):
            setattr(self, f"conv{index}", nn.Conv2d(in_channels if index == 1 else out_channels, out_channels,
                                                    kernel, padding=kernel // 2, bias=False))
            setattr(self, f"bn{index}", nn.BatchNorm2d(out_channels))

    def forward(self, x):
        for index in range(1, self.convs + 1):
            x = F.relu_(getattr(self, f"bn{index}")(getattr(self, f"conv{index}")(x)))
        return F.avg_pool2d(x, self.pool)


def drop_stripes(x, dim, width, stripes):
    """SpecAugment as PANN does it: per sample, ``stripes`` bands of up to ``width`` rows zeroed along ``dim``."""
    x = x.clone()
    total = x.size(dim)
    for sample in range(x.size(0)):
        for _ in range(stripes):
            distance = int(torch.randint(0, width, (1,)))
            start = int(torch.randint(0, max(total - distance, 1), (1,)))
            x[sample].narrow(dim - 1, start, distance).zero_()
    return x


class PANN(nn.Module):
    def __init__(self, model_name, sample_rate, window_size, hop_size, mel_bins, fmin, fmax, class_num, **unused):
        super().__init__()
        variant = PANN_VARIANTS[model_name]
        self.spectrogram_extractor = Spectrogram(window_size, hop_size)
        self.logmel_extractor = LogMel(sample_rate, window_size, mel_bins, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(mel_bins if variant.bn0_follows_mel_bins else 64)
        widths = (1,) + variant.widths
        self.blocks = len(variant.widths)
        for index in range(self.blocks):
            pool = variant.last_pool if index == self.blocks - 1 else 2
            setattr(self, f"conv_block{index + 1}", ConvBlock(widths[index], widths[index + 1], variant.kernel,
                                                              variant.convs_per_block, pool))
        if variant.head:
            self.fc1 = nn.Linear(widths[-1], widths[-1])
            self.fc_audioset = nn.Linear(widths[-1], class_num)
        self.out_channels = widths[-1]

    def log_mel(self, waveform):
        """B x L waveform -> B x 1 x frames x mel_bins log-mel (dB), before ``bn0``."""
        return self.logmel_extractor(self.spectrogram_extractor(waveform))

    def forward(self, waveform):
        x = self.bn0(self.log_mel(waveform).transpose(1, 3)).transpose(1, 3)
        if self.training:
            x = drop_stripes(drop_stripes(x, 2, 64, 2), 3, 8, 2)
        for index in range(self.blocks):
            if index:
                x = F.dropout(x, DROPOUT, self.training)
            x = getattr(self, f"conv_block{index + 1}")(x)
        return x
