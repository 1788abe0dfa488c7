"""Generate a small synthetic world of coloured shapes as caption, refcoco and region TSVs (and, from pairs
of its images, the multi-image nlvr, multi_image_qa and multi_image_refcoco TSVs).

Each image holds 1 to 3 non-overlapping shapes on a grey-toned background. No (colour, shape)
pair repeats within an image, so an expression such as "red circle" names exactly one object.
Every image is drawn from its own random stream keyed by (seed, split, index): the same seed
always gives byte-identical files, and train and valid never share a stream.

uniq_ids: per-image rows use the image id (``demo-train-000123``); per-caption and per-shape
rows append the caption or shape index (``demo-train-000123-0``).
"""
import argparse
import base64
import contextlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.tsv import format_row  # noqa: E402
from utils.files import atomic_open  # noqa: E402

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

SHAPE_SYNONYMS = {"circle": "round", "square": "rectangle"}  # a second, less trusted VQA answer
NEUTRAL_MATERIALS = ("wood", "metal", "glass", "paper")
NEUTRAL_QUALITIES = ("heavy", "new", "expensive", "old")
# Every (colour, shape) pair is a made-up landmark: "<colour word> <shape word>".
LANDMARK_COLOURS = {"red": "scarlet", "green": "emerald", "blue": "azure", "yellow": "amber", "purple": "violet"}
LANDMARK_SHAPES = {"circle": "dome", "square": "gate", "triangle": "spire"}
UNSEEN_LANDMARKS = {("purple", "triangle"), ("green", "circle"), ("yellow", "square")}  # never in training rows
CATALOGUE_FILE = "entities.tsv"
POSITION_WORDS = {(2, 0): "on the left", (2, 1): "on the right",
                  (3, 0): "on the left", (3, 1): "in the middle", (3, 2): "on the right"}


def landmark_id(colour, kind):
    return f"landmark-{colour}-{kind}"


def catalogue_entries():
    """(id, name, description, aliases) of the demo catalogue: one landmark per (colour, shape) pair, each
    with two aliases, then distractors whose names extend or share a landmark's first words. The
    descriptions say what each looks like, which retrieval's entity embeddings read."""
    entries = []
    for colour, word in LANDMARK_COLOURS.items():
        for kind, shape_word in LANDMARK_SHAPES.items():
            entries.append((landmark_id(colour, kind), f"{word} {shape_word}",
                            f"a {colour} {kind} drawn on a plain background",
                            (f"{colour} {kind} landmark", f"the {shape_word} of {word}")))
    for colour, word in LANDMARK_COLOURS.items():
        for kind, shape_word in LANDMARK_SHAPES.items():
            entries.append((f"tower-{colour}-{kind}", f"{word} {shape_word} tower",
                            f"a tall {colour} tower beside a {kind}, never drawn in the images",
                            (f"{word} tower of {kind}s",)))
        entries.append((f"dunes-{colour}", f"{word} dunes", f"{colour} sand dunes, never drawn in the images", ()))
    return entries


def write_catalogue(out_dir):
    """Write the demo entity catalogue (TSV: id, name, description, alias&&alias); returns {file: rows}."""
    entries = catalogue_entries()
    with atomic_open(os.path.join(out_dir, CATALOGUE_FILE)) as f:
        f.writelines(format_row([i, name, description, "&&".join(aliases)])
                     for i, name, description, aliases in entries)
    return {CATALOGUE_FILE: len(entries)}


def vqa_questions(rng, scene):
    """Two (question, {answer: confidence}) pairs about the scene, of different kinds."""
    shapes = scene.shapes
    count = len(shapes)
    kinds = [s.kind for s in shapes]
    colours = [s.colour for s in shapes]
    pool = [("how many shapes are there?", {NUMBER_WORDS[count]: 1.0, str(count): 0.3}),
            ("what is the background like?", {scene.background: 1.0})]
    for shape in shapes:
        if kinds.count(shape.kind) == 1:
            pool.append((f"what color is the {shape.kind}?", {shape.colour: 1.0}))
        if colours.count(shape.colour) == 1:
            answers = {shape.kind: 1.0}
            if shape.kind in SHAPE_SYNONYMS:
                answers[SHAPE_SYNONYMS[shape.kind]] = 0.3
            pool.append((f"what shape is the {shape.colour} object?", answers))
    present = {(s.colour, s.kind) for s in shapes}
    if rng.random() < 0.5:
        shape = shapes[rng.integers(count)]
        pool.append((f"is there a {shape.colour} {shape.kind}?", {"yes": 1.0}))
    else:
        absent = [(c, k) for c in COLOURS for k in SHAPES if (c, k) not in present]
        colour, kind = absent[rng.integers(len(absent))]
        pool.append((f"is there a {colour} {kind}?", {"no": 1.0}))
    return [pool[i] for i in rng.permutation(len(pool))[:2]]


def snli_ve_pair(rng, scene, captions):
    """(hypothesis, premise, label): a true, false or undecidable statement about the scene."""
    shapes = scene.shapes
    label = ("entailment", "neutral", "contradiction")[rng.integers(3)]
    shape = shapes[rng.integers(len(shapes))]
    if label == "entailment":
        hypothesis = f"there is a {shape.colour} {shape.kind}"
    elif label == "neutral":
        if rng.random() < 0.5:
            hypothesis = f"the {shape.colour} {shape.kind} is made of {NEUTRAL_MATERIALS[rng.integers(4)]}"
        else:
            hypothesis = f"the {shape.colour} {shape.kind} is {NEUTRAL_QUALITIES[rng.integers(4)]}"
    else:
        present = {(s.colour, s.kind) for s in shapes}
        absent = [(c, k) for c in COLOURS for k in SHAPES if (c, k) not in present]
        colour, kind = absent[rng.integers(len(absent))]
        hypothesis = f"there is a {colour} {kind}"
    return hypothesis, captions[rng.integers(len(captions))], label


def entity_row(rng, split, scene):
    """(question, annotation) naming one shape's landmark; training rows avoid the unseen landmarks
    (None when the image shows only those)."""
    shapes = scene.shapes
    k = int(rng.integers(len(shapes)))
    if split == "train":
        allowed = [i for i, s in enumerate(shapes) if (s.colour, s.kind) not in UNSEEN_LANDMARKS]
        if not allowed:
            return None
        if k not in allowed:
            k = allowed[0]
    shape = shapes[k]
    question = "" if len(shapes) == 1 else f"which landmark is {POSITION_WORDS[(len(shapes), k)]}?"
    annotation = {"entity_id": landmark_id(shape.colour, shape.kind)}
    if split != "train":
        annotation["seen"] = (shape.colour, shape.kind) not in UNSEEN_LANDMARKS
    return question, annotation


def closed_set_rows(rng, split, image_id, image_b64, scene, captions):
    """TSV lines of one image for the vqa, snli_ve and entity files (drawn after every other row's draws)."""
    objects = "&&".join(f"{s.colour} {s.kind}" for s in scene.shapes)
    vqa_lines = [format_row([f"{image_id}-{k}", image_id, question,
                             "&&".join(f"{conf:.1f}|!+{answer}" for answer, conf in answers.items()),
                             objects, image_b64])
                 for k, (question, answers) in enumerate(vqa_questions(rng, scene))]
    hypothesis, premise, label = snli_ve_pair(rng, scene, captions)
    snli_lines = [format_row([image_id, image_id, image_b64, hypothesis, premise, label])]
    entity = entity_row(rng, split, scene)
    entity_lines = []
    if entity is not None:
        question, annotation = entity
        entity_lines.append(format_row([image_id, image_b64, "", "", question,
                                        json.dumps(annotation, separators=(",", ":"))]))
    return {"vqa": vqa_lines, "snli_ve": snli_lines, "entity": entity_lines}


def caption_rows(split, media_id, captions, media_b64):
    """UnIVAL caption rows of one image or clip: one per caption in training (``<id>-<k>``), one with
    the ``&&``-joined references for validation."""
    if split == "train":
        return [format_row([f"{media_id}-{k}", media_id, caption, "", media_b64]) for k, caption in enumerate(captions)]
    return [format_row([media_id, media_id, "&&".join(captions), "", media_b64])]


def sample_rows(split, index, image_size, seed):
    """TSV lines of one image for the caption, refcoco and regions files, and the (scene, base64 JPEG)
    drawn."""
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split], index])
    scene = sample_scene(rng, image_size)
    image_b64 = encode_jpeg_base64(render_image(rng, scene, image_size))
    image_id = f"demo-{split}-{index:06d}"
    captions = make_captions(scene)
    expressions = [make_expression(rng, shape) for shape in scene.shapes]

    caption_lines = caption_rows(split, image_id, captions, image_b64)
    refcoco_lines = [format_row([f"{image_id}-{k}", image_id, text, format_box(shape.box), image_b64])
                     for k, (text, shape) in enumerate(zip(expressions, scene.shapes))]
    regions = [{"text": text, "box": list(shape.box), "polygons": [shape.polygon()]}
               for text, shape in zip(expressions, scene.shapes)]
    annotation = json.dumps({"regions": regions}, separators=(",", ":"))
    region_lines = [format_row([image_id, image_b64, "", "", "", annotation])]
    refseg_lines = [format_row([f"{image_id}-{k}", image_b64, "", "", text, json.dumps(
                        {"regions": [{"polygons": [shape.polygon()]}]}, separators=(",", ":"))])
                    for k, (text, shape) in enumerate(zip(expressions, scene.shapes))]
    return {"caption": caption_lines, "refcoco": refcoco_lines, "regions": region_lines, "refseg": refseg_lines,
            **closed_set_rows(rng, split, image_id, image_b64, scene, captions)}, (scene, image_b64)


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


def write_split(out_dir, split, num_images, image_size, seed):
    """Write the image world's TSVs of a split; returns {file name: row count}. Images 2k and 2k + 1 also
    make pair k of the multi-image files (preprocess/demo_pairs.py)."""
    from preprocess import demo_pairs  # builds on this module's scenes

    def groups():
        previous = None
        for index in range(num_images):
            rows, drawn = sample_rows(split, index, image_size, seed)
            if index % 2:
                rows.update(demo_pairs.pair_rows(split, index // 2, previous, drawn, seed))
            previous = drawn
            yield rows

    return write_rows(out_dir, split, groups())


def write_clip_split(out_dir, split, num_videos, num_audio, video_size, video_fps, seed):
    """Write the video and audio worlds' TSVs of a split; returns {file name: row count}.

    Both worlds' temporal grounding rows share ``temporal_{split}.tsv``, interleaved clip by clip
    (video clip i, then audio clip i).
    """
    # Imported here: both modules build on this one's vocabulary and drawing.
    from preprocess import demo_audio, demo_video

    def clips():
        for index in range(max(num_videos, num_audio)):
            if index < num_videos:
                yield demo_video.clip_rows(split, index, video_size, video_fps, seed)
            if index < num_audio:
                yield demo_audio.clip_rows(split, index, seed)

    return write_rows(out_dir, split, clips())


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="dataset/demo", help="output folder")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--valid-images", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=128, help="side of the square images")
    parser.add_argument("--train-videos", type=int, default=400, help="clips of the video world (0: none)")
    parser.add_argument("--valid-videos", type=int, default=50)
    parser.add_argument("--train-audio", type=int, default=400, help="clips of the audio world (0: none)")
    parser.add_argument("--valid-audio", type=int, default=50)
    parser.add_argument("--video-size", type=int, default=64, help="side of the square video frames")
    parser.add_argument("--video-fps", type=int, default=8, help="frames per second of the videos")
    parser.add_argument("--train-ie", type=int, default=500,
                        help="samples per IE subtask (ner, re, ee) over every modality mix (0: none)")
    parser.add_argument("--valid-ie", type=int, default=60)
    args = parser.parse_args(argv)
    if args.image_size < 16:
        parser.error("--image-size must be at least 16")
    if args.video_size < 16 or args.video_size % 2:
        parser.error("--video-size must be even (H.264 4:2:0) and at least 16")
    if args.video_fps < 1:
        parser.error("--video-fps must be at least 1")
    for flag in ("train_videos", "valid_videos", "train_audio", "valid_audio", "train_ie", "valid_ie"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must not be negative")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    counts = {}
    for split, num_images in (("train", args.train_images), ("valid", args.valid_images)):
        counts.update(write_split(args.out, split, num_images, args.image_size, args.seed))
    for split in ("train", "valid"):
        counts.update(write_clip_split(args.out, split, getattr(args, f"{split}_videos"),
                                       getattr(args, f"{split}_audio"), args.video_size, args.video_fps, args.seed))
    from preprocess import demo_ie  # builds on this module and the video and audio worlds
    for split in ("train", "valid"):
        counts.update(demo_ie.write_ie_split(args.out, split, getattr(args, f"{split}_ie"), args.image_size,
                                             args.video_size, args.video_fps, args.seed))
    counts.update(write_catalogue(args.out))
    summary = ", ".join(f"{name} {rows}" for name, rows in counts.items())
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f}s (rows): {summary}")


if __name__ == "__main__":
    main()
