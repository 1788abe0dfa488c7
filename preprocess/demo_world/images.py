"""The image world's rows: captions, refcoco and refseg regions, VQA questions, SNLI-VE pairs, landmark
entities (and their catalogue), and, from pairs of consecutive images, the multi-image tasks' rows.

uniq_ids: per-image rows use the image id (``demo-train-000123``); per-caption and per-shape rows
append the caption or shape index (``demo-train-000123-0``).
"""
import json
import os

import numpy as np

from data.tsv import format_row
from preprocess.demo_world import pairs
from preprocess.demo_world.scenes import (COLOURS, NUMBER_WORDS, SHAPES, SPLIT_STREAMS, caption_rows, encode_jpeg_base64,
                                          format_box, make_captions, make_expression, render_image, sample_scene,
                                          write_rows)
from utils.files import atomic_open

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


def write_split(out_dir, split, num_images, image_size, seed):
    """Write the image world's TSVs of a split; returns {file name: row count}. Images 2k and 2k + 1 also
    make pair k of the multi-image files (pairs.py)."""

    def groups():
        previous = None
        for index in range(num_images):
            rows, drawn = sample_rows(split, index, image_size, seed)
            if index % 2:
                rows.update(pairs.pair_rows(split, index // 2, previous, drawn, seed))
            previous = drawn
            yield rows

    return write_rows(out_dir, split, groups())
