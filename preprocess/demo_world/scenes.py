"""The demo world's scenes: 1 to 3 non-overlapping coloured shapes on a grey-toned background, drawn
from a random stream of their own, with their captions and referring expressions; and the writing of
rows into the world's TSVs. Every other part of the world (images, pairs, video, audio, ie) builds on
this module.

No (colour, shape) pair repeats within an image, so an expression such as "red circle" names exactly
one object. Every image is drawn from its own random stream keyed by (seed, split, index): the same
seed always gives byte-identical files, and train and valid never share a stream.
"""
import base64
import contextlib
import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from data.tsv import format_row
from utils.files import atomic_open

# Saturated colours, far from each other and from the grey backgrounds.
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "yellow": (240, 210, 30),
    "purple": (150, 60, 200),
}
SHAPES = ("circle", "square", "triangle")
SIZE_RANGES = {"small": (0.20, 0.27), "large": (0.36, 0.45)}  # fraction of the image side
BACKGROUNDS = ("dark", "light", "gradient")
SPLIT_STREAMS = {"train": 0, "valid": 1}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
MAX_SHAPES = 3
CIRCLE_VERTICES = 24
COLOUR_JITTER = 12
NOISE_STD = 6.0
BOX_GAP = 2  # pixels kept free between two shapes' boxes
PLACEMENT_TRIES = 50
SUPERSAMPLE = 4  # point samples per pixel and axis where shapes are drawn, for smooth edges
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Shape:
    """One drawn object: its names, its fill colour and its pixel box (x0, y0, x1, y1)."""

    colour: str
    kind: str
    size: str
    rgb: tuple
    box: tuple

    def polygon(self):
        """Outline as a flat COCO-style list: circle 24-gon, square 4 and triangle 3 vertices."""
        x0, y0, x1, y1 = self.box
        if self.kind == "square":
            points = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        elif self.kind == "triangle":
            points = [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
        else:
            cx, cy, radius = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
            angles = np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
            points = zip(cx + radius * np.cos(angles), cy + radius * np.sin(angles))
        return [round(float(v), 2) for point in points for v in point]


@dataclass(frozen=True)
class Scene:
    """The content of one image: a background kind and its shapes, sorted left to right."""

    background: str
    shapes: list


def boxes_clash(a, b):
    """True when two boxes overlap or come closer than BOX_GAP pixels."""
    return not (a[2] + BOX_GAP <= b[0] or b[2] + BOX_GAP <= a[0]
                or a[3] + BOX_GAP <= b[1] or b[3] + BOX_GAP <= a[1])


def place_shape(rng, colour, kind, placed, image_size):
    """Find a free spot for a shape, shrinking a large one to small if it does not fit."""
    preferred = ("small", "large")[rng.integers(2)]
    rgb = tuple(int(np.clip(c + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1), 0, 255))
                for c in COLOURS[colour])
    for size in (preferred, "small") if preferred == "large" else (preferred,):
        side = round(rng.uniform(*SIZE_RANGES[size]) * image_size)
        for _ in range(PLACEMENT_TRIES):
            x0, y0 = (int(v) for v in rng.integers(0, image_size - side + 1, size=2))
            box = (x0, y0, x0 + side, y0 + side)
            if not any(boxes_clash(box, other.box) for other in placed):
                return Shape(colour, kind, size, rgb, box)
    return None


def sample_scene(rng, image_size):
    """Draw a background kind and 1-3 shapes with distinct (colour, shape) pairs."""
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    pairs = [(colour, kind) for colour in COLOURS for kind in SHAPES]
    count = int(rng.integers(1, MAX_SHAPES + 1))
    shapes = []
    for pair_index in rng.choice(len(pairs), size=count, replace=False):
        shape = place_shape(rng, *pairs[pair_index], shapes, image_size)
        if shape is not None:
            shapes.append(shape)
    # Left-to-right order makes each caption a function of the image, which a demo model can learn.
    return Scene(background, sorted(shapes, key=lambda shape: shape.box[0]))


def render_background(rng, kind, image_size):
    """A dark, light or gradient grey with a slight tint and, half of the time, light noise: an
    image_size x image_size x 3 float array in [0, 255]."""
    def grey(low, high):
        return rng.uniform(low, high) + rng.uniform(-8, 8, size=3)

    dark, light = grey(15, 70), grey(175, 235)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:image_size, 0:image_size] / max(image_size - 1, 1)
        ramp = xs * np.cos(angle) + ys * np.sin(angle)
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
        pixels = dark + (light - dark) * ramp[..., None]
    else:
        pixels = np.broadcast_to(dark if kind == "dark" else light, (image_size, image_size, 3))
    if rng.random() < 0.5:
        pixels = pixels + rng.normal(0, NOISE_STD, size=pixels.shape)
    return np.clip(pixels, 0, 255)


def subsample_centres(low, high):
    """Pixels low..high-1 of one axis and the SUPERSAMPLE sample positions inside each, in pixel units."""
    return (np.arange(low * SUPERSAMPLE, high * SUPERSAMPLE) + 0.5) / SUPERSAMPLE


def shape_coverage(shape, image_size):
    """(rows, columns, coverage): the pixel window around the shape and the fraction of each of its
    pixels the shape covers (SUPERSAMPLE x SUPERSAMPLE point samples a pixel, so edges are smooth)."""
    x0, y0, x1, y1 = shape.box
    left, top = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    right, bottom = min(int(np.ceil(x1)), image_size), min(int(np.ceil(y1)), image_size)
    xs, ys = subsample_centres(left, right)[None, :], subsample_centres(top, bottom)[:, None]
    if shape.kind == "square":
        inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    elif shape.kind == "circle":
        radius = (x1 - x0) / 2
        inside = (xs - (x0 + x1) / 2) ** 2 + (ys - (y0 + y1) / 2) ** 2 <= radius ** 2
    else:  # apex at the top centre, base along the bottom edge
        half_width = (ys - y0) / (y1 - y0) * (x1 - x0) / 2
        inside = (np.abs(xs - (x0 + x1) / 2) <= half_width) & (ys >= y0) & (ys < y1)
    coverage = inside.reshape(bottom - top, SUPERSAMPLE, right - left, SUPERSAMPLE).mean(axis=(1, 3))
    return slice(top, bottom), slice(left, right), coverage[..., None]


def paint_shapes(background, shapes):
    """The shapes over a float background (H x W x 3), as a uint8 RGB array."""
    pixels = background.copy()
    for shape in shapes:
        rows, columns, coverage = shape_coverage(shape, len(pixels))
        window = pixels[rows, columns]
        pixels[rows, columns] = window + (np.array(shape.rgb) - window) * coverage
    return np.round(pixels).astype(np.uint8)


def render_image(rng, scene, image_size):
    """The scene as an RGB image."""
    return Image.fromarray(paint_shapes(render_background(rng, scene.background, image_size), scene.shapes), "RGB")


def join_with_and(phrases):
    """'a', 'a and b', 'a, b and c'."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def make_captions(scene):
    """Three lowercase captions, each listing the shapes left to right."""
    shapes = scene.shapes
    sized = join_with_and([f"a {s.size} {s.colour} {s.kind}" for s in shapes])
    plain = join_with_and([f"a {s.colour} {s.kind}" for s in shapes])
    on_background = f"on a {scene.background} background"
    count = f"{NUMBER_WORDS[len(shapes)]} shape{'s' if len(shapes) > 1 else ''}"
    located = f"there is {plain} {on_background}" if len(shapes) == 1 else f"{plain} {on_background}"
    return [sized, located, f"{count}: {plain}"]


def make_expression(rng, shape):
    """A referring expression; colour and shape alone are already unambiguous."""
    templates = ("{colour} {kind}", "the {colour} {kind}", "the {size} {colour} {kind}")
    return templates[rng.integers(len(templates))].format(
        colour=shape.colour, kind=shape.kind, size=shape.size)


def encode_jpeg_base64(image):
    """Base64 text of the image's JPEG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def format_box(box):
    """'x0,y0,x1,y1' with at most two decimals and no spaces."""
    return ",".join(f"{v:.2f}".rstrip("0").rstrip(".") for v in box)


# ---- closed-set worlds: VQA, SNLI-VE and entity recognition on the same images ------------------


def caption_rows(split, media_id, captions, media_b64):
    """UnIVAL caption rows of one image or clip: one per caption in training (``<id>-<k>``), one with
    the ``&&``-joined references for validation."""
    if split == "train":
        return [format_row([f"{media_id}-{k}", media_id, caption, "", media_b64]) for k, caption in enumerate(captions)]
    return [format_row([media_id, media_id, "&&".join(captions), "", media_b64])]


def write_rows(out_dir, split, row_groups):
    """Write row groups ({kind: lines}) as one TSV per kind, ``{kind}_{split}.tsv``, in the order given;
    returns {file name: row count}."""
    counts = {}
    with contextlib.ExitStack() as stack:
        handles = {}
        for rows in row_groups:
            for kind, lines in rows.items():
                name = f"{kind}_{split}.tsv"
                if name not in handles:
                    handles[name] = stack.enter_context(atomic_open(os.path.join(out_dir, name)))
                handles[name].writelines(lines)
                counts[name] = counts.get(name, 0) + len(lines)
    return counts
