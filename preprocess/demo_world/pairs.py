"""The demo world's pairs of scenes, as rows of the multi-image tasks.

Pair k of a split is its images 2k and 2k + 1 (already drawn for the one-image files). Its rows:
- ``nlvr``: uniq-id, pair-id, statement, label (true / false), the images as a JSON list;
- ``multi_image_qa``: question-id, pair-id, question, answers, objects, the images (the vqa layout);
- ``multi_image_refcoco``: uniq-id, pair-id, expression, box, the images, the 1-based image the box is
  in: one row per shape whose colour and kind only one of the two images shows.
Statements and questions name images by ``<image_1>`` and ``<image_2>`` markers. Each pair draws from
its own random stream keyed by (seed, split, pair), apart from the streams of the images.
"""
import json

import numpy as np

from data.tsv import format_row
from preprocess.demo_world.scenes import COLOURS, SHAPES, SPLIT_STREAMS, format_box, make_expression

PAIR_STREAM = 2  # third key of a pair's stream: the images' streams have two
COLOURS_AND_SHAPES = [(colour, shape) for colour in COLOURS for shape in SHAPES]
WHICH_IMAGE = {(True, False): "first", (False, True): "second", (True, True): "both"}


def kinds_of(scene):
    return {(s.colour, s.kind) for s in scene.shapes}


def nlvr_statement(rng, scenes):
    """(statement, true or false) about the two scenes, of one of three kinds drawn at random."""
    kinds = [kinds_of(scene) for scene in scenes]
    kind = rng.integers(3)
    if kind == 0:
        colour, shape = sorted(kinds[0])[rng.integers(len(kinds[0]))]
        return f"both images show a {colour} {shape}", (colour, shape) in kinds[1]
    if kind == 1:
        first, second = (len(scene.shapes) for scene in scenes)
        if first == second:
            return "<image_1> and <image_2> show as many shapes", True
        claim = ("more", "fewer")[rng.integers(2)]
        return f"<image_1> shows {claim} shapes than <image_2>", (first > second) == (claim == "more")
    k = int(rng.integers(2))
    colour, shape = COLOURS_AND_SHAPES[rng.integers(len(COLOURS_AND_SHAPES))]
    if rng.random() < 0.5:  # half of these name a shape the image does show
        colour, shape = sorted(kinds[k])[rng.integers(len(kinds[k]))]
    return f"<image_{k + 1}> shows a {colour} {shape}", (colour, shape) in kinds[k]


def pair_questions(rng, scenes):
    """Two (question, {answer: confidence}) pairs about the two scenes."""
    kinds = [kinds_of(scene) for scene in scenes]
    total = sum(len(scene.shapes) for scene in scenes)
    pool = [("how many shapes do the two images show?", {str(total): 1.0})]
    for colour, shape in sorted(kinds[0] | kinds[1]):
        pool.append((f"which image shows the {colour} {shape}?",
                     {WHICH_IMAGE[((colour, shape) in kinds[0], (colour, shape) in kinds[1])]: 1.0}))
    for k, scene in enumerate(scenes):
        pool.append((f"how many shapes does <image_{k + 1}> show?", {str(len(scene.shapes)): 1.0}))
    return [pool[i] for i in rng.permutation(len(pool))[:2]]


def pair_rows(split, pair, first, second, seed):
    """TSV lines of a pair of (scene, base64 JPEG) for the nlvr, multi_image_qa and multi_image_refcoco files."""
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split], pair, PAIR_STREAM])
    scenes = (first[0], second[0])
    images = json.dumps([first[1], second[1]])
    pair_id = f"demo-{split}-pair-{pair:06d}"
    statement, true = nlvr_statement(rng, scenes)
    questions = pair_questions(rng, scenes)
    objects = "&&".join(f"{s.colour} {s.kind}" for scene in scenes for s in scene.shapes)
    qa_lines = [format_row([f"{pair_id}-{k}", pair_id, question,
                            "&&".join(f"{conf:.1f}|!+{answer}" for answer, conf in answers.items()), objects, images])
                for k, (question, answers) in enumerate(questions)]
    kinds = [kinds_of(scene) for scene in scenes]
    refcoco_lines = [format_row([f"{pair_id}-{k}-{n}", pair_id, make_expression(rng, shape), format_box(shape.box),
                                 images, k + 1])
                     for k, scene in enumerate(scenes) for n, shape in enumerate(scene.shapes)
                     if (shape.colour, shape.kind) not in kinds[1 - k]]
    return {"nlvr": [format_row([pair_id, pair_id, statement, str(true).lower(), images])],
            "multi_image_qa": qa_lines, "multi_image_refcoco": refcoco_lines}
