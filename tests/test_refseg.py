"""Referring segmentation: masks as polygon tokens, the polygon-syntax constraint, mask metrics, bad rows."""
import json
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from scipy import ndimage

from data.errors import BadInputError
from helpers import build_model, build_task, losses_over_steps, read_lines, set_cell, validated, write_tsv
from preprocess import coco_to_tsv
from geometry.codec import LocationCodec
from decoding.polygon import PolygonSyntax, canonical_polygon
from geometry.masks import MaskError, decode_rle, encode_rle, mask_to_polygons
from evaluation.metrics import overlap_scores, segmentation_scores

from conftest import SHARED_DATA

# pycocotools' decode trips a numpy 2 deprecation inside the library itself.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

COCO_MINI = Path(SHARED_DATA, "coco-mini")
needs_coco = pytest.mark.skipif(not COCO_MINI.is_dir(), reason="coco-mini is not available")
ANNOTATION, TEXT, IMAGE = 6, 5, 2  # 1-based TSV columns of the generic layout


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def syntax_ok(tokens, vocab, max_vertices):
    """An independent check of the polygon grammar on a token id list (no EOS)."""
    groups = []
    for t in tokens:
        if t == vocab.poly:
            groups.append(0)
        elif vocab.to_bin(t) is not None and groups:
            groups[-1] += 1
        else:
            return False
    return bool(groups) and all(n % 2 == 0 and 6 <= n <= 2 * max_vertices for n in groups)


# ---- masks and polygons ------------------------------------------------------------------------


def test_traced_outlines_rasterise_back_to_the_mask():
    codec = LocationCodec()
    rectangle = np.zeros((5, 6), bool)
    rectangle[1:3, 2:5] = True
    assert mask_to_polygons(rectangle) == [[2, 1, 5, 1, 5, 3, 2, 3]]
    rng = np.random.default_rng(0)
    for _ in range(10):
        blobs = ndimage.binary_fill_holes(ndimage.gaussian_filter(rng.random((60, 80)), 3) > 0.52)
        polygons = mask_to_polygons(blobs)
        assert len(polygons) == ndimage.label(blobs)[1] > 1
        assert np.array_equal(codec.rasterize(polygons, 80, 60), blobs)
        areas = [codec.rasterize([p], 80, 60).sum() for p in polygons]
        assert areas == sorted(areas, reverse=True)


def test_diagonal_neighbours_are_separate_parts_and_holes_are_filled():
    diagonal = np.zeros((4, 4), bool)
    diagonal[0, 0] = diagonal[1, 1] = True
    assert sorted(mask_to_polygons(diagonal)) == [[0, 0, 1, 0, 1, 1, 0, 1], [1, 1, 2, 1, 2, 2, 1, 2]]
    ring = np.ones((5, 5), bool)
    ring[2, 2] = False
    assert mask_to_polygons(ring) == [[0, 0, 5, 0, 5, 5, 0, 5]]
    assert mask_to_polygons(np.zeros((3, 3), bool)) == []
    assert len(mask_to_polygons(np.eye(6, dtype=bool), max_polygons=2)) == 2


def test_rle_decoding_checks_the_runs():
    rng = np.random.default_rng(1)
    mask = ndimage.gaussian_filter(rng.random((37, 53)), 1.5) > 0.5
    rle = encode_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [37, 53]
    assert np.array_equal(decode_rle(rle, 37, 53), mask)
    flat = np.concatenate([[False], mask.ravel(order="F")])
    runs = np.diff(np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]), [mask.size]])).tolist()
    assert np.array_equal(decode_rle({"size": [37, 53], "counts": runs}), mask)
    bad = [{"size": [5, 6], "counts": ""},           # pycocotools would read uninitialised memory
           {"size": [5, 6], "counts": "0"},
           {"size": [5, 6], "counts": "abc"},        # ends inside a number
           {"size": [5, 6], "counts": ";2300045"},   # runs cover 37 pixels
           {"size": [5, 6], "counts": [3, 100]},
           {"size": [5, 6], "counts": [-1, 31]},
           {"size": [5, 6], "counts": [30.0]},
           {"size": [5], "counts": [30]},
           {"counts": [30]}]
    for rle in bad:
        with pytest.raises(MaskError):
            decode_rle(rle)
    with pytest.raises(MaskError, match="differs"):
        decode_rle({"size": [5, 6], "counts": [30]}, 6, 5)


@needs_coco
def test_polygon_tokens_agree_with_pycocotools_on_coco_masks():
    """COCO polygons -> bins (32 vertices, 1000 bins) -> pixels -> mask, against pycocotools' own mask."""
    data = json.loads((COCO_MINI / "instances.json").read_text(encoding="utf-8"))
    sizes = {image["id"]: (image["width"], image["height"]) for image in data["images"]}
    codec = LocationCodec(num_bins=1000, max_poly_vertices=32)
    polygon_ious, crowd_ious = [], []
    for annotation in data["annotations"]:
        width, height = sizes[annotation["image_id"]]
        segmentation = annotation["segmentation"]
        rles = mask_utils.frPyObjects(segmentation, height, width)
        reference = mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles).astype(bool)
        polygons = mask_to_polygons(reference) if annotation["iscrowd"] else segmentation
        bins = codec.encode_polygons(polygons, width, height)
        assert all(len(p) <= 64 for p in bins)
        decoded = codec.rasterize(codec.decode_polygons(bins, width, height), width, height)
        (crowd_ious if annotation["iscrowd"] else polygon_ious).append(iou(decoded, reference))
    print(f"pycocotools agreement: mean IoU {np.mean(polygon_ious):.4f} over {len(polygon_ious)} polygon masks, "
          f"{np.mean(crowd_ious):.4f} over {len(crowd_ious)} crowd RLE masks")
    assert len(polygon_ious) > 300 and len(crowd_ious) == 5
    assert np.mean(polygon_ious) >= 0.9 and np.median(polygon_ious) >= 0.95
    assert np.mean(crowd_ious) >= 0.9


# ---- metrics -----------------------------------------------------------------------------------


def test_segmentation_scores_on_hand_made_masks():
    def block(rows, cols):
        m = np.zeros((10, 10), bool)
        m[rows, cols] = True
        return m

    predicted = [block(slice(0, 4), slice(0, 4)), block(slice(0, 0), slice(0, 0)), block(slice(5, 7), slice(0, 5))]
    reference = [block(slice(0, 4), slice(0, 2)), block(slice(7, 10), slice(7, 10)), block(slice(5, 7), slice(0, 5))]
    # intersections 8, 0, 10; unions 16, 9, 10; IoUs 0.5, 0, 1
    scores = segmentation_scores(predicted, reference)
    assert scores["cIoU"] == pytest.approx(18 / 35)
    assert scores["mIoU"] == pytest.approx(0.5)
    assert scores["acc@0.5"] == pytest.approx(2 / 3)
    assert overlap_scores([8, 0, 10], [16, 9, 10]) == scores
    assert overlap_scores([0], [0]) == {"cIoU": 0.0, "mIoU": 0.0, "acc@0.5": 0.0}


# ---- the constraint ----------------------------------------------------------------------------


BINS, POLY, EOS, VOCAB = 10, 12, 2, 16  # bins are ids 0..9


def allowed_ids(constraint, prefix):
    mask = constraint.allowed(torch.tensor([prefix], dtype=torch.long).reshape(1, -1), torch.tensor([0]))
    return set(torch.nonzero(mask[0]).flatten().tolist())


def test_polygon_syntax_states():
    constraint = PolygonSyntax(0, BINS, POLY, EOS, VOCAB, max_vertices=4)
    bins = set(range(BINS))
    assert allowed_ids(constraint, []) == {POLY}
    for k in range(1, 6):
        assert allowed_ids(constraint, [POLY] + [3] * k) == bins  # fewer than 3 vertices, or an open pair
    assert allowed_ids(constraint, [POLY] + [3] * 6) == bins | {POLY, EOS}
    assert allowed_ids(constraint, [POLY] + [3] * 7) == bins
    assert allowed_ids(constraint, [POLY] + [3] * 8) == {POLY, EOS}  # 4 vertices: the budget
    assert allowed_ids(constraint, [POLY] + [3] * 8 + [POLY]) == bins


def test_polygon_syntax_closes_polygons_within_the_length_budget():
    constraint = PolygonSyntax(0, BINS, POLY, EOS, VOCAB, max_vertices=32, max_length=10)
    bins = set(range(BINS))
    assert allowed_ids(constraint, [POLY] + [1] * 6) == bins | {EOS}  # no room for another polygon
    assert allowed_ids(constraint, [POLY] + [1] * 7) == bins           # the pair must be finished
    assert allowed_ids(constraint, [POLY] + [1] * 8) == {EOS}          # an extra pair would not fit
    assert allowed_ids(PolygonSyntax(0, BINS, POLY, EOS, VOCAB, 4, max_length=5), []) == {EOS}
    # batched: each row has its own state
    prefixes = torch.tensor([[POLY, 1, 1, 1, 1], [POLY, 1, 1, 1, 1]])
    prefixes[1, 4] = POLY
    mask = constraint.allowed(prefixes, torch.tensor([0, 1]))
    assert mask[0].nonzero().flatten().tolist() == list(range(BINS))
    assert mask[1].nonzero().flatten().tolist() == [EOS]  # the second row's polygon of 1 pair cannot close in 5


def test_training_masks_allow_every_gold_token():
    constraint = PolygonSyntax(0, BINS, POLY, EOS, VOCAB, max_vertices=4, max_length=20)
    target = torch.tensor([[POLY, 1, 2, 3, 4, 5, 6, POLY, 7, 8, 9, 1, 2, 3, 4, 5, EOS],
                           [POLY, 1, 2, 3, 4, 5, 6, EOS, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
    target[1, 8:] = 1  # the padding id: whatever its masks, they must not be empty
    masks = constraint.training_masks(target)
    assert masks.shape == (2, 17, VOCAB)
    assert masks[0].gather(1, target[0, :, None]).all()
    assert masks[1, :8].gather(1, target[1, :8, None]).all()
    assert masks.any(-1).all()


# ---- the task ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_task(demo_dir, vocab_dir):
    task = build_task("refseg", f"{demo_dir}/refseg_valid.tsv", vocab_dir)
    task.load_dataset("valid")
    return task


def test_demo_rows_hold_one_shape_each_like_refcoco(demo_dir):
    for split in ("train", "valid"):
        refseg = [r.split("\t") for r in read_lines(demo_dir / f"refseg_{split}.tsv")]
        refcoco = [r.split("\t") for r in read_lines(demo_dir / f"refcoco_{split}.tsv")]
        assert len(refseg) == len(refcoco)
        for seg, box in zip(refseg, refcoco):
            assert len(seg) == 6 and seg[0] == box[0] and seg[4] == box[2] and seg[1] == box[4]
            assert seg[2] == seg[3] == ""
            (region,) = json.loads(seg[5])["regions"]
            (polygon,) = region["polygons"]
            xs, ys = polygon[0::2], polygon[1::2]
            extent = [min(xs), min(ys), max(xs), max(ys)]
            assert extent == pytest.approx([float(v) for v in box[3].split(",")], abs=0.01)


def test_samples_and_gold_targets_decode_to_the_reference_mask(valid_task):
    dataset, vocab = valid_task.dataset("valid"), valid_task.vocab
    sample = dataset[0]
    assert sample["source"][-1] == vocab.dictionary.eos()
    assert vocab.decode_text(sample["source"].tolist()).startswith("which region does the text")
    assert sample["image"].shape == (3, 64, 64)
    eos = vocab.dictionary.eos()
    ious = []
    for i in range(len(dataset)):
        sample = dataset[i]
        tokens = sample["target"].tolist()
        assert tokens[-1] == eos and syntax_ok(tokens[:-1], vocab, 32)
        prediction = valid_task.decode_prediction(tokens[:-1], sample["meta"])
        assert not prediction["malformed"]
        json.dumps(prediction)  # JSON-ready
        ious.append(prediction["iou"])
    # demo shapes are at most 24-gons at 64 pixels: the gold polygons redraw them almost exactly
    assert min(ious) >= 0.9 and np.mean(ious) >= 0.97, ious


def test_canonical_polygon_is_one_sequence_per_outline():
    square = [10, 10, 30, 10, 30, 30, 10, 30]  # clockwise on screen from the top-left
    area, bins = canonical_polygon(square)
    assert (area, bins) == (400, square)
    points = np.array(square).reshape(-1, 2)
    for shift in range(4):
        for ring in (np.roll(points, shift, axis=0), np.roll(points[::-1], shift, axis=0)):
            assert canonical_polygon(ring.ravel().tolist()) == (400, square)


def region_row(row, polygons=None, rle=None, text=None):
    regions = ([{"polygons": polygons}] if polygons else []) + ([{"rle": rle}] if rle else [])
    row = set_cell(row, ANNOTATION, json.dumps({"regions": regions}))
    return row if text is None else set_cell(row, TEXT, text)


def test_parts_rle_regions_and_the_length_budget(demo_dir, vocab_dir, tmp_path):
    """Several parts are written largest first; an RLE region is traced; none is dropped."""
    (row,) = read_lines(demo_dir / "refseg_valid.tsv", 1)
    big, middle, small = [4, 4, 40, 4, 40, 30, 4, 30], [44, 40, 60, 40, 60, 60, 44, 60], [2, 50, 10, 50, 6, 58]
    blob = np.zeros((64, 64), bool)
    blob[40:48, 8:24] = True  # 16 x 8, between the middle and the small part
    rows = [region_row(row, [small, big, middle]), region_row(row, [small, big], encode_rle(blob))]
    path = write_tsv(tmp_path / "parts.tsv", rows)
    task = build_task("refseg", path, vocab_dir)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    first = dataset[0]["target"].tolist()[:-1]
    polygons = task.split_polygons(first)
    assert [len(p) for p in polygons] == [8, 8, 6]
    assert task.codec.decode_polygons(polygons, 64, 64)[0][:2] == pytest.approx([4, 4], abs=0.04)
    second = task.split_polygons(dataset[1]["target"].tolist()[:-1])
    assert [len(p) for p in second] == [8, 8, 6]  # big, the traced 16 x 8 blob, small
    assert task.codec.decode_polygons([second[1]], 64, 64)[0] == pytest.approx(
        [8, 40, 24, 40, 24, 48, 8, 48], abs=0.04)
    assert task.decode_prediction(first, dataset[0]["meta"])["iou"] == pytest.approx(1.0, abs=0.02)

    # unset, the limit is sized to the longest target: <poly> + 4 vertices twice, the triangle, EOS
    assert task.cfg.max_tgt_length == 9 + 9 + 7 + 1
    # set below it, both rows are refused, counted, rather than a part cut
    tight = build_task("refseg", path, vocab_dir, max_tgt_length=25)
    with pytest.raises(ValueError, match=rf"{path}: 2 of 2 rows need more than --max-tgt-length 25 target tokens "
                                         rf"\(the longest needs 26\); raise --max-tgt-length"):
        tight.load_dataset("valid")
    # a set limit that cannot hold a polygon of --max-poly-vertices shrinks the vertex budget
    assert build_task("refseg", path, vocab_dir, max_tgt_length=9).max_vertices == 3
    with pytest.raises(ValueError, match="cannot hold one polygon"):
        build_task("refseg", path, vocab_dir, max_tgt_length=7)


def test_flipped_training_sample_mirrors_the_polygon(demo_dir, vocab_dir, tmp_path):
    (row,) = read_lines(demo_dir / "refseg_valid.tsv", 1)
    path = write_tsv(tmp_path / "flip.tsv", [region_row(row, [[4, 4, 40, 4, 20, 30]])])
    task = build_task("refseg", path, vocab_dir, hflip_prob=1.0)
    task.load_dataset("train")
    (polygon,) = task.split_polygons(task.dataset("train")[0]["target"].tolist()[:-1])
    # mirrored: (60, 4), (24, 4), (44, 30); written clockwise from the top-left one
    assert task.codec.decode_polygons([polygon], 64, 64)[0] == pytest.approx([24, 4, 60, 4, 44, 30], abs=0.04)


def test_malformed_outputs_are_empty_masks_and_counted(valid_task):
    vocab, meta = valid_task.vocab, valid_task.dataset("valid")[0]["meta"]
    b = vocab.bin_ids
    text = vocab.encode_text("red")[0]
    malformed = [
        [],
        b([1, 2, 3, 4, 5, 6]),                               # no <poly>
        [vocab.poly] + b([1, 2, 3, 4, 5]),                   # odd number of bins
        [vocab.poly] + b([1, 2, 3, 4]),                      # two vertices
        [vocab.poly] + b([1, 2, 3, 4, 5, 6]) + [vocab.poly],  # an empty polygon
        [vocab.poly] + b([1, 2, 3]) + [text] + b([4, 5]),    # a text token
        [vocab.poly] + b(list(range(66))),                   # 33 vertices
    ]
    predictions = [valid_task.decode_prediction(tokens, meta) for tokens in malformed]
    for p in predictions:
        assert p["malformed"] and p["polygons"] == [] and p["intersection"] == 0 and p["iou"] == 0.0
        assert p["union"] > 0
    good = valid_task.decode_prediction([vocab.poly] + b([0, 0, 999, 0, 999, 999, 0, 999]), meta)
    assert not good["malformed"] and good["polygons"] == [[0, 0, 64, 0, 64, 64, 0, 64]]
    assert good["union"] == 64 * 64 and good["iou"] == pytest.approx(good["intersection"] / 4096)
    scores = valid_task.score(predictions + [good], full=True)
    assert scores["malformed"] == 7 and scores["malformed_rate"] == pytest.approx(7 / 8)
    assert scores["mIoU"] == pytest.approx(good["iou"] / 8)
    assert "malformed" not in valid_task.score(predictions)


@pytest.mark.parametrize("options, max_vertices, max_len_b, max_tokens", [
    ({"max_tgt_length": 50}, 24, 50, 49),               # the length budget closes the polygons
    ({"max_poly_vertices": 4, "max_tgt_length": 60}, 4, 60, 59),
    ({}, 32, 20, 20),                                   # so does a generator limit below it
])
def test_constrained_generation_from_an_untrained_model_is_valid(demo_dir, vocab_dir, options, max_vertices,
                                                                  max_len_b, max_tokens):
    task = build_task("refseg", f"{demo_dir}/refseg_valid.tsv", vocab_dir, **options)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[i] for i in range(4)])
    torch.manual_seed(0)
    model = build_model(task).eval()
    generator = task.build_generator([model], Namespace(beam=3, max_len_b=max_len_b, min_len=1))
    hypotheses = task.inference_step(generator, [model], batch)
    eos = task.vocab.dictionary.eos()
    for hyps in hypotheses:
        assert len(hyps) == 3
        for hyp in hyps:
            tokens = hyp["tokens"].tolist()
            assert tokens[-1] == eos and len(tokens) - 1 <= max_tokens
            assert syntax_ok(tokens[:-1], task.vocab, max_vertices), task.vocab.dictionary.string(hyp["tokens"])
    predictions = task.predict(generator, [model], batch)
    assert len(predictions) == 4 and not any(p["malformed"] for p in predictions)
    assert all(0.0 <= p["iou"] <= 1.0 and p["polygons"] for p in predictions)
    json.dumps(predictions)


def test_a_few_steps_lower_the_refseg_loss(demo_dir, vocab_dir):
    task = build_task("refseg", f"{demo_dir}/refseg_train.tsv", vocab_dir)
    task.load_dataset("train")
    dataset = task.dataset("train")
    batch = dataset.collater([dataset[i] for i in range(8)])
    assert batch["constraint_masks"].shape == (*batch["target"].shape, len(task.vocab.dictionary))
    losses = losses_over_steps(task, batch, 25)
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.6 * losses[0], losses


# ---- bad rows ----------------------------------------------------------------------------------


def polygons_json(*polygons):
    return json.dumps({"regions": [{"polygons": list(polygons)}]})


def rle_json(rle):
    return json.dumps({"regions": [{"rle": rle}]})


TRIANGLE = [4, 4, 40, 4, 20, 30]
BAD_CELLS = {
    # name: (column, value, reason fragment)
    "not_json": (ANNOTATION, "{regions: [", "not valid JSON"),
    "json_list": (ANNOTATION, "[1, 2]", "must be a JSON object"),
    "no_regions": (ANNOTATION, '{"spans": [[0, 1]]}', '"regions": a non-empty list'),
    "empty_regions": (ANNOTATION, '{"regions": []}', '"regions": a non-empty list'),
    "region_without_mask": (ANNOTATION, '{"regions": [{"box": [1, 2, 3, 4]}]}', 'exactly one of "polygons" and "rle"'),
    "region_with_both": (ANNOTATION, json.dumps({"regions": [{"polygons": [TRIANGLE], "rle": {}}]}), "exactly one"),
    "polygons_not_a_list": (ANNOTATION, json.dumps({"regions": [{"polygons": 5}]}), "non-empty list"),
    "two_points": (ANNOTATION, polygons_json(TRIANGLE, [1, 2, 3, 4]), "polygon 1: needs an even number (>= 6)"),
    "odd_length": (ANNOTATION, polygons_json([1, 2, 30, 4, 5, 40, 7]), "needs an even number (>= 6)"),
    "nan_coordinate": (ANNOTATION, polygons_json([1, 2, float("nan"), 4, 5, 40]), "non-finite"),
    "string_coordinate": (ANNOTATION, polygons_json([1, 2, "3", 4, 5, 40]), "flat list of numbers"),
    "nested_points": (ANNOTATION, polygons_json([[1, 2], [30, 4], [5, 40]]), "flat list of numbers"),
    "outside_image": (ANNOTATION, polygons_json([10, 10, 90, 10, 50, 40]), "outside the 64x64 image"),
    "collinear_polygon": (ANNOTATION, polygons_json([10, 10, 20, 20, 30, 30]), "does not survive encoding"),
    "rle_size_mismatch": (ANNOTATION, rle_json({"size": [32, 32], "counts": [1024]}), "differs from the image"),
    "rle_bad_string": (ANNOTATION, rle_json({"size": [64, 64], "counts": "abc"}), "RLE does not decode"),
    "rle_short_runs": (ANNOTATION, rle_json({"size": [64, 64], "counts": [10, 20]}), "cover 30 pixels"),
    "rle_empty_mask": (ANNOTATION, rle_json({"size": [64, 64], "counts": [4096]}), "RLE mask is empty"),
    "rle_not_a_dict": (ANNOTATION, rle_json("xyz"), "RLE does not decode"),
    "empty_text": (TEXT, "  ", "empty referring expression"),
    "empty_image": (IMAGE, "", "empty media cell"),
}


@pytest.mark.parametrize("case", sorted(BAD_CELLS))
def test_bad_refseg_row_names_file_line_and_column(case, demo_dir, vocab_dir, tmp_path):
    column, value, reason = BAD_CELLS[case]
    good = read_lines(demo_dir / "refseg_valid.tsv", 3)
    path = write_tsv(tmp_path / "rows.tsv", [good[0], set_cell(good[1], column, value), good[2]])
    task = build_task("refseg", path, vocab_dir)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    assert dataset[0]["target"].numel() >= 8 and dataset[2]["target"].numel() >= 8
    with pytest.raises(BadInputError) as info:
        dataset[1]
    assert (info.value.path, info.value.line, info.value.column) == (path, 2, column)
    assert str(info.value).startswith(f"{path}:2: column {column}")
    assert reason in info.value.reason, info.value.reason


def test_skip_bad_rows_counts_bad_refseg_rows(demo_dir, vocab_dir, tmp_path):
    good = read_lines(demo_dir / "refseg_valid.tsv", 4)
    rows = [good[0], set_cell(good[1], ANNOTATION, "{"), good[2],
            set_cell(good[3], ANNOTATION, polygons_json([1, 2, 3, 4]))]
    path = write_tsv(tmp_path / "rows.tsv", rows)
    task = build_task("refseg", path, vocab_dir, skip_bad_rows=2)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[i] for i in range(4)])
    assert batch["id"].tolist() == [0, 2] and batch["target"].size(0) == 2
    assert [m.split(": ")[0] for m in batch["bad_rows"]] == [f"{path}:2", f"{path}:4"]
    assert task.bad_rows.count(batch) == 2


# ---- COCO to refseg rows -----------------------------------------------------------------------


@needs_coco
def test_coco_refseg_rows_load_and_their_targets_redraw_the_instances(tmp_path, vocab_dir):
    coco_to_tsv.main(["--images", str(COCO_MINI / "images"), "--instances", str(COCO_MINI / "instances.json"),
                      "--out-dir", str(tmp_path), "--split", "valid"])
    task = build_task("refseg", tmp_path / "coco_refseg_valid.tsv", vocab_dir, patch_image_size=384)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    eos = task.vocab.dictionary.eos()
    ious = []
    for i in range(len(dataset)):
        sample = dataset[i]
        tokens = sample["target"].tolist()
        assert tokens[-1] == eos and len(tokens) <= task.cfg.max_tgt_length and syntax_ok(tokens[:-1], task.vocab, 32)
        ious.append(task.decode_prediction(tokens[:-1], sample["meta"])["iou"])
    print(f"coco-mini refseg gold targets: mean IoU {np.mean(ious):.4f} over {len(ious)} rows, "
          f"--max-tgt-length sized to {task.cfg.max_tgt_length}")
    assert len(ious) == 115 and np.mean(ious) >= 0.85


def test_validation_reports_the_cIoU_of_the_whole_set_not_a_mean_of_batches(demo_dir, vocab_dir):
    """cIoU sums the pixels of all intersections over all unions; in batches of 3, validation gives what
    scoring every prediction at once gives (large masks weigh more), and mIoU, acc@0.5, malformed_rate too."""
    task = build_task("refseg", f"{demo_dir}/refseg_valid.tsv", vocab_dir)
    unions = [100, 10_000, 400, 2_500, 50, 900, 30_000, 64, 1_000]
    ious = [1, 0, 1, 0.25, 1, 0.5, 0, 1, 0.75]  # the largest masks missed
    predictions = [{"intersection": int(union * iou), "union": union, "iou": iou, "malformed": k % 5 == 0}
                   for k, (union, iou) in enumerate(zip(unions, ious))]
    expected = task.score(predictions)
    values = validated(task, predictions, batch_size=3)
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, abs=1e-4), name
    batch_means = np.mean([task.score(predictions[s:s + 3])["cIoU"] for s in range(0, 9, 3)])
    assert abs(batch_means - expected["cIoU"]) > 0.01
