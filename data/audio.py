"""Audio bytes to 16 kHz mono samples (PyAV), a window of at most ``max_seconds``, and log-mel features."""

import functools
import math
import struct
from dataclasses import dataclass

import av
import numpy as np
import torch
import torchaudio

from data.container import decoding, first_stream, open_container
from data.media import bad_input

SAMPLE_RATE = 16_000
WINDOW_MS, HOP_MS = 25, 10


@dataclass
class AudioClip:
    """The part of an audio file the model sees, and where it lies in the file."""

    samples: torch.Tensor  # float32 mono at 16 kHz: the window of the clip the model sees
    start: float  # seconds into the clip where the window begins
    duration: float  # seconds of the whole clip


def decode_audio(data, where, max_seconds, train=False, rng=None, keep=None, max_input_seconds=3600.0,
                 max_sample_rate=768_000, sample_rate=SAMPLE_RATE):
    """Decode the first audio stream of ``data`` to float32 mono at ``sample_rate`` (16 kHz) and cut a window
    of ``max_seconds``.

    Channels are downmixed and the rate converted by libswresample (``av.AudioResampler``), which is
    flushed at the end so no tail is lost. A clip longer than ``max_seconds`` is cropped to
    ``max_seconds``: centred at eval; at a uniformly random start in training, drawn from ``rng`` (or from
    torch's global generator when ``rng`` is None, so fairseq's seeding makes it reproducible). In
    training, ``keep=(start, end)`` in seconds asks for a window containing that span when it fits in
    ``max_seconds`` (temporal grounding); a longer span gets a random window inside it. The span is
    clipped to the clip; ``keep`` is ignored at eval, where the window stays centred. Clips no longer than
    ``max_seconds`` are returned whole: batches pad them at collation, with a length mask.

    Raises ``BadInputError`` at ``where`` = (tsv_path, line, column, column_name) for bytes that are not
    a media container, no audio stream, an audio stream with no samples, truncated or corrupt files, a
    sample rate <= 0 or above ``max_sample_rate``, and a duration above ``max_input_seconds``: checked
    on the header first, then again while decoding, so a lying header cannot make decoding run on.
    """
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    if keep is not None and not keep[0] <= keep[1]:
        raise ValueError(f"keep must be a (start, end) span with start <= end, got {keep}")
    with decoding("audio", where):
        samples = _decode(data, where, max_input_seconds, max_sample_rate, sample_rate)
    start = _window_start(len(samples), round(max_seconds * sample_rate), train, rng, keep, sample_rate)
    window = samples[start:start + round(max_seconds * sample_rate)]
    return AudioClip(samples=torch.from_numpy(np.ascontiguousarray(window)), start=start / sample_rate,
                     duration=len(samples) / sample_rate)


def unival_waveform(samples, length):
    """UnIVAL's audio input: samples quantised to int16 and back, then repeated whole as many times as fit in
    ``length`` and zero-padded to it (CLAP's ``repeatpad``); ``samples`` no longer than ``length``."""
    quantised = (samples.clamp(-1.0, 1.0) * 32767.0).to(torch.int16).float() / 32767.0
    repeated = quantised.repeat(length // len(quantised))
    return torch.nn.functional.pad(repeated, (0, length - len(repeated)))


def _decode(data, where, max_input_seconds, max_sample_rate, sample_rate):
    with open_container(data, where) as container:
        stream = first_stream(container, "audio", where)
        _check_rate(stream.codec_context.sample_rate, max_sample_rate, where)
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > max_input_seconds:
            raise bad_input(where, f"audio of {declared:.1f} s exceeds the limit of {max_input_seconds} s")
        if container.format.name == "wav":
            _check_wav_complete(data, where)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks, decoded = [], 0.0
        for frame in container.decode(stream):
            _check_rate(frame.sample_rate, max_sample_rate, where)
            decoded += frame.samples / frame.sample_rate
            if decoded > max_input_seconds:
                raise bad_input(where, f"audio decodes to more than the limit of {max_input_seconds} s")
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
        if decoded == 0:
            raise bad_input(where, "audio stream has no samples")
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _check_rate(rate, max_sample_rate, where):
    if rate is None or rate <= 0:
        raise bad_input(where, f"audio sample rate {rate} is not positive")
    if rate > max_sample_rate:
        raise bad_input(where, f"audio sample rate {rate} Hz exceeds the limit of {max_sample_rate} Hz")


def _declared_seconds(container, stream):
    if stream.duration is not None and stream.duration > 0 and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _check_wav_complete(data, where):
    """A WAV whose data chunk declares more bytes than the file holds was cut short.

    FFmpeg silently decodes what is there, so this reads the RIFF chunk sizes itself. Streamed WAVs
    that leave the size 0 or 0xFFFFFFFF are accepted.
    """
    if len(data) < 12 or data[8:12] != b"WAVE" or data[:4] not in (b"RIFF", b"RIFX"):
        return
    order = "<I" if data[:4] == b"RIFF" else ">I"
    position = 12
    while position + 8 <= len(data):
        size = struct.unpack(order, data[position + 4:position + 8])[0]
        if data[position:position + 4] == b"data":
            held = len(data) - position - 8
            if size not in (0, 0xFFFFFFFF) and held < size:
                raise bad_input(where, f"truncated WAV: its data chunk declares {size} bytes but the file "
                                       f"holds {held}")
            return
        position += 8 + size + (size & 1)


def _window_start(total, window, train, rng, keep, sample_rate):
    """First sample of the window of ``window`` samples, in a clip of ``total`` samples."""
    if total <= window:
        return 0
    if not train:
        return (total - window) // 2
    low, high = 0, total - window
    if keep is not None:
        first = min(max(math.floor(keep[0] * sample_rate), 0), total)
        last = min(max(math.ceil(keep[1] * sample_rate), 0), total)
        if last - first <= window:  # the window holds the whole span
            low, high = max(low, last - window), min(high, first)
        else:  # the window lies inside the span
            low, high = max(low, first), min(high, last - window)
    if rng is None:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
    return int(rng.integers(low, high + 1))


@functools.lru_cache(maxsize=8)
def _mel_spectrogram(num_mels, device):
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=SAMPLE_RATE * WINDOW_MS // 1000, hop_length=SAMPLE_RATE * HOP_MS // 1000,
        n_mels=num_mels, center=True, pad_mode="constant", power=2.0).to(device)


def log_mel(samples, num_mels=64):
    """T x ``num_mels`` float32 log-mel power, 25 ms Hann windows every 10 ms: ``log(mel + 1e-6)``.

    ``samples`` are 16 kHz mono; frames are centred on multiples of the hop (zero-padded at the ends), so
    T = 1 + len(samples) // 160 and frame t describes the audio around ``t * 10 ms``.
    """
    if samples.dim() != 1:
        raise ValueError(f"log_mel wants 1-D mono samples, got shape {tuple(samples.shape)}")
    with torch.no_grad():
        mel = _mel_spectrogram(num_mels, samples.device)(samples.to(torch.float32))
    return torch.log(mel + 1e-6).T.contiguous()
