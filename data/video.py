"""Video bytes to a few RGB frames chosen by presentation time, decoded with PyAV.

Frames are chosen by presentation timestamp (``pts * time_base``, relative to the stream's start time),
never by frame index, so variable frame rate and containers that declare no frame count are handled the
same way as constant-rate ones. Every failure on bad bytes is a ``BadInputError`` naming the TSV cell.
"""

import math
from dataclasses import dataclass

import av
import numpy as np
import torch

from data.container import decoding, first_stream, open_container
from data.media import bad_input

SAMPLINGS = ("uniform", "random")

# Clips with at most this many frames per target (duration x frame rate / num_frames) are decoded in one
# linear pass instead of seeking to each target. A seek flushes the decoder and re-decodes from the
# keyframe before the target, so it only saves work when the segments are longer than the GOPs (12
# frames in MPEG-2 as in cityCC0.mpg, often 250 in H.264). ``benchmarks/decode.py --compare`` on this
# machine (8 targets at 224 px, CPU seconds per clip seeking / linear, frames decoded in brackets):
# 320x240 H.264 with GOP 12, 32 frames: 0.042 (34) / 0.038 (31); 64 frames: 0.063 (55) / 0.058 (61);
# 96 frames: 0.071 (56) / 0.076 (91); 128 frames: 0.063 (41) / 0.092 (121); 250 frames: 0.082 (58) /
# 0.162 (236); cityCC0.mpg (190 frames): 0.078 (84) / 0.109 (180). Up to about 12 frames per target the
# seeks' overhead eats what they save, so linear is as fast or faster there.
LINEAR_FRAMES_PER_TARGET = 12

_EPS = 1e-9  # seconds; timestamps closer than this count as equal


@dataclass
class VideoClip:
    """``num_frames`` frames of a video and when they are shown."""

    frames: torch.Tensor  # F x 3 x size x size uint8 RGB
    times: np.ndarray  # F presentation times in seconds from the start of the clip (float64), increasing
    duration: float  # seconds of the whole clip


def decode_video(data, where, num_frames, size, sampling="uniform", rng=None, max_seconds=3600.0,
                 max_pixels=8192 * 8192, max_decoded_frames=20000):
    """Decode ``num_frames`` frames of the video in ``data``, each reformatted to ``size`` x ``size`` RGB
    (``size`` None: RGB at the video's own width and height, which UnIVAL centre-crops).

    ``[0, duration)`` is split into ``num_frames`` equal segments. ``"uniform"`` takes the frame whose
    timestamp is nearest each segment's centre (on a tie, the earlier one: the frame on screen at the
    centre); ``"random"`` (training) draws a uniformly random instant in each segment from ``rng`` (from
    torch's global generator when ``rng`` is None, so fairseq's seeding makes it reproducible) and takes
    the frame on screen at that instant, i.e. the last one whose timestamp is not after it.

    The duration is the stream's declared duration; when the header has none, it is found by demuxing
    the packets' timestamps (at most ``max_decoded_frames`` packets). Frames are resized by swscale
    (bilinear) to a square, not keeping the aspect ratio, as the image pipeline does.

    Decoding seeks to each target (to the keyframe before it, then decodes forward to the wanted
    timestamp) when the clip has more than ``LINEAR_FRAMES_PER_TARGET`` frames per target, and otherwise
    decodes linearly from the start, stopping after the last target: for short clips the targets' GOPs
    overlap and one linear pass is as fast or faster (see ``LINEAR_FRAMES_PER_TARGET``). A seek that lands
    past its target (MPEG program streams land on the first keyframe after the seek point) is retried
    from further back; one that fails is given up for one linear pass. ``max_decoded_frames`` bounds every
    frame decoded, over all seeks, so a hostile header cannot make decoding run forever. Frames the
    decoder marks corrupt, or that have no timestamp, are never chosen.

    Raises ``BadInputError`` at ``where`` = (tsv_path, line, column, column_name) for bytes that are not
    a media container, corrupt or truncated files, no video stream, a declared size over ``max_pixels``,
    a duration over ``max_seconds``, fewer distinct decodable frames than ``num_frames``, a stream that
    ends well before its declared duration, and decoding more than ``max_decoded_frames`` frames. When
    the video has enough frames but, at a variable frame rate, two targets share the nearest frame, that
    frame is returned twice.
    """
    if num_frames < 1 or (size is not None and size < 1):
        raise ValueError(f"num_frames and size must be positive, got {num_frames} and {size}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    with decoding("video", where):
        return _decode(data, where, num_frames, size, sampling, rng, max_seconds, max_pixels,
                       max_decoded_frames)


class _SeekFailed(Exception):
    """Seeking gave no usable position; the caller redoes the selection in one linear pass."""


class _Budget:
    """Counts decoded frames against ``max_decoded_frames``."""

    def __init__(self, limit, where):
        self.limit, self.where, self.used = limit, where, 0

    def spend(self, what="frames"):
        self.used += 1
        if self.used > self.limit:
            raise bad_input(self.where, f"decoding needs more than {self.limit} {what}; refusing the video")


def _decode(data, where, num_frames, size, sampling, rng, max_seconds, max_pixels, max_decoded_frames):
    with open_container(data, where) as container:
        stream = first_stream(container, "video", where)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > max_pixels:
            raise bad_input(where, f"video of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
        start, duration = _extent(container, stream, where, max_decoded_frames)
        seeking = _frame_estimate(stream, duration) > LINEAR_FRAMES_PER_TARGET * num_frames
    if not duration > 0:
        raise bad_input(where, "video has no duration")
    if duration > max_seconds:
        raise bad_input(where, f"video of {duration:.1f} s exceeds the limit of {max_seconds} s")
    targets = _targets(duration, num_frames, sampling, rng)
    budget = _Budget(max_decoded_frames, where)
    choose = (data, where, start, targets, sampling, budget, max_pixels, size)
    selection = None
    if seeking:
        try:
            selection = _choose(*choose, seeking=True)
        except _SeekFailed:
            selection = None
    if selection is None:
        selection = _choose(*choose, seeking=False)
    chosen, stream_end = selection
    if any(choice is None for choice in chosen) or len({choice.pts for choice in chosen}) < num_frames:
        count = _count_frames(data, where, budget, max_pixels)
        if count < num_frames:
            raise bad_input(where, f"video has {count} frames, fewer than the {num_frames} asked")
    if stream_end is not None and targets[-1] > stream_end + max(0.25, 0.05 * duration):
        raise bad_input(where, f"video stream ends at {stream_end:.3f} s although its header declares "
                               f"{duration:.3f} s (truncated?)")
    frames = torch.from_numpy(np.stack([choice.pixels for choice in chosen]))
    return VideoClip(frames=frames, times=np.array([choice.time for choice in chosen], dtype=np.float64),
                     duration=duration)


def _extent(container, stream, where, max_packets):
    """(start pts, duration in seconds) from the header, or from the packets' timestamps when it has none."""
    time_base = stream.time_base
    if time_base is None or time_base <= 0:
        raise bad_input(where, "video stream has no time base")
    start = stream.start_time
    if start is not None and stream.duration is not None and stream.duration > 0:
        return start, float(stream.duration * time_base)
    first = last = None
    packets = 0
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        packets += 1
        if packets > max_packets:
            raise bad_input(where, f"video has more than {max_packets} packets; refusing the video")
        end = packet.pts + max(packet.duration or 0, 0)
        first = packet.pts if first is None else min(first, packet.pts)
        last = end if last is None else max(last, end)
    if first is None:
        raise bad_input(where, "video stream has no timestamped packets")
    start = first if start is None else start
    return start, float((last - start) * time_base)


def _targets(duration, num_frames, sampling, rng):
    """One instant per equal segment of [0, duration): its centre, or a uniformly random point in it."""
    edges = np.arange(num_frames, dtype=np.float64) * (duration / num_frames)
    if sampling == "uniform":
        return edges + duration / (2 * num_frames)
    rng = rng if rng is not None else np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
    return edges + rng.random(num_frames) * (duration / num_frames)


def _frame_estimate(stream, duration):
    if stream.frames > 0:
        return stream.frames
    rate = stream.average_rate or stream.guessed_rate
    return duration * float(rate) if rate else math.inf


@dataclass
class _Choice:
    key: tuple
    time: float
    pts: int
    frame: object  # av.VideoFrame, until converted to ``pixels``
    pixels: np.ndarray | None = None  # 3 x size x size uint8


def _choose(data, where, start, targets, sampling, budget, max_pixels, size, seeking):
    """``_select`` on a fresh container, with the chosen frames converted before the container closes."""
    with open_container(data, where) as container:
        chosen, stream_end = _select(container, start, targets, sampling, budget, max_pixels, seeking)
        for choice in chosen:
            if choice is not None:
                choice.pixels, choice.frame = _rgb(choice.frame, size), None
    return chosen, stream_end


def _key(sampling, time, target):
    """Smaller is better: nearest for uniform (earlier on ties), on screen at the instant for random."""
    if sampling == "uniform":
        return (round(abs(time - target), 9), time)
    if time <= target + _EPS:
        return (0, round(target - time, 9))
    return (1, time)


def _select(container, start, targets, sampling, budget, max_pixels, seeking):
    """(best frame seen for each target, end of the stream in seconds or None when not reached).

    Decoding either seeks to each target or runs straight through. Every frame decoded is offered to
    every target, so the result is the same either way as long as each target's neighbours (the last
    frame before it and the first at or after it) get decoded: when seeking, that holds because the seek
    lands on a keyframe at or before the target.
    """
    stream = container.streams.video[0]
    time_base = float(stream.time_base)
    chosen = [None] * len(targets)
    frames = None  # the decoding generator, replaced after each seek
    position = -math.inf  # time of the last frame decoded
    last_key = None  # time of the last keyframe decoded
    horizon = 0.0  # longest keyframe interval known: targets closer than this are decoded to, not sought
    last = None  # the last usable frame decoded, and its time
    for target in targets:
        if position >= target - _EPS:
            continue
        if seeking and (frames is None or target - position > horizon):
            frames, time, frame = _seek(container, stream, start, target, time_base, budget, horizon)
            if last_key is not None and time <= last_key + _EPS:
                horizon = max(horizon, target - last_key)  # landed on a keyframe already decoded
            last_key = position = time
            last = frame, time
            _offer(chosen, targets, sampling, frame, time, max_pixels, budget.where)
            if position >= target - _EPS:
                continue
        elif frames is None:
            frames = container.decode(stream)
        for frame in frames:
            budget.spend()
            time = _time(frame, start, time_base)
            if time is None:
                continue
            if frame.key_frame:
                if last_key is not None and time > last_key:
                    horizon = max(horizon, time - last_key)
                last_key = time
            position = time
            last = frame, time
            _offer(chosen, targets, sampling, frame, time, max_pixels, budget.where)
            if time >= target - _EPS:
                break
        else:  # end of the stream: later targets keep the last frames seen
            if last is None:
                return chosen, None
            frame, time = last
            shown = frame.duration * time_base if frame.duration and frame.duration > 0 else 0.0
            return chosen, time + shown
    return chosen, None


def _seek(container, stream, start, target, time_base, budget, horizon):
    """Seek to the keyframe at or before ``target``; (frames, its time, the first frame) or raise _SeekFailed.

    A seek that lands after the target is retried from further back, doubling the step (at most 4 times).
    """
    back = 0.0
    for _ in range(5):
        instant = max(target - back, 0.0)
        # At the very start, one tick before the first timestamp: a seek to exactly the start time of an
        # MPEG program stream lands on the second keyframe.
        offset = start + int(math.floor(instant / time_base)) if instant > 0 else start - 1
        try:
            container.seek(offset, stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            raise _SeekFailed() from None
        frames = container.decode(stream)
        for frame in frames:
            budget.spend()
            time = _time(frame, start, time_base)
            if time is not None:
                break
        else:
            raise _SeekFailed()  # nothing decodable after the seek point
        if time <= target + _EPS or instant == 0.0:
            return frames, time, frame
        back = max(2 * back, horizon, 0.5)
    raise _SeekFailed()


def _time(frame, start, time_base):
    """Seconds from the stream start at which ``frame`` is shown, or None when it cannot be used."""
    pts = frame.pts if frame.pts is not None else frame.dts
    if pts is None or frame.is_corrupt:
        return None
    return (pts - start) * time_base


def _offer(chosen, targets, sampling, frame, time, max_pixels, where):
    """Make ``frame`` the choice of every target it suits better."""
    if frame.width * frame.height > max_pixels:
        raise bad_input(where, f"video frame of {frame.width}x{frame.height} pixels exceeds the limit of "
                               f"{max_pixels} pixels")
    for i, target in enumerate(targets):
        key = _key(sampling, time, target)
        if chosen[i] is None or key < chosen[i].key:
            chosen[i] = _Choice(key, time, frame.pts if frame.pts is not None else frame.dts, frame)


def _count_frames(data, where, budget, max_pixels):
    """Distinct presentation timestamps of the decodable frames (bounded by the same budget)."""
    seen = set()
    with open_container(data, where) as container:
        stream = first_stream(container, "video", where)
        for frame in container.decode(stream):
            budget.spend()
            if frame.width * frame.height > max_pixels:
                raise bad_input(where, f"video frame of {frame.width}x{frame.height} pixels exceeds the "
                                       f"limit of {max_pixels} pixels")
            pts = frame.pts if frame.pts is not None else frame.dts
            if pts is not None and not frame.is_corrupt:
                seen.add(pts)
    return len(seen)


def _rgb(frame, size):
    """``frame`` resized by swscale to size x size RGB (None: its own size), as a 3 x size x size uint8 array.

    The channel move and the stacking are done in numpy: torch's strided copies of small uint8 tensors go
    through its intra-op thread pool, which costs milliseconds per frame on a busy machine.
    """
    if size is None:
        rgb = frame.reformat(format="rgb24").to_ndarray()
    else:
        rgb = frame.reformat(width=size, height=size, format="rgb24", interpolation="BILINEAR").to_ndarray()
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))
