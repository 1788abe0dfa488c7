"""The demo world's pairs of scenes, as rows of the multi-image tasks.

Pair k of a split is its images 2k and 2k + 1 (already drawn for the one-image files). Its rows:
- ``nlvr``: uniq-id, pair-id, statement, label (true / false), the images as a JSON list: three statements
  (a colour or shape both images show, how their shape counts compare, what one image shows), each true
  for about half of the pairs;
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


def pick(rng, true, holding, failing):
    """An item of ``holding`` (a statement about it holds) when ``true``, else of ``failing``, or of the other
    set when that one is empty; and whether the statement about it holds. Items are sorted first, so a
    pair's statements depend only on its random stream."""
    chosen = holding if (true and holding) or not failing else failing
    items = sorted(chosen)
    return items[rng.integers(len(items))], chosen is holding


def both_statement(rng, scenes, true):
    """A colour or a kind of shape that both images show (``true``) or that only one of them shows."""
    if rng.random() < 0.5:
        shown = [{colour for colour, _ in kinds_of(scene)} for scene in scenes]
        words = "both images show a {} shape"
    else:
        shown = [{shape for _, shape in kinds_of(scene)} for scene in scenes]
        words = "both images show a {}"
    item, holds = pick(rng, true, shown[0] & shown[1], shown[0] ^ shown[1])
    return words.format(item), holds


def count_statement(rng, scenes, true):
    """How the images' shape counts compare: as they do (``true``), or one of the two other ways."""
    first, second = (len(scene.shapes) for scene in scenes)
    claims = {"more": first > second, "fewer": first < second, "as many": first == second}
    claim = [c for c, holds in claims.items() if holds == true][rng.integers(1 if true else 2)]
    if claim == "as many":
        return "<image_1> and <image_2> show as many shapes", true
    return f"<image_1> shows {claim} shapes than <image_2>", true


def shows_statement(rng, scenes, true):
    """A colour and shape that image k shows (``true``) or not; half of the false ones the other image shows,
    so that which image is meant matters."""
    k = int(rng.integers(2))
    kinds = [kinds_of(scene) for scene in scenes]
    absent = set(COLOURS_AND_SHAPES) - kinds[k]
    if not true and rng.random() < 0.5 and kinds[1 - k] - kinds[k]:
        absent = kinds[1 - k] - kinds[k]
    (colour, shape), holds = pick(rng, true, kinds[k], absent)
    return f"<image_{k + 1}> shows a {colour} {shape}", holds


NLVR_STATEMENTS = (both_statement, count_statement, shows_statement)


def nlvr_statements(rng, scenes):
    """(statement, true or false) of each kind about the two scenes, each kind true for half of the pairs
    where the scenes allow it, so the words alone do not tell the label."""
    return [statement(rng, scenes, bool(rng.random() < 0.5)) for statement in NLVR_STATEMENTS]


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
    statements = nlvr_statements(rng, scenes)
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
    nlvr_lines = [format_row([f"{pair_id}-{k}", pair_id, statement, str(true).lower(), images])
                  for k, (statement, true) in enumerate(statements)]
    return {"nlvr": nlvr_lines,
            "multi_image_qa": qa_lines, "multi_image_refcoco": refcoco_lines}
