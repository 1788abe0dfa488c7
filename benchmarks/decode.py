"""Decoding speed: video (cityCC0.mpg) and audio + log-mel (the LibriVox WAVs), clips per second.

    .venv/bin/python benchmarks/decode.py              # the table
    .venv/bin/python benchmarks/decode.py --compare    # seeking against one linear pass, per clip length

Real-time factor = seconds of media handled per second of wall time (higher is faster). Each row is the
best of ``--repeats`` timed rounds after one warm-up, in one process with torch on one thread; "cpu s" is
that process's CPU time for the same work (best of the rounds), which shared machines disturb less.
``--compare`` reports CPU time only.
"""

import argparse
import fractions
import glob
import io
import os
import sys
import time

import av
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import SHARED_DATA, best_time, machine_line  # noqa: E402
from data import video  # noqa: E402
from data.audio import decode_audio, log_mel  # noqa: E402
from data.video import decode_video  # noqa: E402

WHERE = ("benchmark.tsv", 1, 1, "media")


def video_row(repeats):
    with open(os.path.join(SHARED_DATA, "video", "cityCC0.mpg"), "rb") as f:
        data = f.read()
    clip = decode_video(data, WHERE, 8, 224)
    run = lambda: decode_video(data, WHERE, 8, 224)  # noqa: E731
    return ("video cityCC0.mpg, 8 frames 224 px uniform", 1, clip.duration, best_time(run, repeats),
            best_time(run, repeats, time.process_time))


def audio_row(repeats):
    files = sorted(glob.glob(os.path.join(SHARED_DATA, "speech", "*.wav")))
    blobs = []
    for path in files:
        with open(path, "rb") as f:
            blobs.append(f.read())
    total = sum(decode_audio(blob, WHERE, 30.0).duration for blob in blobs)

    def run():
        for blob in blobs:
            log_mel(decode_audio(blob, WHERE, 30.0).samples)

    return (f"audio {len(files)} LibriVox WAVs + log_mel, max 30 s", len(files), total, best_time(run, repeats),
            best_time(run, repeats, time.process_time))


def table(repeats):
    print(f"{machine_line()}; av {av.__version__} (FFmpeg {av.ffmpeg_version_info}); best of {repeats}")
    print(f"{'workload':<48} {'clips':>5} {'media s':>8} {'wall s':>8} {'cpu s':>8} {'clips/s':>8} "
          f"{'x realtime':>10}")
    for name, clips, media, seconds, cpu in (video_row(repeats), audio_row(repeats)):
        print(f"{name:<48} {clips:>5} {media:>8.2f} {seconds:>8.4f} {cpu:>8.4f} {clips / seconds:>8.1f} "
              f"{media / seconds:>10.1f}")


def synthetic_h264(frames, gop, width=320, height=240, rate=25):
    """An H.264 clip with moving texture (so P-frames cost real work), ``frames`` long, keyframe every ``gop``."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height, width * 2, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate, options={"bframes": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = fractions.Fraction(1, rate)
        for i in range(frames):
            shift = (3 * i) % width
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[:, shift:shift + width]), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


class _CountingBudget(video._Budget):
    """The decoder's frame budget, remembering how many frames the last decode used."""

    last = None

    def __init__(self, *args):
        super().__init__(*args)
        _CountingBudget.last = self


def compare(repeats):
    """CPU seconds per clip and frames decoded (8 frames, 224 px, uniform), seeking against one linear pass."""
    with open(os.path.join(SHARED_DATA, "video", "cityCC0.mpg"), "rb") as f:
        clips = [("cityCC0.mpg MPEG-2 720x405, GOP 12", 190, f.read())]
    for frames in (32, 64, 96, 128, 250):
        clips.append(("H.264 320x240, GOP 12", frames, synthetic_h264(frames, 12)))
    clips.append(("H.264 320x240, GOP 250", 250, synthetic_h264(250, 250)))
    print(f"{'clip':<36} {'frames':>6} {'seek cpu s':>10} {'decoded':>7} {'linear cpu s':>12} {'decoded':>7}")
    saved_threshold, saved_budget = video.LINEAR_FRAMES_PER_TARGET, video._Budget
    video._Budget = _CountingBudget
    try:
        for name, frames, data in clips:
            row = []
            for threshold in (0, 10**9):  # always seek, never seek
                video.LINEAR_FRAMES_PER_TARGET = threshold
                row.append(best_time(lambda: decode_video(data, WHERE, 8, 224), repeats, time.process_time))
                row.append(_CountingBudget.last.used)
            print(f"{name:<36} {frames:>6} {row[0]:>10.4f} {row[1]:>7} {row[2]:>12.4f} {row[3]:>7}")
    finally:
        video.LINEAR_FRAMES_PER_TARGET, video._Budget = saved_threshold, saved_budget


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compare", action="store_true", help="seeking against linear decoding per clip length")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.compare:
        compare(args.repeats)
    else:
        table(args.repeats)


if __name__ == "__main__":
    main()
