import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from preprocess import make_demo_data
from preprocess.demo_world.images import CATALOGUE_FILE
from preprocess.demo_world.pairs import NLVR_STATEMENTS, nlvr_statements
from preprocess.demo_world.scenes import COLOURS, SHAPES, SIZE_RANGES, sample_scene

TRAIN_IMAGES, VALID_IMAGES, IMAGE_SIZE = 20, 8, 128
FILES = [f"{kind}_{split}.tsv" for split in ("train", "valid") for kind in ("caption", "refcoco", "regions")]
COLUMNS = {"caption": 5, "refcoco": 5, "regions": 6}
FILES += [f"refseg_{split}.tsv" for split in ("train", "valid")]  # tests/test_refseg.py checks their contents
COLUMNS["refseg"] = 6
# closed-set worlds and the entity catalogue (tests/test_vqa.py, tests/test_entity_recognition.py check them)
FILES += [f"{kind}_{split}.tsv" for split in ("train", "valid") for kind in ("vqa", "snli_ve", "entity")]
COLUMNS.update({"vqa": 6, "snli_ve": 6, "entity": 6})
# pairs of consecutive images (tests/test_multi_image.py trains on them)
FILES += [f"{kind}_{split}.tsv" for split in ("train", "valid") for kind in ("nlvr", "multi_image_qa", "multi_image_refcoco")]
COLUMNS.update({"nlvr": 5, "multi_image_qa": 6, "multi_image_refcoco": 6})
SEED_FREE_FILES = [CATALOGUE_FILE]  # the same for every seed


def generate(out_dir, seed=1, *extra):
    make_demo_data.main(["--out", str(out_dir), "--seed", str(seed), "--train-images", str(TRAIN_IMAGES),
                         "--valid-images", str(VALID_IMAGES), "--train-videos", "0", "--valid-videos", "0",
                         "--train-audio", "0", "--valid-audio", "0", "--train-ie", "0", "--valid-ie", "0", *extra])
    return out_dir


def read_rows(path):
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n").split("\t") for line in handle]


def decode_image(cell):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(cell))).convert("RGB"), dtype=float)


def region_of_interest(kind, box):
    """A small window surely inside the shape: the box centre, or the triangle's centroid."""
    x0, y0, x1, y1 = box
    cx = (x0 + x1) / 2
    cy = (y0 + 2 * y1) / 3 if kind == "triangle" else (y0 + y1) / 2
    half = 0.12 * (x1 - x0)
    return slice(round(cy - half), round(cy + half)), slice(round(cx - half), round(cx + half))


def named_words(text, vocabulary):
    found = [word for word in text.split() if word in vocabulary]
    assert len(found) == 1, text
    return found[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("demo"))


def test_same_seed_gives_identical_bytes_and_another_seed_differs(demo, tmp_path):
    again = generate(tmp_path / "again")
    other = generate(tmp_path / "other", 2)
    for name in FILES:
        assert (again / name).read_bytes() == (demo / name).read_bytes(), name
        assert (other / name).read_bytes() != (demo / name).read_bytes(), name


def test_files_have_the_expected_columns_and_row_counts(demo):
    for name in FILES:
        rows = read_rows(demo / name)
        assert rows and all(len(row) == COLUMNS[name.rsplit("_", 1)[0]] for row in rows), name
    assert len(read_rows(demo / "caption_train.tsv")) == 3 * TRAIN_IMAGES
    assert len(read_rows(demo / "caption_valid.tsv")) == VALID_IMAGES
    for split, images in (("train", TRAIN_IMAGES), ("valid", VALID_IMAGES)):
        regions = read_rows(demo / f"regions_{split}.tsv")
        assert len(regions) == images
        assert len(read_rows(demo / f"refcoco_{split}.tsv")) == sum(
            len(json.loads(row[5])["regions"]) for row in regions)
    assert not [p for p in demo.iterdir() if p.name not in FILES + SEED_FREE_FILES]  # no temporary files left


def test_summary_line_reports_rows_per_file(tmp_path, capsys):
    generate(tmp_path)
    output = capsys.readouterr().out.strip().splitlines()
    assert len(output) == 1
    assert f"caption_train.tsv {3 * TRAIN_IMAGES}" in output[0]
    assert f"regions_valid.tsv {VALID_IMAGES}" in output[0]


def test_uniq_ids_are_unique_and_follow_the_pattern(demo):
    refcoco_ids = [row[0] for row in read_rows(demo / "refcoco_train.tsv")]
    caption_ids = [row[0] for row in read_rows(demo / "caption_train.tsv")]
    for ids in (refcoco_ids, caption_ids):
        assert len(set(ids)) == len(ids)
    assert caption_ids[:3] == ["demo-train-000000-0", "demo-train-000000-1", "demo-train-000000-2"]
    assert read_rows(demo / "caption_valid.tsv")[0][:2] == ["demo-valid-000000"] * 2


def test_refcoco_boxes_lie_inside_the_image_on_pixels_of_the_named_colour(demo):
    palette = np.array(list(COLOURS.values()), dtype=float)
    for split in ("train", "valid"):
        for uniq_id, _, text, box_cell, image_cell in read_rows(demo / f"refcoco_{split}.tsv"):
            image = decode_image(image_cell)
            height, width, _ = image.shape
            x0, y0, x1, y1 = map(float, box_cell.split(","))
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, uniq_id
            colour, kind = named_words(text, COLOURS), named_words(text, SHAPES)
            mean = image[region_of_interest(kind, (x0, y0, x1, y1))].reshape(-1, 3).mean(axis=0)
            distances = np.linalg.norm(palette - mean, axis=1)
            assert list(COLOURS)[distances.argmin()] == colour, (uniq_id, text, mean)
            assert distances.min() < 40, (uniq_id, text, mean)


def test_regions_are_unambiguous_separate_and_sized_small_or_large(demo):
    small, large = (tuple(round(f * IMAGE_SIZE) for f in SIZE_RANGES[name]) for name in ("small", "large"))
    for row in read_rows(demo / "regions_train.tsv"):
        assert row[2:5] == ["", "", ""]
        regions = json.loads(row[5])["regions"]
        assert 1 <= len(regions) <= 3
        pairs = [(named_words(r["text"], COLOURS), named_words(r["text"], SHAPES)) for r in regions]
        assert len(set(pairs)) == len(pairs), row[0]
        for i, a in enumerate(regions):
            side = a["box"][2] - a["box"][0]
            assert side == a["box"][3] - a["box"][1]
            assert small[0] <= side <= small[1] or large[0] <= side <= large[1], side
            for b in regions[i + 1:]:
                apart = (a["box"][2] <= b["box"][0] or b["box"][2] <= a["box"][0]
                         or a["box"][3] <= b["box"][1] or b["box"][3] <= a["box"][1])
                assert apart, row[0]


def test_region_polygons_have_the_shape_vertex_count_and_fit_the_box(demo):
    vertices = {"circle": 24, "square": 4, "triangle": 3}
    for row in read_rows(demo / "regions_valid.tsv"):
        assert row[5] == json.dumps(json.loads(row[5]), separators=(",", ":"))
        for region in json.loads(row[5])["regions"]:
            (polygon,) = region["polygons"]
            assert len(polygon) == 2 * vertices[named_words(region["text"], SHAPES)]
            x0, y0, x1, y1 = region["box"]
            xs, ys = polygon[0::2], polygon[1::2]
            assert min(xs) == pytest.approx(x0, abs=0.01) and max(xs) == pytest.approx(x1, abs=0.01)
            assert min(ys) == pytest.approx(y0, abs=0.01) and max(ys) == pytest.approx(y1, abs=0.01)


def test_captions_are_lowercase_and_valid_rows_join_references(demo):
    for row in read_rows(demo / "caption_train.tsv"):
        assert row[2] == row[2].lower() and "&&" not in row[2] and row[3] == ""
    for row in read_rows(demo / "caption_valid.tsv"):
        references = row[2].split("&&")
        assert len(references) == 3 and all(references), row[0]
        assert row[3] == ""


def test_train_and_valid_images_are_disjoint(demo):
    train = {row[1] for row in read_rows(demo / "regions_train.tsv")}
    valid = {row[1] for row in read_rows(demo / "regions_valid.tsv")}
    assert not train & valid


def test_image_size_flag(tmp_path):
    generate(tmp_path, 1, "--image-size", "64")
    for row in read_rows(tmp_path / "refcoco_train.tsv"):
        assert decode_image(row[4]).shape == (64, 64, 3)
        assert max(map(float, row[3].split(","))) <= 64


def test_pairs_are_consecutive_images_and_each_region_is_in_its_image_only(demo):
    regions = read_rows(demo / "regions_train.tsv")
    nlvr = read_rows(demo / "nlvr_train.tsv")[::len(NLVR_STATEMENTS)]
    assert len(nlvr) == TRAIN_IMAGES // 2
    for k, row in enumerate(nlvr):
        assert json.loads(row[4]) == [regions[2 * k][1], regions[2 * k + 1][1]] and row[3] in ("true", "false")
    rows = read_rows(demo / "multi_image_refcoco_train.tsv")
    assert rows
    for uniq_id, pair_id, text, box, images, image in rows:
        pair = int(pair_id.rsplit("-", 1)[1])
        shown = [[r["text"].split()[-2:] for r in json.loads(regions[2 * pair + k][5])["regions"]] for k in (0, 1)]
        chosen = json.loads(regions[2 * pair + int(image) - 1][5])["regions"]
        assert [float(v) for v in box.split(",")] in [r["box"] for r in chosen]
        assert images == nlvr[pair][4]
        assert text.split()[-2:] in shown[int(image) - 1] and text.split()[-2:] not in shown[2 - int(image)]


def statement_holds(statement, shown):
    """Whether an nlvr statement holds for the two images' (colour, shape) lists, read from its words."""
    words = statement.split()
    if words[:3] == ["both", "images", "show"]:
        return all(any(words[4] in kind for kind in kinds) for kinds in shown)
    counts = [len(kinds) for kinds in shown]
    if "as many" in statement:
        return counts[0] == counts[1]
    if words[2] in ("more", "fewer"):
        return (counts[0] > counts[1]) if words[2] == "more" else (counts[0] < counts[1])
    return words[-2:] in shown[int(words[0][len("<image_"):-1]) - 1]


def test_nlvr_labels_are_what_the_two_images_show(demo):
    regions = read_rows(demo / "regions_train.tsv")
    rows = read_rows(demo / "nlvr_train.tsv")
    assert len(rows) == len(NLVR_STATEMENTS) * TRAIN_IMAGES // 2
    for uniq_id, pair_id, statement, label, _ in rows:
        pair = int(pair_id.rsplit("-", 1)[1])
        shown = [[r["text"].split()[-2:] for r in json.loads(regions[2 * pair + k][5])["regions"]] for k in (0, 1)]
        assert label == str(statement_holds(statement, shown)).lower(), uniq_id


def test_the_words_of_an_nlvr_statement_alone_do_not_tell_its_label():
    """Over many pairs of scenes, each form of statement (its colours and shapes left out) is true about
    as often as false, so a model must look at the images to beat the majority label."""
    rng = np.random.default_rng(0)
    truths = {}
    for _ in range(600):
        scenes = [sample_scene(rng, IMAGE_SIZE) for _ in range(2)]
        for statement, true in nlvr_statements(rng, scenes):
            form = " ".join("X" if word in COLOURS or word in SHAPES else word for word in statement.split())
            truths.setdefault(form, []).append(true)
    assert len(truths) == 7
    for form, values in truths.items():
        assert 0.25 < np.mean(values) < 0.75, form
