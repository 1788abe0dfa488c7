"""decode_audio and log_mel on the LibriVox WAVs and on files encoded or hand-built here."""
import fractions
import glob
import io
import os
import struct
import wave

import av
import numpy as np
import pytest
import torch
import torchaudio

from data.audio import SAMPLE_RATE, decode_audio, log_mel
from data.errors import BadInputError

from conftest import SHARED_DATA

SPEECH = sorted(glob.glob(os.path.join(SHARED_DATA, "speech/*.wav")))
LONG_WAV = os.path.join(SHARED_DATA, "speech/sense_and_sensibility_01_austen_64kb-0870.wav")  # 7.1 s
WHERE = ("file.tsv", 7, 5, "audio")
PREFIX = "file.tsv:7: column 5 (audio): "


def read(path):
    with open(path, "rb") as f:
        return f.read()


def wav_samples(path):
    """Samples of a 16-bit mono WAV as floats in [-1, 1), read with Python's wave module."""
    with wave.open(path) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768


def hand_made_wav(rate, samples, data_size=None):
    """A 16-bit mono PCM WAV built byte by byte, so its header can say anything."""
    body = np.asarray(samples, "<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, (2 * rate) & 0xFFFFFFFF, 2, 16)
    size = len(body) if data_size is None else data_size
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(body)) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + body)


def flac(channels, rate):
    """FLAC of the int16 ``channels`` (channels x samples) at ``rate`` Hz, encoded with PyAV."""
    layout = {1: "mono", 2: "stereo"}[len(channels)]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(channels.T).reshape(1, -1), format="s16",
                                           layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, fractions.Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def tone(frequency, seconds, rate, amplitude=0.5):
    t = np.arange(round(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * frequency * t)


def bad(*args, **kwargs):
    with pytest.raises(BadInputError) as error:
        decode_audio(*args, **kwargs)
    assert str(error.value).startswith(PREFIX)
    assert (error.value.path, error.value.line, error.value.column) == ("file.tsv", 7, 5)
    return str(error.value)


@pytest.mark.parametrize("path", SPEECH, ids=lambda p: p[-8:-4])
def test_librivox_wav_decodes_exactly(path):
    with wave.open(path) as w:
        header_seconds = w.getnframes() / w.getframerate()
        assert w.getframerate() == SAMPLE_RATE  # so decoding is only int16 -> float: exact
    clip = decode_audio(read(path), WHERE, 30.0)
    assert clip.duration == header_seconds and clip.start == 0.0
    assert clip.samples.dtype == torch.float32 and clip.samples.dim() == 1
    assert torch.equal(clip.samples, torch.from_numpy(wav_samples(path)))


def test_stereo_44k_flac_is_downmixed_and_resampled():
    left, right = tone(440, 2.0, 44_100), tone(1000, 2.0, 44_100)
    data = flac((np.stack([left, right]) * 32767).astype(np.int16), 44_100)
    clip = decode_audio(data, WHERE, 30.0)
    assert clip.duration == pytest.approx(2.0, abs=1e-3)
    assert len(clip.samples) == pytest.approx(2 * SAMPLE_RATE, abs=16)
    spectrum = np.abs(np.fft.rfft(clip.samples.numpy()))
    frequencies = np.fft.rfftfreq(len(clip.samples), 1 / SAMPLE_RATE)
    peaks = sorted(frequencies[np.argsort(spectrum)[-2:]])
    assert peaks == pytest.approx([440, 1000], abs=1.0)  # both channels, at their own pitch
    at = [spectrum[np.argmin(np.abs(frequencies - f))] for f in (440, 1000)]
    assert at[0] == pytest.approx(at[1], rel=0.1)  # mixed with equal weight
    assert np.median(spectrum) < 1e-3 * at[0]


def test_long_clip_is_centred_at_eval():
    full = wav_samples(LONG_WAV)
    clip = decode_audio(read(LONG_WAV), WHERE, 2.0)
    assert clip.start == pytest.approx(2.55)  # (7.1 - 2) / 2
    assert clip.duration == pytest.approx(7.1)
    assert torch.equal(clip.samples, torch.from_numpy(full[40_800:72_800]))
    with_keep = decode_audio(read(LONG_WAV), WHERE, 2.0, keep=(6.0, 7.0))
    assert with_keep.start == clip.start  # keep only steers training windows


def test_long_clip_gets_a_random_window_inside_in_training():
    data, full = read(LONG_WAV), wav_samples(LONG_WAV)
    starts = set()
    for seed in range(10):
        clip = decode_audio(data, WHERE, 2.0, train=True, rng=np.random.default_rng(seed))
        first = round(clip.start * SAMPLE_RATE)
        assert 0 <= clip.start <= 5.1 and len(clip.samples) == 32_000
        assert torch.equal(clip.samples, torch.from_numpy(full[first:first + 32_000]))
        starts.add(first)
    assert len(starts) == 10


def test_training_window_keeps_the_span_that_fits():
    data = read(LONG_WAV)
    starts = []
    for seed in range(20):
        clip = decode_audio(data, WHERE, 2.0, train=True, rng=np.random.default_rng(seed), keep=(4.0, 5.5))
        assert clip.start <= 4.0 and clip.start + 2.0 >= 5.5
        starts.append(clip.start)
    assert min(starts) < 3.7 and max(starts) > 3.8  # random over [3.5, 4.0]


def test_training_window_lies_inside_a_span_too_long_to_keep():
    for seed in range(20):
        clip = decode_audio(read(LONG_WAV), WHERE, 2.0, train=True, rng=np.random.default_rng(seed),
                            keep=(1.0, 6.0))
        assert 1.0 <= clip.start and clip.start + 2.0 <= 6.0


def test_short_clip_is_returned_whole():
    for train in (False, True):
        clip = decode_audio(read(LONG_WAV), WHERE, 30.0, train=train, rng=np.random.default_rng(0))
        assert (clip.start, len(clip.samples)) == (0.0, 113_600)


def test_training_without_rng_follows_torch_seeding():
    torch.manual_seed(3)
    first = decode_audio(read(LONG_WAV), WHERE, 2.0, train=True)
    torch.manual_seed(3)
    assert decode_audio(read(LONG_WAV), WHERE, 2.0, train=True).start == first.start


def test_log_mel_shape():
    features = log_mel(torch.from_numpy(wav_samples(LONG_WAV)))
    assert features.shape == (1 + 113_600 // 160, 64) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert log_mel(torch.zeros(16_000), num_mels=80).shape == (101, 80)
    assert log_mel(torch.zeros(16_000)).min().item() == pytest.approx(np.log(1e-6))


def test_log_mel_puts_a_tone_in_its_band():
    # Centre frequency of each mel band: where its triangular filter peaks.
    filters = torchaudio.functional.melscale_fbanks(201, 0.0, 8000.0, 64, SAMPLE_RATE)
    centres = filters.argmax(dim=0).numpy() * SAMPLE_RATE / 400
    bands = []
    for frequency in (300, 1000, 3000):
        features = log_mel(torch.from_numpy(tone(frequency, 1.0, SAMPLE_RATE).astype(np.float32)))
        band = int(features[5:-5].mean(dim=0).argmax())
        assert abs(centres[band] - frequency) <= max(np.diff(centres)[max(band - 1, 0):band + 1]) + 1e-9
        bands.append(band)
    assert bands[0] < bands[1] < bands[2]


def test_not_a_container_is_bad_input():
    assert "not a readable media container" in bad(np.random.default_rng(0).bytes(4096), WHERE, 10.0)
    assert "not a readable media container" in bad(b"", WHERE, 10.0)


def test_file_without_audio_stream_is_bad_input():
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert "no audio stream in the file (streams: video)" in bad(buffer.getvalue(), WHERE, 10.0)


def test_empty_audio_stream_is_bad_input():
    assert "audio stream has no samples" in bad(hand_made_wav(16_000, []), WHERE, 10.0)


def test_truncated_files_are_bad_input():
    data = read(LONG_WAV)
    assert "truncated WAV: its data chunk declares 227200 bytes but the file holds 113578" in \
        bad(data[: len(data) // 2], WHERE, 10.0)
    encoded = flac((tone(440, 3.0, 16_000)[None] * 32767).astype(np.int16), 16_000)
    audio_from = encoded.index(b"\xff\xf8")  # the first frame's sync code, after the metadata blocks
    assert "cannot decode audio" in bad(encoded[: (audio_from + len(encoded)) // 2], WHERE, 10.0)


def test_absurd_sample_rates_are_bad_input():
    second = (tone(440, 1.0, 16_000) * 32767).astype(np.int16)
    assert "audio sample rate 10000000 Hz exceeds the limit of 768000 Hz" in \
        bad(hand_made_wav(10_000_000, second), WHERE, 10.0)
    assert "audio sample rate 48000 Hz exceeds the limit of 44100 Hz" in \
        bad(hand_made_wav(48_000, second), WHERE, 10.0, max_sample_rate=44_100)
    for rate in (0, 0xFFFFFFFF):  # FFmpeg refuses these headers itself
        assert "not a readable media container" in bad(hand_made_wav(rate, second), WHERE, 10.0)


def test_too_long_by_header_is_bad_input():
    assert "audio of 7.1 s exceeds the limit of 5.0 s" in bad(read(LONG_WAV), WHERE, 10.0, max_input_seconds=5.0)


def test_header_understating_the_length_cannot_extend_decoding():
    encoded = flac((tone(440, 3.0, 16_000)[None] * 32767).astype(np.int16), 16_000)
    # STREAMINFO (bytes 8-41): 64 bits from byte 18 hold rate, channels, depth and the total samples (36).
    fields = int.from_bytes(encoded[18:26], "big")
    assert fields & (2**36 - 1) == 48_000
    lying = encoded[:18] + ((fields >> 36 << 36) | 1_600).to_bytes(8, "big") + encoded[26:]
    with av.open(io.BytesIO(lying)) as container:
        assert container.streams.audio[0].duration == 1_600  # the header now claims 0.1 s
    assert "audio decodes to more than the limit of 1.0 s" in bad(lying, WHERE, 10.0, max_input_seconds=1.0)
    assert decode_audio(lying, WHERE, 10.0).duration == pytest.approx(3.0)


def test_bad_arguments_are_programming_errors():
    with pytest.raises(ValueError, match="keep"):
        decode_audio(read(LONG_WAV), WHERE, 2.0, train=True, keep=(5.0, 4.0))
    with pytest.raises(ValueError, match="max_seconds"):
        decode_audio(read(LONG_WAV), WHERE, 0.0)
