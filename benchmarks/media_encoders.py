"""Decode + encode time per clip: UnIVAL's 3-D ResNeXt and PANN paths against UniGround's own video and audio encoders.

    .venv/bin/python benchmarks/media_encoders.py [--device cpu|cuda] [--threads N] [--repeats N]

One clip at a time (batch 1), as at evaluation: the video ``../shared/data/video/cityCC0.mpg`` and a
10 s audio window of the LibriVox WAVs in ``../shared/data/speech``. "decode" is PyAV decoding plus the
input transform (UniGround: 8 frames resized to 224 px, 16 kHz log-mel; UnIVAL: frames centre-cropped
at their own size, a 48 kHz int16-quantised repeat-padded waveform), "encode" the medium's backbone and
projection to the model width (768, the base sizes), no transformer layers. Sizes are those of the
released checkpoints: UniGround ``unify_base`` (ResNet-101 per frame pooled to 3 x 3, the log-mel
convolution stem) and UnIVAL's recipes (``all_resnext101`` on 16 frames, ``pann_cnn14`` with hop 200).
Random weights: speed does not depend on them. Each figure is the best of ``--repeats`` after a warm-up;
"cpu ms" is the process's CPU time for decode + encode, which a shared machine disturbs less than wall time.
"""
import argparse
import glob
import os
import sys
import time
from argparse import Namespace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import SHARED_DATA, best_time, machine_line, print_table  # noqa: E402
from data.audio import decode_audio, log_mel, unival_waveform  # noqa: E402
from data.transforms import ImageTransform  # noqa: E402
from data.video import decode_video  # noqa: E402
from models.audio_encoder import AudioEncoder  # noqa: E402
from models.image_encoder import ImageEncoder  # noqa: E402
from models.unival import audio_backbone, video_backbone  # noqa: E402
from models.video_encoder import VideoEncoder  # noqa: E402

WHERE = ("benchmark.tsv", 1, 1, "media")
DIM = 768
AUDIO_SECONDS = 10.0
NORMALISE = ImageTransform(224, train=False).normalise


def uniground_video(data, device):
    encoder = VideoEncoder(ImageEncoder(DIM, "resnet101", 3, 224), grid=3).to(device).eval()

    def decode():
        clip = decode_video(data, WHERE, 8, 224)
        return NORMALISE(clip.frames)[None].to(device), torch.as_tensor(clip.times / clip.duration)[None].to(device)
    return decode, lambda inputs: encoder(*inputs)


def unival_video(data, device, frames, size):
    backbone = video_backbone("all_resnext101").to(device).eval()
    projection = torch.nn.Linear(backbone.out_channels, DIM).to(device)

    def decode():
        clip = decode_video(data, WHERE, frames, None)
        return NORMALISE(ImageTransform.center_crop(clip.frames, size)).transpose(0, 1)[None].to(device)
    return decode, lambda clip: projection(backbone(clip).flatten(2).transpose(1, 2))


def uniground_audio(data, device):
    encoder = AudioEncoder(64, DIM).to(device).eval()

    def decode():
        features = log_mel(decode_audio(data, WHERE, AUDIO_SECONDS).samples)
        return features[None].to(device), torch.tensor([len(features)], device=device)
    return decode, lambda inputs: encoder(*inputs)


def unival_audio(data, device):
    args = Namespace(audio_encoder_name="pann_cnn14", mel_bins=64, hop_size=200, audio_cfg=None)
    backbone = audio_backbone(args).to(device).eval()
    projection = torch.nn.Linear(backbone.out_channels, DIM).to(device)

    def decode():
        clip = decode_audio(data, WHERE, AUDIO_SECONDS, sample_rate=48000)
        return unival_waveform(clip.samples, round(AUDIO_SECONDS * 48000))[None].to(device)
    return decode, lambda waveform: projection(backbone(waveform).flatten(2).transpose(1, 2))


def timed(name, path, repeats, sync):
    decode, encode = path
    inputs = decode()
    with torch.no_grad():
        decode_seconds = best_time(decode, repeats)
        encode_seconds = best_time(lambda: encode(inputs), repeats, sync=sync)
        cpu_seconds = best_time(lambda: encode(decode()), repeats, time.process_time, sync)
        tokens = encode(inputs)
    tokens = tokens[0] if isinstance(tokens, tuple) else tokens
    return (name, tokens.size(1), decode_seconds * 1000, encode_seconds * 1000,
            (decode_seconds + encode_seconds) * 1000, cpu_seconds * 1000)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--unival-frames", type=int, default=16, help="UnIVAL's num_frames (its recipes: 16 or 8)")
    parser.add_argument("--unival-frame-size", type=int, default=224, help="UnIVAL's patch_frame_size (384 or 224)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    with open(os.path.join(SHARED_DATA, "video", "cityCC0.mpg"), "rb") as f:
        video = f.read()
    with open(sorted(glob.glob(os.path.join(SHARED_DATA, "speech", "*.wav")))[0], "rb") as f:
        audio = f.read()
    print(machine_line(args.device))
    rows = [
        timed("UniGround video: ResNet-101 per frame, 8 x 224 px", uniground_video(video, args.device),
              args.repeats, sync),
        timed(f"UnIVAL video: all_resnext101, {args.unival_frames} x {args.unival_frame_size} px",
              unival_video(video, args.device, args.unival_frames, args.unival_frame_size), args.repeats, sync),
        timed("UniGround audio: log-mel + conv stem, 10 s", uniground_audio(audio, args.device), args.repeats, sync),
        timed("UnIVAL audio: pann_cnn14 hop 200, 10 s at 48 kHz", unival_audio(audio, args.device), args.repeats,
              sync),
    ]
    print_table(("path (one clip)", "tokens", "decode ms", "encode ms", "total ms", "cpu ms"), rows)


if __name__ == "__main__":
    main()
