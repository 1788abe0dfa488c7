"""Converters of the published benchmarks, on small files written in each dataset's documented format."""
import json
import os
import pickle

import pytest

from helpers import build_task
from preprocess import refcoco_to_tsv

COCO_PHOTOS = "/work/shared/data/coco-mini/images"

RLE = {"size": [4, 6], "counts": [2, 3, 19]}  # uncompressed, as COCO stores crowds


def read_rows(path):
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n").split("\t") for line in handle]


def media(tmp_path, *names):
    folder = tmp_path / "media"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"\xff\xd8")
    return folder


# ---- RefCOCO/+/g -------------------------------------------------------------------------------------


def sentence(sent_id, text):
    return {"tokens": text.split(), "raw": text.capitalize() + ".", "sent_id": sent_id, "sent": text}


def write_refcoco(tmp_path, refs=None):
    instances = {
        "images": [{"id": 11, "file_name": "COCO_train2014_000000000011.jpg", "height": 4, "width": 6},
                   {"id": 12, "file_name": "COCO_train2014_000000000012.jpg", "height": 4, "width": 6}],
        "annotations": [
            {"id": 101, "image_id": 11, "category_id": 1, "bbox": [1, 0.5, 2.25, 3],
             "segmentation": [[1, 0.5, 3.25, 0.5, 3.25, 3.5]], "iscrowd": 0},
            {"id": 102, "image_id": 12, "category_id": 2, "bbox": [0, 0, 6, 4], "segmentation": RLE, "iscrowd": 1},
            {"id": 103, "image_id": 12, "category_id": 2, "bbox": [2, 2, 0, 1], "segmentation": [], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]}
    if refs is None:
        refs = [{"ref_id": 0, "ann_id": 101, "image_id": 11, "split": "train", "category_id": 1,
                 "file_name": "COCO_train2014_000000000011_101.jpg", "sent_ids": [5, 6],
                 "sentences": [sentence(5, "man on the left"), sentence(6, "guy\tin red")]},
                {"ref_id": 1, "ann_id": 102, "image_id": 12, "split": "testA", "category_id": 2,
                 "file_name": "COCO_train2014_000000000012_102.jpg", "sent_ids": [7],
                 "sentences": [sentence(7, "dogs")]},
                {"ref_id": 2, "ann_id": 103, "image_id": 12, "split": "testA", "category_id": 2,
                 "file_name": "COCO_train2014_000000000012_103.jpg", "sent_ids": [8],
                 "sentences": [sentence(8, "thin line")]}]
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    (tmp_path / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    return ["--refs", str(tmp_path / "refs(unc).p"), "--instances", str(tmp_path / "instances.json"),
            "--out-dir", str(tmp_path / "out")]


def test_refcoco_rows_per_expression_split_by_the_refs(tmp_path, capsys):
    folder = media(tmp_path, "COCO_train2014_000000000011.jpg", "COCO_train2014_000000000012.jpg")
    refcoco_to_tsv.main(write_refcoco(tmp_path) + ["--media-dir", str(folder), "--prefix", "refcoco+"])
    out = tmp_path / "out"
    assert read_rows(out / "refcoco+_refcoco_train.tsv") == [
        ["5", "11", "man on the left", "1,0.5,3.25,3.5", "COCO_train2014_000000000011.jpg"],
        ["6", "11", "guy in red", "1,0.5,3.25,3.5", "COCO_train2014_000000000011.jpg"]]
    # the thin object's box is empty: no refcoco row, and no mask: no refseg row
    assert read_rows(out / "refcoco+_refcoco_testA.tsv") == [
        ["7", "12", "dogs", "0,0,6,4", "COCO_train2014_000000000012.jpg"]]
    seg_train = read_rows(out / "refcoco+_refseg_train.tsv")
    assert [r[:5] for r in seg_train] == [["5", "COCO_train2014_000000000011.jpg", "", "", "man on the left"],
                                         ["6", "COCO_train2014_000000000011.jpg", "", "", "guy in red"]]
    assert json.loads(seg_train[0][5]) == {"regions": [{"polygons": [[1, 0.5, 3.25, 0.5, 3.25, 3.5]]}]}
    (seg_test,) = read_rows(out / "refcoco+_refseg_testA.tsv")
    region = json.loads(seg_test[5])["regions"][0]["rle"]
    assert region["size"] == [4, 6] and isinstance(region["counts"], str)  # compressed
    summary = capsys.readouterr().out
    assert "refcoco+_refcoco_train.tsv (2 rows)" in summary
    assert "1 skipped: empty box (refcoco rows)" in summary
    assert "1 skipped: object without a segmentation (refseg rows)" in summary


@pytest.mark.skipif(not os.path.isdir(COCO_PHOTOS), reason="coco-mini is not available")
def test_refcoco_rows_can_be_read_by_the_tasks(tmp_path, vocab_dir):
    photos = COCO_PHOTOS
    name = sorted(os.listdir(photos))[0]
    refs_args = write_refcoco(tmp_path)
    instances = json.loads((tmp_path / "instances.json").read_text())
    for image in instances["images"]:
        image["file_name"] = name
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    refcoco_to_tsv.main(refs_args + ["--media-dir", photos])
    for task_name in ("refcoco", "refseg"):
        task = build_task(task_name, str(tmp_path / "out" / f"refcoco_{task_name}_train.tsv"), vocab_dir,
                          media_dir=photos)
        task.load_dataset("valid")
        assert len(task.dataset("valid")) == 2 and task.dataset("valid")[1]["target"].numel() > 4


def test_a_missing_image_stops_unless_allowed(tmp_path, capsys):
    folder = media(tmp_path, "COCO_train2014_000000000011.jpg")
    with pytest.raises(SystemExit, match=r"refs\(unc\).p: ref 2 \(ref_id 1\): media file not found: .*000000000012"):
        refcoco_to_tsv.main(write_refcoco(tmp_path) + ["--media-dir", str(folder)])
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())  # nothing half-written
    refcoco_to_tsv.main(write_refcoco(tmp_path) + ["--media-dir", str(folder), "--allow-missing"])
    assert "2 rows whose media file is missing" in capsys.readouterr().out
    assert read_rows(tmp_path / "out" / "refcoco_refcoco_testA.tsv")[0][4] == "COCO_train2014_000000000012.jpg"


def test_a_ref_naming_an_unknown_annotation_is_located(tmp_path):
    refs = [{"ref_id": 9, "ann_id": 999, "image_id": 11, "split": "val", "sentences": [sentence(1, "x")]}]
    folder = media(tmp_path)
    with pytest.raises(SystemExit, match=r"ref 1 \(ref_id 9\): its ann_id 999 is not in .*instances.json"):
        refcoco_to_tsv.main(write_refcoco(tmp_path, refs) + ["--media-dir", str(folder)])


class Gadget:
    def __reduce__(self):
        return (print, ("ran",))


def test_a_refs_pickle_naming_a_class_is_refused_unrun(tmp_path, capsys):
    args = write_refcoco(tmp_path)
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps([Gadget()]))
    with pytest.raises(SystemExit, match=r"refs\(unc\).p:1: column 1: not a readable pickle of plain data: "
                                         r"it names builtins.print"):
        refcoco_to_tsv.main(args + ["--media-dir", str(media(tmp_path))])
    assert "ran" not in capsys.readouterr().out
