import base64
import json
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from data.transforms import ImageTransform
from models.image_encoder import model_pixels
from helpers import build_task, write_tsv

from conftest import SHARED_DATA

COCO = os.path.join(SHARED_DATA, "coco-mini")
GRAY, RED = (128, 128, 128), (255, 0, 0)


def image_with_red_box(width, height, box):
    """A gray image with the pixels of the continuous box ``box`` painted red."""
    image = Image.new("RGB", (width, height), GRAY)
    x0, y0, x1, y1 = box
    ImageDraw.Draw(image).rectangle([x0, y0, x1 - 1, y1 - 1], fill=RED)
    return image


def rectangle_polygon(box):
    x0, y0, x1, y1 = box
    return [[[x0, y0, x1, y0, x1, y1, x0, y1]]]


def red_mask(pixels):
    r, g, b = pixels.float() / 255
    return (r > 0.7) & (g < 0.3) & (b < 0.3)


def test_eval_resize_scales_boxes_and_polygons_exactly():
    image = image_with_red_box(200, 100, (20, 10, 100, 50))
    out = ImageTransform(100, train=False)(image, [(20, 10, 100, 50)], rectangle_polygon((20, 10, 100, 50)))
    np.testing.assert_array_equal(out.boxes, [[10, 10, 50, 50]])
    np.testing.assert_array_equal(out.polygons[0][0], [[10, 10], [50, 10], [50, 50], [10, 50]])
    assert out.pixels.shape == (3, 100, 100) and out.pixels.dtype == torch.uint8  # the model normalises batches
    assert (out.size, out.flipped) == ((100, 100), False)
    assert red_mask(out.pixels)[12:48, 12:48].all() and not red_mask(out.pixels)[:, 52:].any()


def test_eval_uses_no_randomness_whatever_the_probabilities():
    image = image_with_red_box(200, 100, (20, 10, 100, 50))
    state = torch.get_rng_state()
    out = ImageTransform(100, train=False, crop_prob=1, hflip_prob=1)(image, [(20, 10, 100, 50)])
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(out.boxes, [[10, 10, 50, 50]])


def test_hflip_mirrors_pixels_boxes_and_polygons():
    image = image_with_red_box(200, 100, (20, 10, 100, 50))
    out = ImageTransform(100, train=True, hflip_prob=1)(image, [(20, 10, 100, 50)], [[[20, 10, 40, 30, 100, 50]]])
    assert out.flipped
    np.testing.assert_array_equal(out.boxes, [[50, 10, 90, 50]])
    np.testing.assert_array_equal(out.polygons[0][0], [[90, 10], [80, 30], [50, 50]])
    assert red_mask(out.pixels)[12:48, 52:88].all() and not red_mask(out.pixels)[:, :48].any()


def test_random_crop_always_keeps_the_box_and_its_pixels():
    transform = ImageTransform(64, train=True, crop_prob=1, hflip_prob=0.5)
    rng, boxes_seen = random.Random(0), set()
    for seed in range(200):
        x0, y0 = rng.randrange(0, 300), rng.randrange(0, 220)
        box = (x0, y0, rng.randrange(x0 + 20, 321), rng.randrange(y0 + 20, 241))
        torch.manual_seed(seed)
        out = transform(image_with_red_box(320, 240, box), [box])
        (bx0, by0, bx1, by1), = out.boxes
        assert 0 <= bx0 < bx1 <= 64 and 0 <= by0 < by1 <= 64
        ys, xs = np.nonzero(red_mask(out.pixels).numpy())
        # The red pixels span exactly the transformed box, up to the blur at its edges.
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], out.boxes[0], atol=1.5)
        boxes_seen.add(tuple(np.round(out.boxes[0] / 64 - np.array(box) / [320, 240, 320, 240], 3)))
    assert len(boxes_seen) > 150  # the crops really vary


def test_polygons_move_with_the_same_parameters_as_boxes():
    transform = ImageTransform(96, train=True, crop_prob=1, hflip_prob=0.5)
    box = (40.5, 30.25, 150.75, 90.0)
    polygons = rectangle_polygon(box) + [[[60, 40, 70, 50, 80, 40], [100, 60, 120, 80, 110, 85, 105, 70]]]
    for seed in range(50):
        torch.manual_seed(seed)
        out = transform(Image.new("RGB", (200, 120), GRAY), [box], polygons)
        (x0, y0, x1, y1), = out.boxes
        rectangle = out.polygons[0][0]
        np.testing.assert_allclose(rectangle.min(0), [x0, y0], atol=1e-4)
        np.testing.assert_allclose(rectangle.max(0), [x1, y1], atol=1e-4)
        assert [[len(part) for part in obj] for obj in out.polygons] == [[4], [3, 4]]
        # An inner vertex sits at the same relative place in the box, mirrored when flipped.
        fx = (60 - box[0]) / (box[2] - box[0])
        fx = 1 - fx if out.flipped else fx
        fy = (40 - box[1]) / (box[3] - box[1])
        np.testing.assert_allclose(out.polygons[1][0][0], [x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)], atol=1e-3)


def test_crop_without_boxes_keeps_polygons_and_varies():
    transform = ImageTransform(64, train=True, crop_prob=1)
    results = set()
    for seed in range(50):
        torch.manual_seed(seed)
        out = transform(Image.new("RGB", (200, 100), GRAY), polygons=[[[30, 20, 90, 20, 60, 70]]])
        vertices = out.polygons[0][0]
        assert (vertices >= 0).all() and (vertices <= 64).all() and out.boxes is None
        results.add(tuple(vertices.round(3).ravel()))
    assert len(results) > 40


def test_crop_without_objects_covers_half_to_all_of_the_image():
    # Each pixel's red and green values are its x and y, so the output shows which region was cropped.
    x, y = np.meshgrid(np.arange(256), np.arange(200))
    image = Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).astype(np.uint8))
    transform = ImageTransform(64, train=True, crop_prob=1)
    areas = []
    for seed in range(100):
        torch.manual_seed(seed)
        red, green, _ = transform(image).pixels.numpy().astype(int)
        width, height = red.max() - red.min() + 1, green.max() - green.min() + 1
        areas.append(width * height / (256 * 200))
        assert 3 / 4 - 0.05 <= width / height <= 4 / 3 + 0.05
    assert 0.5 - 0.03 <= min(areas) and max(areas) <= 1 and np.ptp(areas) > 0.3


def test_same_seed_same_result():
    transform = ImageTransform(48, train=True, crop_prob=0.5, hflip_prob=0.5)
    image = image_with_red_box(160, 120, (30, 40, 90, 100))
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        outputs.append([transform(image, [(30, 40, 90, 100)]) for _ in range(5)])
    for a, b in zip(*outputs):
        assert torch.equal(a.pixels, b.pixels) and np.array_equal(a.boxes, b.boxes) and a.flipped == b.flipped


@pytest.fixture(scope="module")
def coco_objects():
    with open(os.path.join(COCO, "instances.json")) as f:
        instances = json.load(f)
    first_image = instances["images"][0]
    objects = [a for a in instances["annotations"] if a["image_id"] == first_image["id"] and not a["iscrowd"]]
    return os.path.join(COCO, "images", first_image["file_name"]), objects


def test_real_coco_polygons_stay_inside_their_boxes(coco_objects):
    path, objects = coco_objects
    boxes = [(x, y, x + w, y + h) for x, y, w, h in (a["bbox"] for a in objects)]
    polygons = [a["segmentation"] for a in objects]
    transform = ImageTransform(128, train=True, crop_prob=1, hflip_prob=0.5)
    with Image.open(path) as image:
        image = image.convert("RGB")
    for seed in range(20):
        torch.manual_seed(seed)
        out = transform(image, boxes, polygons)
        assert len(out.polygons) == len(out.boxes) == len(objects)
        for (x0, y0, x1, y1), parts in zip(out.boxes, out.polygons):
            vertices = np.concatenate(parts)
            assert (vertices.min(0) >= [x0 - 1e-3, y0 - 1e-3]).all()
            assert (vertices.max(0) <= [x1 + 1e-3, y1 + 1e-3]).all()
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128


def coco_instance(file_name, category):
    """The photo's bytes, size and largest instance of ``category``: (box x0, y0, x1, y1, COCO polygons)."""
    with open(f"{COCO}/instances.json") as f:
        instances = json.load(f)
    image = next(i for i in instances["images"] if i["file_name"] == file_name)
    category_id = next(c["id"] for c in instances["categories"] if c["name"] == category)
    found = max((a for a in instances["annotations"] if a["image_id"] == image["id"]
                 and a["category_id"] == category_id and not a["iscrowd"]), key=lambda a: a["area"])
    with open(f"{COCO}/images/{file_name}", "rb") as f:
        data = f.read()
    x, y, w, h = found["bbox"]
    return data, (image["width"], image["height"]), (x, y, x + w, y + h), found["segmentation"]


@pytest.mark.parametrize("patch", [96, 160])
def test_draft_decoding_keeps_targets_and_predictions_in_original_pixels(tmp_path, vocab_dir, patch):
    data, (width, height), box, polygons = coco_instance("000000129648.jpg", "skateboard")  # 640x427
    cell = base64.b64encode(data).decode()
    rows = {
        "refcoco": ["ref-0", "129648", "the skateboard", ",".join(f"{v:.2f}" for v in box), cell],
        "refseg": ["seg-0", cell, "", "", "the skateboard", json.dumps({"regions": [{"polygons": polygons}]})],
    }
    bin_width = np.array([width, height]) / 999
    for name, row in rows.items():
        path = write_tsv(tmp_path / f"{name}.tsv", ["\t".join(row)])
        drafted = build_task(name, path, vocab_dir, patch_image_size=patch)
        # Where a training crop may zoom in, images are decoded whole; validation rows are never cropped.
        whole = build_task(name, path, vocab_dir, patch_image_size=patch, crop_prob=0.5)
        samples = []
        for task in (drafted, whole):
            task.load_dataset("valid")
            samples.append(task.dataset("valid")[0])
        dataset = drafted.dataset("valid")
        reduced = drafted.media.image(dataset.row(0), "image")
        assert reduced.size == (width, height)
        assert patch <= min(reduced.pixels.shape[1:]) and reduced.pixels.shape[2] <= width // 2
        targets = [s["target"].tolist()[:-1] for s in samples]
        bins = [np.array([drafted.vocab.to_bin(t) or 0 for t in target]) for target in targets]
        assert len(targets[0]) == len(targets[1]) and np.abs(bins[0] - bins[1]).max() <= 1
        predictions = [drafted.decode_prediction(t, s["meta"]) for t, s in zip(targets, samples)]
        if name == "refcoco":
            points = [np.reshape(p["box"], (-1, 2)) for p in predictions]
        else:
            points = [np.concatenate([np.reshape(q, (-1, 2)) for q in p["polygons"]]) for p in predictions]
            assert predictions[0]["iou"] > 0.8 and abs(predictions[0]["iou"] - predictions[1]["iou"]) < 0.02
        assert (np.abs(points[0] - points[1]) <= bin_width + 1e-6).all()
        assert (model_pixels(samples[0]["image"]) - model_pixels(samples[1]["image"])).abs().mean() < 0.03


def old_normalise(pixels):
    """How images became the model input before batches carried uint8: per image, in the loader."""
    std = torch.tensor((0.5, 0.5, 0.5))[:, None, None]
    mean = torch.tensor((0.5, 0.5, 0.5))[:, None, None]
    return pixels.contiguous().float().mul_(1.0 / (255.0 * std)).add_(-mean / std)


@pytest.mark.parametrize("name, medium", [("refcoco", "image"), ("video_caption", "video")])
def test_batches_carry_uint8_pixels_that_the_model_normalises_as_before(name, medium, demo_dir, vocab_dir):
    task = build_task(name, f"{demo_dir}/{name}_valid.tsv", vocab_dir)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[i] for i in range(4)])
    pixels = batch["net_input"][medium]
    assert pixels.dtype == torch.uint8 and pixels.shape[-3] == 3
    normalised = model_pixels(pixels)
    assert torch.equal(normalised, torch.stack([old_normalise(p) for p in pixels.flatten(0, -4)]).view_as(pixels))
    assert normalised.min() >= -1 and normalised.max() <= 1 and model_pixels(normalised) is normalised
