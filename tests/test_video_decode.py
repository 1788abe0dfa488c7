"""decode_video on clips encoded here with known timestamps, and on the real MPEG-2 clip.

Every synthetic frame is one flat colour that encodes its index (red: index % 16, blue: index // 16, in
steps of 16), so a test can tell which frame came back from its pixels alone.
"""
import fractions
import io
import os
import wave

import av
import numpy as np
import pytest
import torch

from data import video
from data.errors import BadInputError
from data.video import decode_video

from conftest import SHARED_DATA

CITY = os.path.join(SHARED_DATA, "video/cityCC0.mpg")
WHERE = ("file.tsv", 7, 5, "video")
PREFIX = "file.tsv:7: column 5 (video): "
CFR_MS = list(range(0, 800, 40))  # 20 frames at 25 fps: 0.8 s
VFR_MS = [0, 30, 45, 200, 210, 260, 500, 700, 720, 990]  # the last frame shows 40 ms: 1.03 s


def colour(index):
    return 16 * (index % 16) + 8, 128, 16 * (index // 16) + 8


def encode(pts_ms, container_format="mp4", size=32, gop=12, path=None, options=None):
    """libx264 frames shown at ``pts_ms`` (time base 1/1000); each lasts until the next, the last 40 ms.

    ``tune=zerolatency`` keeps DTS equal to PTS: with libx264's default frame threading DTS lag two frames
    behind, and for a variable frame rate the MP4 then declares a duration (summed from DTS steps) that
    ends before the last frame is shown.
    """
    target = path or io.BytesIO()
    with av.open(target, "w", format=container_format, options=options or {}) as container:
        stream = container.add_stream("libx264", rate=25, options={"tune": "zerolatency", "g": str(gop),
                                                                "x264-params": "scenecut=0"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for index, pts in enumerate(pts_ms):
            pixels = np.empty((size, size, 3), np.uint8)
            pixels[:] = colour(index)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = pts, fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    if path is not None:
        with open(path, "rb") as f:
            return f.read()
    return target.getvalue()


def frame_indices(clip):
    """The index each returned frame encodes in its colour."""
    mean = clip.frames.to(torch.float64).mean(dim=(2, 3))
    red, blue = ((mean[:, [0, 2]] - 8) / 16).round().to(torch.int64).unbind(1)
    return (red + 16 * blue).tolist()


def bad(*args, **kwargs):
    with pytest.raises(BadInputError) as error:
        decode_video(*args, **kwargs)
    assert str(error.value).startswith(PREFIX)
    assert (error.value.path, error.value.line, error.value.column) == ("file.tsv", 7, 5)
    return str(error.value)


@pytest.fixture(scope="module")
def cfr():
    return encode(CFR_MS)


@pytest.fixture(scope="module")
def vfr():
    return encode(VFR_MS)


def test_uniform_takes_the_frame_nearest_each_segment_centre(cfr):
    clip = decode_video(cfr, WHERE, 5, 16)
    # Segments of 0.16 s, centres 0.08, 0.24, ... 0.72 s: exactly frames 2, 6, 10, 14, 18.
    assert clip.duration == pytest.approx(0.8)
    assert clip.frames.shape == (5, 3, 16, 16) and clip.frames.dtype == torch.uint8
    assert clip.times.dtype == np.float64
    np.testing.assert_allclose(clip.times, [0.08, 0.24, 0.40, 0.56, 0.72], atol=1e-9)
    assert frame_indices(clip) == [2, 6, 10, 14, 18]


def test_uniform_tie_takes_the_earlier_frame(cfr):
    # Centres 0.1, 0.3, 0.5, 0.7 s lie halfway between two frames: the one on screen wins.
    clip = decode_video(cfr, WHERE, 4, 16)
    np.testing.assert_allclose(clip.times, [0.08, 0.28, 0.48, 0.68], atol=1e-9)
    assert frame_indices(clip) == [2, 7, 12, 17]


def test_variable_frame_rate_is_sampled_by_timestamp_not_index(vfr):
    clip = decode_video(vfr, WHERE, 4, 16)
    assert clip.duration == pytest.approx(1.03)
    # Centres 0.129, 0.386, 0.644, 0.901 s; nearest frames at 0.2, 0.5, 0.7, 0.99 s (by index it would
    # have been frames 1, 4, 6, 9).
    np.testing.assert_allclose(clip.times, [0.2, 0.5, 0.7, 0.99], atol=1e-9)
    assert frame_indices(clip) == [3, 6, 7, 9]


def test_random_takes_a_frame_on_screen_during_each_segment(vfr):
    starts = np.array(VFR_MS) / 1000
    ends = np.append(starts[1:], 1.03)  # when each frame leaves the screen
    segment = 1.03 / 4
    seen_in_third_segment = set()
    for seed in range(40):
        clip = decode_video(vfr, WHERE, 4, 16, sampling="random", rng=np.random.default_rng(seed))
        indices = frame_indices(clip)
        np.testing.assert_allclose(clip.times, starts[indices], atol=1e-9)
        for i, index in enumerate(indices):
            assert starts[index] < (i + 1) * segment and ends[index] > i * segment
        assert list(clip.times) == sorted(clip.times)
        seen_in_third_segment.add(indices[2])
    assert seen_in_third_segment == {6, 7, 8}  # shown 0.515-0.7, 0.7-0.72 and 0.72-0.7725 s of it
    again = decode_video(vfr, WHERE, 4, 16, sampling="random", rng=np.random.default_rng(39))
    assert torch.equal(again.frames, clip.frames) and np.array_equal(again.times, clip.times)


def test_random_without_rng_follows_torch_seeding(vfr):
    torch.manual_seed(5)
    first = decode_video(vfr, WHERE, 4, 16, sampling="random")
    torch.manual_seed(5)
    second = decode_video(vfr, WHERE, 4, 16, sampling="random")
    assert np.array_equal(first.times, second.times)


def test_header_without_duration_or_frame_count_is_demuxed():
    data = encode(VFR_MS, container_format="matroska")
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert (stream.frames, stream.duration) == (0, None)  # what this test is about
    clip = decode_video(data, WHERE, 4, 16)
    assert clip.duration == pytest.approx(1.03)
    assert frame_indices(clip) == [3, 6, 7, 9]


def test_seeking_and_one_linear_pass_choose_the_same_frames(monkeypatch):
    # 120 frames for 4 targets is over LINEAR_FRAMES_PER_TARGET, so the default path seeks (GOP 10).
    data = encode([40 * i for i in range(120)], gop=10)
    assert 120 > video.LINEAR_FRAMES_PER_TARGET * 4
    with av.open(io.BytesIO(data)) as container:
        keys = [p.pts for p in container.demux(container.streams.video[0]) if p.is_keyframe]
    assert keys == [640 * i for i in range(0, 120, 10)]  # every 0.4 s (time base 1/16000)
    runs = [(sampling, seed) for sampling in ("uniform", "random") for seed in range(4)]
    sought = [decode_video(data, WHERE, 4, 16, sampling, np.random.default_rng(seed)) for sampling, seed in runs]
    monkeypatch.setattr(video, "LINEAR_FRAMES_PER_TARGET", 10**9)
    for (sampling, seed), clip in zip(runs, sought):
        linear = decode_video(data, WHERE, 4, 16, sampling, np.random.default_rng(seed))
        assert np.array_equal(clip.times, linear.times) and torch.equal(clip.frames, linear.frames)
        assert frame_indices(clip) == [round(t / 0.04) for t in clip.times]
    np.testing.assert_allclose(sought[0].times, [0.6, 1.8, 3.0, 4.2], atol=1e-9)


def city_truth():
    """Frame times and duration of cityCC0.mpg from its packets alone (no decoding, no header fields)."""
    with av.open(CITY) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.duration) for p in container.demux(stream) if p.pts is not None]
        time_base = float(stream.time_base)
    first = min(pts for pts, _ in packets)
    times = np.array(sorted((pts - first) * time_base for pts, _ in packets))
    return times, (max(pts + duration for pts, duration in packets) - first) * time_base


def test_city_clip_decodes_to_its_true_duration(monkeypatch):
    with open(CITY, "rb") as f:
        data = f.read()
    times, duration = city_truth()
    # 190 frames at 25 fps, 3600 ticks of 1/90000 s apart, the first at pts 48600 (0.54 s): 7.6 s.
    assert len(times) == 190 and duration == pytest.approx(7.6)
    clip = decode_video(data, WHERE, 8, 224)
    assert clip.duration == pytest.approx(duration)
    assert clip.frames.shape == (8, 3, 224, 224) and clip.frames.dtype == torch.uint8
    centres = (np.arange(8) + 0.5) * duration / 8
    nearest = times[np.argmin(np.abs(times[None, :] - centres[:, None]), axis=1)]
    np.testing.assert_allclose(clip.times, nearest, atol=1e-9)
    monkeypatch.setattr(video, "LINEAR_FRAMES_PER_TARGET", 10**9)  # the same frames from one linear pass
    linear = decode_video(data, WHERE, 8, 224)
    assert torch.equal(linear.frames, clip.frames)


def test_city_clip_random_sampling_stays_in_its_segments():
    with open(CITY, "rb") as f:
        clip = decode_video(f.read(), WHERE, 8, 32, sampling="random", rng=np.random.default_rng(1))
    segment = 7.6 / 8
    for i, time in enumerate(clip.times):
        assert i * segment - 0.04 < time < (i + 1) * segment
    assert clip.frames.shape == (8, 3, 32, 32)


def test_not_a_container_is_bad_input():
    assert "not a readable media container" in bad(np.random.default_rng(0).bytes(4096), WHERE, 4, 16)
    assert "not a readable media container" in bad(b"", WHERE, 4, 16)


def test_truncated_mp4_is_bad_input(cfr, tmp_path):
    # moov at the end (the default): the index is gone.
    assert "not a readable media container" in bad(cfr[: len(cfr) // 2], WHERE, 4, 16)
    # moov first (faststart): the index promises samples the file no longer holds.
    whole = encode(CFR_MS, path=str(tmp_path / "fast.mp4"), options={"movflags": "faststart"})
    assert whole.index(b"moov") < whole.index(b"mdat")
    assert "cannot decode video" in bad(whole[: len(whole) // 2], WHERE, 4, 16)
    # Cut exactly where the 11th frame's packet starts: the demuxer just stops, after 0.4 s of 0.8 s.
    with av.open(io.BytesIO(whole)) as container:
        cut = [p.pos for p in container.demux(container.streams.video[0]) if p.pts is not None][10]
    assert "video stream ends at 0.400 s although its header declares 0.800 s (truncated?)" in \
        bad(whole[:cut], WHERE, 4, 16)


def test_file_without_video_stream_is_bad_input():
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(1600))
    assert "no video stream in the file (streams: audio)" in bad(buffer.getvalue(), WHERE, 4, 16)


def test_too_few_frames_is_bad_input():
    assert "video has 3 frames, fewer than the 8 asked" in bad(encode([0, 40, 80]), WHERE, 8, 16)


def test_too_many_pixels_declared_is_bad_input():
    assert "video of 64x64 pixels exceeds the limit of 1000 pixels" in \
        bad(encode([0, 40], size=64), WHERE, 1, 16, max_pixels=1000)


def test_too_long_is_bad_input():
    with open(CITY, "rb") as f:
        assert "video of 7.6 s exceeds the limit of 5.0 s" in bad(f.read(), WHERE, 8, 16, max_seconds=5.0)


def test_decoding_bound_is_bad_input(cfr):
    # The last centre (0.7 s) needs the frames up to 0.72 s, the first after it: 19 frames.
    assert "decoding needs more than 18 frames" in bad(cfr, WHERE, 4, 16, max_decoded_frames=18)
    assert decode_video(cfr, WHERE, 4, 16, max_decoded_frames=19).times[-1] == pytest.approx(0.68)


def test_demuxing_bound_is_bad_input():
    data = encode(CFR_MS, container_format="matroska")
    assert "more than 5 packets" in bad(data, WHERE, 4, 16, max_decoded_frames=5)


def test_bad_arguments_are_programming_errors(cfr):
    with pytest.raises(ValueError, match="sampling"):
        decode_video(cfr, WHERE, 4, 16, sampling="middle")
    with pytest.raises(ValueError, match="positive"):
        decode_video(cfr, WHERE, 0, 16)
