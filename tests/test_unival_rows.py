"""Rows stored exactly as UnIVAL/OFA store them, built from real COCO photos and annotations, read unchanged."""
import base64
import json
import os

import pytest

from helpers import build_task
from preprocess import build_vocab
from tasks.caption import normalise_caption
from geometry.codec import bin_token, special_tokens, time_token

from conftest import SHARED_DATA

COCO = os.path.join(SHARED_DATA, "coco-mini")
NUM_BINS = 1000
CAPTION_IMAGE = "000000129648.jpg"  # "A boy in a white t-shirt performs a skateboarding trick." (640x427)
# (photo, category, referring expression as RefCOCO writes them: free text, any case and punctuation)
REFERRING = [
    ("000000129648.jpg", "skateboard", "The skateboard under the boy, mid-air."),  # landscape, 640x427
    ("000000121647.jpg", "wine glass", "Wine glass (top right)"),  # portrait, 480x640, box touches y = 0
]


@pytest.fixture(scope="module")
def coco():
    with open(f"{COCO}/captions.json") as f:
        captions = json.load(f)
    with open(f"{COCO}/instances.json") as f:
        instances = json.load(f)
    images = {image["file_name"]: image for image in captions["images"]}
    categories = {c["id"]: c["name"] for c in instances["categories"]}
    return images, captions["annotations"], instances["annotations"], categories


def photo_base64(file_name):
    """The cell OFA writes: base64 of the JPEG file's own bytes."""
    with open(os.path.join(COCO, "images", file_name), "rb") as f:
        return base64.b64encode(f.read()).decode("ascii")


def captions_of(coco, file_name):
    images, caption_annotations, _, _ = coco
    image_id = images[file_name]["id"]
    return [a["caption"] for a in sorted(caption_annotations, key=lambda a: a["id"]) if a["image_id"] == image_id]


def instance_of(coco, file_name, category):
    """The largest non-crowd instance of ``category`` in the photo: (x0, y0, x1, y1) in pixels as floats."""
    images, _, instances, categories = coco
    image_id = images[file_name]["id"]
    found = [a for a in instances
             if a["image_id"] == image_id and categories[a["category_id"]] == category and not a["iscrowd"]]
    x, y, w, h = max(found, key=lambda a: a["area"])["bbox"]
    return x, y, x + w, y + h


def objects_of(coco, file_name):
    """OFA's detection column (unused by the task): "label&&label..." of the photo's objects."""
    images, _, instances, categories = coco
    image_id = images[file_name]["id"]
    return "&&".join(sorted({categories[a["category_id"]] for a in instances if a["image_id"] == image_id}))


def write_rows(path, rows):
    path.write_text("".join("\t".join(cells) + "\n" for cells in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def world(coco, tmp_path_factory):
    """caption_train.tsv (one caption a row), caption_valid.tsv (&&-joined references), refcoco.tsv, a vocab."""
    out = tmp_path_factory.mktemp("unival")
    image_id = str(coco[0][CAPTION_IMAGE]["id"])
    captions = captions_of(coco, CAPTION_IMAGE)
    objects = objects_of(coco, CAPTION_IMAGE)
    image = photo_base64(CAPTION_IMAGE)
    caption_train = write_rows(out / "caption_train.tsv",
                               [[f"{image_id}_{k}", image_id, c, objects, image] for k, c in enumerate(captions)])
    caption_valid = write_rows(out / "caption_valid.tsv",
                               [[image_id, image_id, "&&".join(captions), objects, image]])
    refcoco_rows = []
    for k, (file_name, category, text) in enumerate(REFERRING):
        box = ",".join(f"{v:.2f}" for v in instance_of(coco, file_name, category))
        refcoco_rows.append([f"ref-{k}", str(coco[0][file_name]["id"]), text, box, photo_base64(file_name)])
    refcoco = write_rows(out / "refcoco.tsv", refcoco_rows)
    vocab = out / "vocab"
    build_vocab.main(["--input", f"{caption_train}:2", "--input", f"{refcoco}:2", "--out-dir", str(vocab),
                      "--vocab-size", "400"])
    return {"caption_train": caption_train, "caption_valid": caption_valid, "refcoco": refcoco, "vocab": vocab,
            "captions": captions, "image_id": image_id}


def test_rows_are_in_the_ofa_layout(world):
    with open(world["caption_train"], encoding="utf-8") as f:
        cells = f.readline().rstrip("\n").split("\t")
    assert len(cells) == 5 and cells[3] and cells[2][0].isupper() and any(p in cells[2] for p in ".,-")
    with open(os.path.join(COCO, "images", CAPTION_IMAGE), "rb") as f:
        assert base64.b64decode(cells[4]) == f.read()


def test_caption_row_target_decodes_to_the_normalised_caption(world):
    # A vocabulary trained on five captions is nearly character level: allow long targets.
    task = build_task("caption", world["caption_train"], world["vocab"], max_tgt_length=100)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    assert len(dataset) == len(world["captions"]) == 5
    for i, caption in enumerate(world["captions"]):
        sample = dataset[i]
        target = sample["target"].tolist()
        assert target[-1] == task.vocab.dictionary.eos() and len(target) < task.cfg.max_tgt_length
        expected = " ".join(caption.lower().translate(str.maketrans({p: " " for p in ".,-!?'\""})).split())
        assert task.vocab.decode_text(target[:-1]) == expected == normalise_caption(caption)
        assert tuple(sample["image"].shape) == (3, 64, 64)
        assert sample["meta"]["uniq_id"] == f"{world['image_id']}_{i}"
        assert sample["meta"]["references"] == [caption.strip()]  # scored as written
    first = normalise_caption(world["captions"][0])
    assert first == "a boy in a white t shirt performs a skateboarding trick"


def test_a_caption_longer_than_a_set_limit_refuses_the_file_rather_than_being_cut(world):
    sized = build_task("caption", world["caption_train"], world["vocab"])
    sized.load_dataset("valid")
    lengths = sorted(len(sized.dataset("valid")[i]["target"]) for i in range(5))
    assert sized.cfg.max_tgt_length == lengths[-1]  # unset: the longest caption and EOS
    limit = lengths[2]  # the two longer captions do not fit
    task = build_task("caption", world["caption_train"], world["vocab"], max_tgt_length=limit)
    with pytest.raises(ValueError, match=rf"{world['caption_train']}: 2 of 5 rows need more than --max-tgt-length "
                                         rf"{limit} target tokens \(the longest needs {lengths[-1]}\)"):
        task.load_dataset("valid")


def test_validation_caption_row_keeps_every_reference(world):
    task = build_task("caption", world["caption_valid"], world["vocab"], max_tgt_length=100)
    task.load_dataset("valid")
    sample = task.dataset("valid")[0]
    assert sample["meta"] == {"uniq_id": world["image_id"], "references": [c.strip() for c in world["captions"]]}
    target = normalise_caption(world["captions"][0])
    assert task.vocab.decode_text(sample["target"].tolist()[:-1]) == target
    assert tuple(sample["image"].shape) == (3, 64, 64)
    batch = task.dataset("valid").collater([sample])
    prediction = task.decode_prediction(sample["target"].tolist()[:-1], batch["meta"][0])
    assert prediction["references"] == sample["meta"]["references"] and prediction["caption"] == target


@pytest.mark.parametrize("patch", [64, 96])
def test_refcoco_row_box_round_trips_within_half_a_bin(world, coco, patch):
    task = build_task("refcoco", world["refcoco"], world["vocab"], patch_image_size=patch)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    assert len(dataset) == len(REFERRING)
    for i, (file_name, category, text) in enumerate(REFERRING):
        sample = dataset[i]
        image = coco[0][file_name]
        width, height = image["width"], image["height"]
        original = instance_of(coco, file_name, category)
        stored = [round(v, 2) for v in original]
        target = sample["target"].tolist()
        assert len(target) == 5 and target[-1] == task.vocab.dictionary.eos()
        bins = [task.vocab.to_bin(t) for t in target[:4]]
        assert None not in bins
        decoded = task.codec.decode_box(bins, width, height)
        half_bin = [0.5 * s / (NUM_BINS - 1) + 1e-4 for s in (width, height, width, height)]
        for d, o, tolerance in zip(decoded, stored, half_bin):
            assert abs(d - o) <= tolerance, (decoded, stored)
        assert tuple(sample["image"].shape) == (3, patch, patch)
        meta = sample["meta"]
        assert meta["uniq_id"] == f"ref-{i}" and meta["text"] == text
        assert meta["box"] == pytest.approx(stored) and tuple(meta["size"]) == (width, height)
        prediction = task.decode_prediction(target[:4], meta)
        assert prediction["box"] == pytest.approx(list(decoded)) and prediction["reference"] == meta["box"]
        assert task.score([prediction])["acc@0.5"] == 1.0


def dict_tokens(vocab_dir):
    with open(os.path.join(vocab_dir, "dict.txt"), encoding="utf-8") as f:
        return [line.rsplit(" ", 1)[0] for line in f.read().splitlines()]


def test_vocabulary_build_is_byte_identical_and_ends_with_special_tokens(world, tmp_path):
    inputs = ["--input", f"{world['caption_train']}:2", "--input", f"{world['refcoco']}:2"]
    for out in ("first", "second"):
        build_vocab.main([*inputs, "--out-dir", str(tmp_path / out), "--vocab-size", "400"])
    assert (tmp_path / "first" / "dict.txt").read_bytes() == (tmp_path / "second" / "dict.txt").read_bytes()
    tokens = dict_tokens(tmp_path / "first")
    special = special_tokens(1000, 100)
    assert tokens[-len(special):] == special
    assert not set(tokens[: -len(special)]) & set(special)
    # The model file too: nothing in it may depend on where it was written.
    assert (tmp_path / "first" / "spm.model").read_bytes() == (tmp_path / "second" / "spm.model").read_bytes()


def test_dictionary_follows_the_bin_counts(world, tmp_path):
    build_vocab.main(["--input", f"{world['caption_train']}:2", "--out-dir", str(tmp_path),
                      "--vocab-size", "400", "--num-bins", "16", "--num-time-bins", "4"])
    special = special_tokens(16, 4)
    tokens = dict_tokens(tmp_path)
    assert tokens[-len(special):] == special
    assert bin_token(16) not in tokens and time_token(4) not in tokens
