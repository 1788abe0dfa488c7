"""The demo video world: short clips in which coloured shapes appear, move in a straight line and vanish.

A clip lasts 4 to 6 s and holds 1 to 3 shapes on one of the image world's backgrounds, drawn with the
image world's vocabulary and renderer. Shapes in a clip have distinct colours, so "the red circle" and
"the red one" each name one shape; each appears at least APPEARANCE_GAP_SECONDS after the previous one,
so "then" orders them, stays visible for at least MIN_VISIBLE_SECONDS while moving left, right, up or
down, and never touches another shape. Shape ``k`` is visible in frames ``start_frame <= f < end_frame``,
that is from ``start_frame / fps`` to ``end_frame / fps`` seconds: the span its temporal rows give.

Every clip is drawn from its own random stream keyed by (seed, split, index, VIDEO_STREAM), apart from
the image world's streams, and encoded as H.264 MP4 (yuv420p, no B-frames) with a single-threaded,
bit-exact encoder and muxer, so the same seed gives byte-identical files.

Rows (uniq-ids ``demo-video-{split}-{index:06d}`` for clips, with ``-{k}`` appended for each item):
  video_caption: uniq-id, image-id, caption, objects (empty), MP4 base64
      (train: one row per caption; valid: one row per clip with ``&&``-joined references)
  video_qa:      question-id, image-id, question, ``1.0|!+answer``, objects (empty), MP4 base64
  temporal:      uniq-id, image (empty), MP4 base64, audio (empty), query,
                 ``{"spans": [[start_s, end_s]], "duration": clip_s}``
"""
import base64
import io
import json
import math
from dataclasses import dataclass

import av
import numpy as np
from av.bitstream import BitStreamFilterContext

from data.tsv import format_row
from preprocess.demo_world.scenes import (
    BACKGROUNDS, COLOUR_JITTER, COLOURS, NUMBER_WORDS, PLACEMENT_TRIES, SHAPES, SIZE_RANGES, SPLIT_STREAMS,
    Shape, boxes_clash, caption_rows, join_with_and, paint_shapes, render_background)

VIDEO_STREAM = 1  # appended to the image world's stream key
MIN_SECONDS, MAX_SECONDS = 4, 6
MAX_SHAPES = 3
MIN_VISIBLE_SECONDS = 1.2
APPEARANCE_GAP_SECONDS = 0.5
ABSENT_SECONDS = 0.5  # every shape is off screen for at least this long, so its span is a real choice
MIN_TRAVEL = 0.35  # fraction of the free room (image side minus shape side) a shape crosses at least
SHAPE_SIZE = "small"  # moving shapes need room: all use the image world's small size range
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
QUESTIONS_PER_CLIP = 4  # "how many shapes appear?" and three drawn from the others
CRF = 20
# Single-threaded and without B-frames: libx264's B-frame decisions on such tiny frames are not reproducible
# (the same frames sometimes encode to different, equally decodable bytes); with B-frames off they are, and
# decode order is display order.
X264_OPTIONS = {"crf": str(CRF), "preset": "fast", "threads": "1", "x264-params": "bframes=0"}
# x264 writes its version and settings into an SEI unit of the first frame; dropping SEI units (type 6)
# keeps the bytes independent of the x264 build and each clip some 700 bytes smaller.
DROP_SEI = "filter_units=remove_types=6"


@dataclass(frozen=True)
class Track:
    """One shape's life in a clip: visible in frames [start_frame, end_frame), moving origin -> target."""

    colour: str
    kind: str
    rgb: tuple
    side: float
    start_frame: int
    end_frame: int
    origin: tuple  # top-left corner in the first visible frame
    target: tuple  # top-left corner in the last visible frame
    direction: str

    def visible(self, frame):
        return self.start_frame <= frame < self.end_frame

    def box_at(self, frame):
        """Pixel box (x0, y0, x1, y1) in a frame where the shape is visible."""
        progress = (frame - self.start_frame) / max(self.end_frame - 1 - self.start_frame, 1)
        x0, y0 = (a + (b - a) * progress for a, b in zip(self.origin, self.target))
        return (x0, y0, x0 + self.side, y0 + self.side)

    def span(self, fps):
        """[appears, vanishes] in seconds."""
        return [round(self.start_frame / fps, 4), round(self.end_frame / fps, 4)]


@dataclass(frozen=True)
class Clip:
    background: str
    num_frames: int
    tracks: list  # in order of appearance


def tracks_clash(a, b):
    """True when two shapes come too close in some frame where both are visible."""
    frames = range(max(a.start_frame, b.start_frame), min(a.end_frame, b.end_frame))
    return any(boxes_clash(a.box_at(f), b.box_at(f)) for f in frames)


def sample_track(rng, colour, kind, num_frames, fps, image_size, placed):
    """A visible interval and a straight path that keep clear of the shapes already placed, or None."""
    rgb = tuple(int(np.clip(c + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1), 0, 255))
                for c in COLOURS[colour])
    side = float(round(rng.uniform(*SIZE_RANGES[SHAPE_SIZE]) * image_size))
    room = image_size - side
    shortest = math.ceil(MIN_VISIBLE_SECONDS * fps)
    longest = num_frames - math.ceil(ABSENT_SECONDS * fps)
    gap = math.ceil(APPEARANCE_GAP_SECONDS * fps)
    for _ in range(PLACEMENT_TRIES):
        length = int(rng.integers(shortest, longest + 1))
        start = int(rng.integers(0, num_frames - length + 1))
        direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
        travel = rng.uniform(MIN_TRAVEL, 1.0) * room
        first = rng.uniform(0, room - travel)
        along = (first, first + travel) if sum(DIRECTIONS[direction]) > 0 else (first + travel, first)
        across = rng.uniform(0, room)
        if DIRECTIONS[direction][0]:
            origin, target = (along[0], across), (along[1], across)
        else:
            origin, target = (across, along[0]), (across, along[1])
        track = Track(colour, kind, rgb, side, start, start + length, origin, target, direction)
        if all(abs(start - other.start_frame) >= gap and not tracks_clash(track, other) for other in placed):
            return track
    return None


def sample_clip(rng, image_size, fps):
    """A background, a length in frames and 1-3 tracks of distinct colours, sorted by appearance."""
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    num_frames = int(rng.integers(MIN_SECONDS * fps, MAX_SECONDS * fps + 1))
    count = int(rng.integers(1, MAX_SHAPES + 1))
    tracks = []
    for colour in rng.choice(list(COLOURS), size=count, replace=False):
        kind = SHAPES[rng.integers(len(SHAPES))]
        track = sample_track(rng, str(colour), kind, num_frames, fps, image_size, tracks)
        if track is not None:
            tracks.append(track)
    return Clip(background, num_frames, sorted(tracks, key=lambda t: t.start_frame))


def render_frames(rng, clip, image_size):
    """The clip's frames as RGB uint8 arrays."""
    background = render_background(rng, clip.background, image_size)
    return [paint_shapes(background, [Shape(t.colour, t.kind, SHAPE_SIZE, t.rgb, t.box_at(frame))
                                      for t in clip.tracks if t.visible(frame)])
            for frame in range(clip.num_frames)]


def encode_mp4(frames, fps):
    """H.264 MP4 bytes of the frames, identical for identical frames."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=fps, options=dict(X264_OPTIONS))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        drop_sei = BitStreamFilterContext(DROP_SEI, stream)

        def mux(packets):
            for packet in packets:
                for filtered in drop_sei.filter(packet):
                    filtered.stream = stream
                    container.mux(filtered)

        for frame in frames:
            mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        mux(stream.encode(None))
        mux([None])  # flush the filter
    return buffer.getvalue()


def make_captions(clip):
    """Three lowercase captions naming the shapes in order of appearance."""
    named = [f"a {t.colour} {t.kind}" for t in clip.tracks]
    moving = " then ".join(f"{name} moves {t.direction}" for name, t in zip(named, clip.tracks))
    count = len(clip.tracks)
    counted = f"{NUMBER_WORDS[count]} shape{'s' if count > 1 else ''}: {join_with_and(named)}"
    ordered = "first " + ", then ".join(named) if count > 1 else f"only {named[0]}"
    return [moving, counted, ordered]


def make_questions(rng, clip):
    """(question, answer) pairs: the shape count, then QUESTIONS_PER_CLIP - 1 drawn from the rest."""
    tracks = clip.tracks
    kinds = [t.kind for t in tracks]
    pool = []
    for t in tracks:
        pool.append((f"what shape is the {t.colour} one?", t.kind))
        pool.append((f"which way does the {t.colour} {t.kind} move?", t.direction))
        if kinds.count(t.kind) == 1:
            pool.append((f"what colour is the {t.kind}?", t.colour))
    if len(tracks) > 1:
        pool.append(("which shape appears first?", f"{tracks[0].colour} {tracks[0].kind}"))
        pool.append(("which shape appears last?", f"{tracks[-1].colour} {tracks[-1].kind}"))
    present = tracks[rng.integers(len(tracks))]
    pool.append((f"is there a {present.colour} {present.kind}?", "yes"))
    absent = [(c, k) for c in COLOURS for k in SHAPES if (c, k) not in {(t.colour, t.kind) for t in tracks}]
    colour, kind = absent[rng.integers(len(absent))]
    pool.append((f"is there a {colour} {kind}?", "no"))
    chosen = sorted(rng.choice(len(pool), size=min(QUESTIONS_PER_CLIP - 1, len(pool)), replace=False))
    return [("how many shapes appear?", str(len(tracks)))] + [pool[i] for i in chosen]


def make_query(rng, track):
    templates = ("the {colour} {kind} is visible", "the {colour} {kind} moves {direction}",
                 "when is the {colour} {kind} on screen?")
    return templates[rng.integers(len(templates))].format(
        colour=track.colour, kind=track.kind, direction=track.direction)


def clip_rows(split, index, image_size, fps, seed):
    """TSV lines of one clip for the video_caption, video_qa and temporal files."""
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split], index, VIDEO_STREAM])
    clip = sample_clip(rng, image_size, fps)
    video_b64 = base64.b64encode(encode_mp4(render_frames(rng, clip, image_size), fps)).decode("ascii")
    clip_id = f"demo-video-{split}-{index:06d}"
    captions = make_captions(clip)
    caption_lines = caption_rows(split, clip_id, captions, video_b64)
    qa_lines = [format_row([f"{clip_id}-{k}", clip_id, question, f"1.0|!+{answer}", "", video_b64])
                for k, (question, answer) in enumerate(make_questions(rng, clip))]
    duration = round(clip.num_frames / fps, 4)
    temporal_lines = []
    for k, track in enumerate(clip.tracks):
        annotation = json.dumps({"spans": [track.span(fps)], "duration": duration}, separators=(",", ":"))
        temporal_lines.append(format_row([f"{clip_id}-{k}", "", video_b64, "", make_query(rng, track), annotation]))
    return {"video_caption": caption_lines, "video_qa": qa_lines, "temporal": temporal_lines}
