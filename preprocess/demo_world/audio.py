"""The demo audio world: short clips holding 1 to 3 synthesised sound events over faint background noise.

A clip lasts 2 to 5 s at 16 kHz mono. Its events are of distinct kinds (so "the rising chirp" names one
event), each short (0.4-0.7 s) or long (1.0-1.5 s), at least MIN_GAP_SECONDS apart and EDGE_SECONDS
clear of the clip's ends; start and end times fall on a TIME_STEP grid. Each kind keeps to its own
frequency band (SOUND_BANDS, disjoint), so an event can be told from the others by where its energy lies:
pure tones at three named pitches, exponential chirps sweeping up or down, and band-limited noise.

Every clip is drawn from its own random stream keyed by (seed, split, index, AUDIO_STREAM) and written
as FLAC through a bit-exact muxer, so the same seed gives byte-identical files.

Rows (uniq-ids ``demo-audio-{split}-{index:06d}`` for clips, with ``-{k}`` appended for each item):
  audio_caption: uniq-id, image-id, caption, objects (empty), FLAC base64
      (train: one row per caption; valid: one row per clip with ``&&``-joined references)
  temporal:      uniq-id, image (empty), video (empty), FLAC base64, query,
                 ``{"spans": [[start_s, end_s]], "duration": clip_s}``
"""
import base64
import io
import json
from dataclasses import dataclass

import av
import numpy as np

from data.tsv import format_row
from preprocess.demo_world.scenes import NUMBER_WORDS, SPLIT_STREAMS, caption_rows, join_with_and

AUDIO_STREAM = 2  # appended to the image world's stream key (the video world uses 1)
SAMPLE_RATE = 16000
TIME_STEP = 0.01  # seconds; clip lengths and event times are whole multiples of it
MIN_SECONDS, MAX_SECONDS = 2, 5
MAX_EVENTS = 3
EVENT_LENGTHS = {"short": (0.4, 0.7), "long": (1.0, 1.5)}  # seconds; the gap keeps the words apart
MIN_GAP_SECONDS = 0.25
EDGE_SECONDS = 0.1
FADE_SECONDS = 0.01  # raised-cosine onset and release, against clicks
PITCH_JITTER = 0.02  # relative
TONE_AMPLITUDE = (0.15, 0.4)  # peak
NOISE_AMPLITUDE = (0.05, 0.12)  # standard deviation
BACKGROUND_STD = 3e-5  # faint white noise, about -90 dBFS (1 LSB), so no stretch is digital silence
FLAC_LEVEL = 5  # the default level: 8 (the strongest) makes these clips no smaller and takes 1.7 times as long

# name -> (synthesis, frequencies in Hz); a tone's pitch varies by PITCH_JITTER around its frequency.
SOUNDS = {
    "low tone": ("tone", 250),
    "middle tone": ("tone", 700),
    "high tone": ("tone", 4000),
    "rising chirp": ("chirp", 1200, 3000),
    "falling chirp": ("chirp", 3000, 1200),
    "burst of noise": ("noise", 5000, 7000),
}
# Where each kind's energy lies, in Hz; the bands do not overlap.
SOUND_BANDS = {
    "low tone": (225, 275),
    "middle tone": (630, 770),
    "high tone": (3700, 4300),
    "rising chirp": (1200, 3000),
    "falling chirp": (1200, 3000),
    "burst of noise": (5000, 7000),
}


@dataclass(frozen=True)
class Event:
    name: str
    length: str  # "short" or "long"
    start: float  # seconds
    end: float

    def span(self):
        return [self.start, self.end]


@dataclass(frozen=True)
class AudioClip:
    duration: float  # seconds
    events: list  # in time order


def sample_clip(rng):
    """A length and 1-3 events of distinct kinds, in order, separated and clear of the ends."""
    steps = int(rng.integers(round(MIN_SECONDS / TIME_STEP), round(MAX_SECONDS / TIME_STEP) + 1))
    gap, edge = round(MIN_GAP_SECONDS / TIME_STEP), round(EDGE_SECONDS / TIME_STEP)
    count = int(rng.integers(1, MAX_EVENTS + 1))
    names = [str(name) for name in rng.choice(list(SOUNDS), size=count, replace=False)]
    lengths = [("short", "long")[rng.integers(2)] for _ in names]
    durations = [int(rng.integers(round(EVENT_LENGTHS[k][0] / TIME_STEP), round(EVENT_LENGTHS[k][1] / TIME_STEP) + 1))
                 for k in lengths]
    while sum(durations) + gap * (len(durations) - 1) + 2 * edge > steps:
        names, lengths, durations = names[:-1], lengths[:-1], durations[:-1]  # the first always fits
    slack = steps - sum(durations) - gap * (len(durations) - 1) - 2 * edge
    shifts = np.sort(rng.integers(0, slack + 1, size=len(durations)))
    events, cursor = [], edge
    for name, length, duration, shift in zip(names, lengths, durations, shifts):
        start = cursor + int(shift)
        events.append(Event(name, length, round(start * TIME_STEP, 2), round((start + duration) * TIME_STEP, 2)))
        cursor += duration + gap
    return AudioClip(round(steps * TIME_STEP, 2), events)


def band_noise(rng, num_samples, low, high):
    """Gaussian noise with unit standard deviation, restricted to [low, high] Hz."""
    spectrum = np.fft.rfft(rng.normal(size=num_samples))
    frequencies = np.fft.rfftfreq(num_samples, 1 / SAMPLE_RATE)
    spectrum[(frequencies < low) | (frequencies > high)] = 0
    noise = np.fft.irfft(spectrum, num_samples)
    return noise / noise.std()


def synthesise(rng, event):
    """The event's samples, faded in and out."""
    num_samples = round((event.end - event.start) * SAMPLE_RATE)
    t = np.arange(num_samples) / SAMPLE_RATE
    synthesis, *frequencies = SOUNDS[event.name]
    if synthesis == "tone":
        frequency = frequencies[0] * (1 + rng.uniform(-PITCH_JITTER, PITCH_JITTER))
        samples = rng.uniform(*TONE_AMPLITUDE) * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi))
    elif synthesis == "chirp":
        first, last = frequencies
        duration, ratio = num_samples / SAMPLE_RATE, last / first
        # Exponential sweep: the instantaneous frequency first * ratio ** (t / duration) integrates to this.
        phase = 2 * np.pi * first * duration / np.log(ratio) * (ratio ** (t / duration) - 1)
        samples = rng.uniform(*TONE_AMPLITUDE) * np.sin(phase)
    else:
        samples = rng.uniform(*NOISE_AMPLITUDE) * band_noise(rng, num_samples, *frequencies)
    fade = round(FADE_SECONDS * SAMPLE_RATE)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    samples[:fade] *= ramp
    samples[-fade:] *= ramp[::-1]
    return samples


def render_waveform(rng, clip):
    """The clip as float samples in [-1, 1]."""
    waveform = rng.normal(0, BACKGROUND_STD, round(clip.duration * SAMPLE_RATE))
    for event in clip.events:
        start = round(event.start * SAMPLE_RATE)
        samples = synthesise(rng, event)
        waveform[start:start + len(samples)] += samples
    return np.clip(waveform, -1, 1)


def encode_flac(waveform):
    """FLAC bytes of a mono 16 kHz waveform, identical for identical samples."""
    pcm = np.round(waveform * 32767).astype(np.int16)[None]
    buffer = io.BytesIO()
    # No 8 KiB padding block (the muxer's default) and no version strings.
    with av.open(buffer, "w", format="flac",
                 options={"fflags": "+bitexact", "metadata_header_padding": "0"}) as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono",
                                      options={"compression_level": str(FLAC_LEVEL)})
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def make_captions(clip):
    """Three lowercase captions naming the events in order."""
    named = [f"a {event.name}" for event in clip.events]
    count = len(named)
    counted = f"{NUMBER_WORDS[count]} sound{'s' if count > 1 else ''}: {join_with_and(named)}"
    timed = " then ".join(f"a {event.length} {event.name}" for event in clip.events)
    return [" then ".join(named), counted, timed]


def make_query(rng, event):
    templates = ("the {name}", "the {name} is heard", "when does the {name} sound?")
    return templates[rng.integers(len(templates))].format(name=event.name)


def clip_rows(split, index, seed):
    """TSV lines of one clip for the audio_caption and temporal files."""
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split], index, AUDIO_STREAM])
    clip = sample_clip(rng)
    audio_b64 = base64.b64encode(encode_flac(render_waveform(rng, clip))).decode("ascii")
    clip_id = f"demo-audio-{split}-{index:06d}"
    captions = make_captions(clip)
    caption_lines = caption_rows(split, clip_id, captions, audio_b64)
    temporal_lines = []
    for k, event in enumerate(clip.events):
        annotation = json.dumps({"spans": [event.span()], "duration": clip.duration}, separators=(",", ":"))
        temporal_lines.append(format_row([f"{clip_id}-{k}", "", "", audio_b64, make_query(rng, event), annotation]))
    return {"audio_caption": caption_lines, "temporal": temporal_lines}
