import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest

from preprocess import coco_to_tsv

from conftest import SHARED_DATA

COCO_MINI = Path(SHARED_DATA, "coco-mini")
pytestmark = pytest.mark.skipif(not COCO_MINI.is_dir(), reason="coco-mini is not available")


def load(name):
    return json.loads((COCO_MINI / name).read_text(encoding="utf-8"))


def read_rows(path):
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n").split("\t") for line in handle]


def convert(out_dir, split, *extra, images=COCO_MINI / "images", captions=True, instances=True):
    argv = ["--images", str(images), "--out-dir", str(out_dir), "--split", split, *extra]
    if captions:
        argv += ["--captions", str(COCO_MINI / "captions.json")]
    if instances:
        argv += ["--instances", str(COCO_MINI / "instances.json")]
    coco_to_tsv.main(argv)
    return out_dir


def file_bytes_by_image_id(data):
    return {image["id"]: (COCO_MINI / "images" / image["file_name"]).read_bytes() for image in data["images"]}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("coco")
    convert(out_dir, "train")
    convert(out_dir, "valid")
    return out_dir


def test_train_captions_give_one_row_per_caption_with_original_image_bytes(converted):
    captions = load("captions.json")
    rows = read_rows(converted / "coco_caption_train.tsv")
    assert len(rows) == len(captions["annotations"])
    by_id = {a["id"]: a for a in captions["annotations"]}
    originals = file_bytes_by_image_id(captions)
    for uniq_id, image_id, caption, objects, image in rows:
        annotation = by_id[int(uniq_id)]
        assert int(image_id) == annotation["image_id"]
        assert caption == " ".join(annotation["caption"].split())
        assert objects == ""
        assert base64.b64decode(image, validate=True) == originals[annotation["image_id"]]


def test_valid_captions_join_all_references_of_an_image(converted):
    captions = load("captions.json")
    rows = read_rows(converted / "coco_caption_valid.tsv")
    assert len(rows) == len({a["image_id"] for a in captions["annotations"]})
    for uniq_id, image_id, references, _, _ in rows:
        expected = [" ".join(a["caption"].split()) for a in captions["annotations"]
                    if a["image_id"] == int(image_id)]
        assert references.split("&&") == expected and uniq_id == image_id


def test_refcoco_rows_are_the_non_crowd_instances_with_converted_boxes(converted):
    instances = load("instances.json")
    names = {c["id"]: c["name"] for c in instances["categories"]}
    non_crowd = {a["id"]: a for a in instances["annotations"] if not a["iscrowd"]}
    assert len(non_crowd) < len(instances["annotations"])  # the data does hold crowd instances
    originals = file_bytes_by_image_id(instances)
    for split in ("train", "valid"):
        rows = read_rows(converted / f"coco_refcoco_{split}.tsv")
        assert sorted(int(row[0]) for row in rows) == sorted(non_crowd)
        for uniq_id, image_id, text, box, image in rows:
            annotation = non_crowd[int(uniq_id)]
            x, y, w, h = annotation["bbox"]
            assert " " not in box
            assert [float(v) for v in box.split(",")] == pytest.approx([x, y, x + w, y + h], abs=0.005)
            assert text == names[annotation["category_id"]]
            assert base64.b64decode(image) == originals[int(image_id)]


def test_boxes_round_trip_through_the_location_codec(converted):
    codec_module = pytest.importorskip("geometry.codec")
    codec = codec_module.LocationCodec()
    sizes = {image["id"]: (image["width"], image["height"]) for image in load("instances.json")["images"]}
    for row in read_rows(converted / "coco_refcoco_train.tsv"):
        width, height = sizes[int(row[1])]
        box = [float(v) for v in row[3].split(",")]
        decoded = codec.decode_box(codec.encode_box(box, width, height), width, height)
        tolerance = [0.5 * size / 999 + 1e-9 for size in (width, height, width, height)]
        assert all(abs(a - b) <= t for a, b, t in zip(decoded, box, tolerance)), (row[0], box, decoded)


def test_only_the_requested_outputs_are_written(tmp_path):
    convert(tmp_path, "train", "--prefix", "mini", instances=False)
    assert sorted(os.listdir(tmp_path)) == ["mini_caption_train.tsv"]


def images_without(tmp_path, missing_name):
    """A folder linking every coco-mini image but one, so nothing is copied."""
    folder = tmp_path / "images"
    folder.mkdir()
    for source in (COCO_MINI / "images").iterdir():
        if source.name != missing_name:
            (folder / source.name).symlink_to(source)
    return folder


def test_missing_image_stops_with_the_file_and_annotation_named(tmp_path):
    captions = load("captions.json")
    first = captions["annotations"][0]
    image = next(i for i in captions["images"] if i["id"] == first["image_id"])
    folder = images_without(tmp_path, image["file_name"])
    with pytest.raises(SystemExit) as stopped:
        convert(tmp_path / "out", "train", images=folder)
    message = str(stopped.value.code)
    assert image["file_name"] in message and f"annotation {first['id']}" in message
    assert os.listdir(tmp_path / "out") == []  # no partial outputs


def test_skip_missing_skips_the_image_and_reports_the_count(tmp_path, capsys):
    captions = load("captions.json")
    image = captions["images"][0]
    folder = images_without(tmp_path, image["file_name"])
    convert(tmp_path, "train", "--skip-missing", images=folder, instances=False)
    assert "skipped 1 " in capsys.readouterr().out
    rows = read_rows(tmp_path / "coco_caption_train.tsv")
    expected = [a for a in captions["annotations"] if a["image_id"] != image["id"]]
    assert len(rows) == len(expected) and {int(row[1]) for row in rows} == {a["image_id"] for a in expected}


def test_tabs_newlines_and_extra_spaces_are_removed_from_captions(tmp_path):
    image = load("captions.json")["images"][0]
    captions = {"images": [image], "annotations": [
        {"id": 1, "image_id": image["id"], "caption": "  a dog\tand\na  cat \r\n"},
        {"id": 2, "image_id": image["id"], "caption": "salt && pepper"}]}
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(captions), encoding="utf-8")
    coco_to_tsv.main(["--images", str(COCO_MINI / "images"), "--captions", str(path),
                      "--out-dir", str(tmp_path), "--split", "valid"])
    (row,) = read_rows(tmp_path / "coco_caption_valid.tsv")
    assert len(row) == 5 and row[2] == "a dog and a cat&&salt & pepper"


def instance_mask(segmentation, height, width):
    """pycocotools' own mask of a COCO segmentation (polygons or RLE, compressed or not)."""
    mask_utils = pytest.importorskip("pycocotools.mask")
    if isinstance(segmentation, dict) and isinstance(segmentation["counts"], str):  # compressed
        return mask_utils.decode({**segmentation, "counts": segmentation["counts"].encode()}).astype(bool)
    rles = mask_utils.frPyObjects(segmentation, height, width)
    rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
    return mask_utils.decode(rle).astype(bool)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_refseg_rows_hold_each_category_of_an_image_with_all_its_instances(converted):
    instances = load("instances.json")
    names = {c["id"]: c["name"] for c in instances["categories"]}
    sizes = {image["id"]: (image["height"], image["width"]) for image in instances["images"]}
    originals = file_bytes_by_image_id(instances)
    groups = {}
    for a in instances["annotations"]:
        groups.setdefault(f"{a['image_id']}-{a['category_id']}", []).append(a)
    for split in ("train", "valid"):
        rows = read_rows(converted / f"coco_refseg_{split}.tsv")
        assert sorted(row[0] for row in rows) == sorted(groups)
        crowd_rows = 0
        for uniq_id, image, video, audio, text, annotation in rows:
            group = groups[uniq_id]
            image_id, category_id = group[0]["image_id"], group[0]["category_id"]
            assert video == audio == "" and text == names[category_id]
            assert base64.b64decode(image) == originals[image_id]
            regions = json.loads(annotation)["regions"]
            assert len(regions) == len(group)
            height, width = sizes[image_id]
            got = np.zeros((height, width), bool)
            for region, instance in zip(regions, group):
                if instance["iscrowd"]:
                    assert set(region) == {"rle"} and isinstance(region["rle"]["counts"], str)
                    assert region["rle"]["size"] == [height, width]
                    got |= instance_mask(region["rle"], height, width)
                else:
                    assert region == {"polygons": instance["segmentation"]}
                    got |= instance_mask(region["polygons"], height, width)
            crowd_rows += any(a["iscrowd"] for a in group)
            want = np.zeros((height, width), bool)
            for instance in group:
                want |= instance_mask(instance["segmentation"], height, width)
            assert np.array_equal(got, want), uniq_id
        assert crowd_rows >= 1
