"""Bad rows: every one is an error naming file, line and TSV column; --skip-bad-rows counts and logs them."""
import base64
import json
import logging
import os
import re
import subprocess
import sys

import pytest
import torch

from data.errors import BadInputError
from helpers import build_task, read_lines, set_cell, write_tsv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD_LINE = 3  # 1-based line of the bad row in the files written below
# 1-based TSV columns: refcoco  uniq_id 1, image_id 2, text 3, region 4, image 5
#                     caption  uniq_id 1, image_id 2, caption 3, objects 4, image 5


def demo_rows(demo_dir, name, count=4):
    return read_lines(demo_dir / name, count)


def with_bad_row(good, bad, line=BAD_LINE):
    return good[: line - 1] + [bad] + good[line - 1:]


def cell(row, column):
    return row.split("\t")[column - 1]


def jpeg_bytes(row, column):
    return base64.b64decode(cell(row, column))


def assert_located(error, path, line, column):
    message = str(error)
    assert re.match(rf"{re.escape(path)}:{line}: column {column}(:| \()", message), message
    assert (error.path, error.line, error.column) == (path, line, column)


# ---- one bad cell per case -----------------------------------------------------------------------


def latin1_text(row):
    """The row as bytes, its text cell written in Latin-1 rather than UTF-8."""
    cells = [c.encode("utf-8") for c in row.split("\t")]
    cells[2] = "café".encode("latin-1")
    return b"\t".join(cells)


def _b64(data):
    return base64.b64encode(data).decode()


REFCOCO_CASES = {
    # name: (make the bad row from a good one, expected column, reason fragment, extra task options)
    "too_few_columns": (lambda r, tmp: "\t".join(r.split("\t")[:3]), 4, "expected at least 5", {}),
    "invalid_base64": (lambda r, tmp: set_cell(r, 5, "not*base64@@"), 5, "invalid base64", {}),
    "base64_but_not_an_image": (
        lambda r, tmp: set_cell(r, 5, _b64(b"plain text, no image here" * 4)), 5, "cannot decode image", {}),
    "truncated_jpeg": (
        lambda r, tmp: set_cell(r, 5, _b64(jpeg_bytes(r, 5)[: len(jpeg_bytes(r, 5)) // 2])), 5, "cannot decode", {}),
    "empty_image_cell": (lambda r, tmp: set_cell(r, 5, ""), 5, "empty media cell", {}),
    "image_over_pixel_limit": (lambda r, tmp: r, 5, "exceeds the limit", {"max_image_pixels": 1000}),
    "unparsable_box": (lambda r, tmp: set_cell(r, 4, "1,2,x,4"), 4, "expected x0,y0,x1,y1", {}),
    "three_number_box": (lambda r, tmp: set_cell(r, 4, "1,2,3"), 4, "expected x0,y0,x1,y1", {}),
    "non_finite_box": (lambda r, tmp: set_cell(r, 4, "nan,2,30,40"), 4, "expected x0,y0,x1,y1", {}),
    "box_outside_image": (lambda r, tmp: set_cell(r, 4, "0,0,500,500"), 4, "outside the 64x64 image", {}),
    "empty_box_x0_after_x1": (lambda r, tmp: set_cell(r, 4, "40,10,20,30"), 4, "empty box", {}),
    "empty_box_zero_width": (lambda r, tmp: set_cell(r, 4, "20,10,20,30"), 4, "empty box", {}),
    "empty_referring_expression": (lambda r, tmp: set_cell(r, 3, "   "), 3, "empty referring expression", {}),
    "missing_media_file": (
        lambda r, tmp: set_cell(r, 5, "images/missing.jpg"), 5, "media file not found", {"media_dir": "{tmp}"}),
    "media_path_escaping_media_dir": (
        lambda r, tmp: set_cell(r, 5, "../x.jpg"), 5, "outside the media dir", {"media_dir": "{tmp}/media"}),
    "symlink_out_of_media_dir": (
        lambda r, tmp: set_cell(r, 5, "link.jpg"), 5, "outside the media dir", {"media_dir": "{tmp}/media"}),
    "absolute_media_path": (
        lambda r, tmp: set_cell(r, 5, f"{tmp}/x.jpg"), 5, "must be relative", {"media_dir": "{tmp}"}),
    "media_path_without_media_dir": (lambda r, tmp: set_cell(r, 5, "x.jpg"), 5, "no media dir is set", {}),
    "invalid_utf8_in_text": (lambda r, tmp: latin1_text(r), 3, "not valid UTF-8", {}),
}


@pytest.mark.parametrize("case", sorted(REFCOCO_CASES))
def test_refcoco_bad_row_names_file_line_and_column(case, demo_dir, vocab_dir, tmp_path):
    make_bad, column, reason, options = REFCOCO_CASES[case]
    good = demo_rows(demo_dir, "refcoco_valid.tsv")
    (tmp_path / "media").mkdir()
    (tmp_path / "x.jpg").write_bytes(jpeg_bytes(good[0], 5))  # "../x.jpg" exists, yet must be refused
    (tmp_path / "media" / "link.jpg").symlink_to(tmp_path / "x.jpg")  # so does the link's target
    bad = make_bad(good[0], tmp_path)
    rows = with_bad_row(good, bad) if case != "image_over_pixel_limit" else good
    path = write_tsv(tmp_path / "rows.tsv", rows)
    options = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in options.items()}
    task = build_task("refcoco", path, vocab_dir, **options)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    bad_index = BAD_LINE - 1
    if case != "image_over_pixel_limit":
        for i in range(len(dataset)):
            if i != bad_index:
                assert dataset[i]["target"].numel() == 5  # the good rows around it still load
    with pytest.raises(BadInputError) as info:
        dataset[bad_index]
    assert_located(info.value, path, BAD_LINE, column)
    assert reason in info.value.reason


def test_a_huge_bad_cell_is_quoted_as_a_short_excerpt(demo_dir, vocab_dir, tmp_path):
    good = demo_rows(demo_dir, "refcoco_valid.tsv")
    huge = "1," * (25 << 20) + "x"  # a 50 MB box cell
    path = write_tsv(tmp_path / "rows.tsv", with_bad_row(good, set_cell(good[0], 4, huge)))
    task = build_task("refcoco", path, vocab_dir)
    task.load_dataset("valid")
    with pytest.raises(BadInputError) as info:
        task.dataset("valid")[BAD_LINE - 1]
    assert_located(info.value, path, BAD_LINE, 4)
    message = str(info.value)
    assert len(message) < len(path) + 600
    assert "expected x0,y0,x1,y1 in pixels, got '1,1,1," in message and message.endswith(",1,1,x'")
    assert f"[{len(repr(huge)) + len('expected x0,y0,x1,y1 in pixels, got ') - 400:,} characters left out]" in message


def test_media_path_under_media_dir_loads_like_base64(demo_dir, vocab_dir, tmp_path):
    good = demo_rows(demo_dir, "refcoco_valid.tsv", 2)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(jpeg_bytes(good[0], 5))
    path = write_tsv(tmp_path / "rows.tsv", [good[0], set_cell(good[0], 5, "images/a.jpg")])
    task = build_task("refcoco", path, vocab_dir, media_dir=str(tmp_path))
    task.load_dataset("valid")
    inline, from_file = task.dataset("valid")[0], task.dataset("valid")[1]
    assert torch.equal(inline["image"], from_file["image"]) and torch.equal(inline["target"], from_file["target"])


@pytest.mark.parametrize("caption", ["", "&&", " ... && !"])
def test_caption_without_any_reference_names_the_caption_column(caption, demo_dir, vocab_dir, tmp_path):
    good = demo_rows(demo_dir, "caption_valid.tsv")
    path = write_tsv(tmp_path / "captions.tsv", with_bad_row(good, set_cell(good[0], 3, caption)))
    task = build_task("caption", path, vocab_dir)
    task.load_dataset("valid")
    assert task.dataset("valid")[0]["target"].numel() > 1
    with pytest.raises(BadInputError) as info:
        task.dataset("valid")[BAD_LINE - 1]
    assert_located(info.value, path, BAD_LINE, 3)
    assert "empty caption" in info.value.reason


def test_caption_row_with_too_few_columns(demo_dir, vocab_dir, tmp_path):
    good = demo_rows(demo_dir, "caption_valid.tsv")
    bad = "\t".join(good[0].split("\t")[:2])
    path = write_tsv(tmp_path / "captions.tsv", with_bad_row(good, bad))
    task = build_task("caption", path, vocab_dir)
    task.load_dataset("valid")
    with pytest.raises(BadInputError) as info:
        task.dataset("valid")[BAD_LINE - 1]
    assert_located(info.value, path, BAD_LINE, 3)  # the first missing column


def test_column_is_the_file_column_under_custom_selected_cols(demo_dir, vocab_dir, tmp_path):
    """With another layout (uniq_id, image, text, box) the error points at the image's own file column."""
    def reorder(row):
        c = row.split("\t")
        return "\t".join([c[0], c[4], c[2], c[3]])

    good = [reorder(r) for r in demo_rows(demo_dir, "refcoco_valid.tsv")]
    path = write_tsv(tmp_path / "custom.tsv", with_bad_row(good, set_cell(good[0], 2, "@@not-base64")))
    task = build_task("refcoco", path, vocab_dir, selected_cols="0,1,2,3")
    task.load_dataset("valid")
    assert task.dataset("valid")[0]["target"].numel() == 5
    with pytest.raises(BadInputError) as info:
        task.dataset("valid")[BAD_LINE - 1]
    assert_located(info.value, path, BAD_LINE, 2)


# ---- --skip-bad-rows -----------------------------------------------------------------------------


@pytest.fixture
def three_bad_rows(demo_dir, tmp_path):
    """12 rows: lines 2, 7 and 12 are bad, one in each batch of four."""
    good = demo_rows(demo_dir, "refcoco_valid.tsv", 12)
    rows = list(good)
    rows[1] = set_cell(good[1], 4, "1,2,x,4")
    rows[6] = set_cell(good[6], 5, "@@@")
    rows[11] = "\t".join(good[11].split("\t")[:2])
    path = write_tsv(tmp_path / "three_bad.tsv", rows)
    expected = [f"{path}:2: column 4 (region):", f"{path}:7: column 5 (image):", f"{path}:12: column 3:"]
    return path, expected


def test_skip_bad_rows_marks_collates_counts_and_enforces_the_limit(three_bad_rows, vocab_dir, caplog):
    path, expected = three_bad_rows
    task = build_task("refcoco", path, vocab_dir, skip_bad_rows=2)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    samples = [dataset[i] for i in range(len(dataset))]
    marker = samples[1]
    assert set(marker) == {"id", "bad_row"} and marker["id"] == 1
    assert marker["bad_row"].startswith(expected[0])

    batch = dataset.collater(samples[0:4])
    assert batch["id"].tolist() == [0, 2, 3]
    assert batch["net_input"]["src_tokens"].size(0) == 3 == len(batch["meta"]) == batch["target"].size(0)
    assert batch["net_input"]["image"].shape == (3, 3, 64, 64)
    assert len(batch["bad_rows"]) == 1 and batch["bad_rows"][0].startswith(expected[0])

    with caplog.at_level(logging.WARNING):
        assert task.bad_rows.count(batch) == 1
        assert task.bad_rows.count(dataset.collater(samples[4:8])) == 1
    assert len(task.bad_rows.seen) == 2
    logged = [r.getMessage() for r in caplog.records]
    assert any(expected[0] in m for m in logged) and any(expected[1] in m for m in logged)
    assert task.bad_rows.count(dataset.collater(samples[8:8])) == 0  # a batch without bad rows

    # the same rows met again (the next epoch) do not use the budget up twice
    assert task.bad_rows.count(dataset.collater(samples[0:8])) == 2
    assert len(task.bad_rows.seen) == 2

    with pytest.raises(RuntimeError, match=r"3 bad rows, more than --skip-bad-rows 2") as info:
        task.bad_rows.count(dataset.collater(samples[8:12]))
    assert expected[2] in str(info.value)


def test_batch_of_only_bad_rows_has_no_net_input(three_bad_rows, vocab_dir):
    path, expected = three_bad_rows
    task = build_task("refcoco", path, vocab_dir, skip_bad_rows=5)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[1], dataset[6]])
    assert set(batch) == {"bad_rows"}
    assert [m[: len(e)] for m, e in zip(batch["bad_rows"], expected)] == expected[:2]
    assert task.bad_rows.count(batch) == 2


def test_bad_rows_travel_from_dataloader_workers(three_bad_rows, vocab_dir):
    path, expected = three_bad_rows
    task = build_task("refcoco", path, vocab_dir, skip_bad_rows=3)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    # A plain DataLoader, as fairseq's iterator builds it; fairseq's own iterator object takes 5 s per worker
    # to shut down when garbage-collected in-process.
    batches = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=dataset.collater)
    seen, good = [], 0
    for batch in batches:
        seen += batch["bad_rows"]
        good += len(batch.get("id", []))
        task.bad_rows.count(batch)
    assert good == 9
    assert len(seen) == 3
    for prefix in expected:
        assert sum(m.startswith(prefix) for m in seen) == 1, (prefix, seen)
    assert len(task.bad_rows.seen) == 3


def test_without_skip_bad_rows_a_worker_stops_with_the_located_message(demo_dir, vocab_dir, tmp_path):
    """From a DataLoader worker the error comes back re-raised by torch; its message still names the cell."""
    good = demo_rows(demo_dir, "refcoco_valid.tsv", 8)
    # The bad row in the last batch: no batch is left in flight, so the worker shuts down at once.
    path = write_tsv(tmp_path / "rows.tsv", good[:7] + [set_cell(good[7], 4, "1,2,x,4")])
    task = build_task("refcoco", path, vocab_dir)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batches = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=1, collate_fn=dataset.collater)
    # torch rebuilds a worker's exception from one string; BadInputError takes (path, line, column, ...),
    # so it arrives as a RuntimeError carrying the worker's traceback text. (A plain try/except rather than
    # pytest.raises: a kept traceback would leave the loader to the cyclic GC, whose worker shutdown stalls 5 s.)
    try:
        for _ in batches:
            pass
        raised = None
    except (BadInputError, RuntimeError) as error:
        raised = str(error)
    message = f"{path}:8: column 4 (region): expected x0,y0,x1,y1"
    assert raised is not None and (f"BadInputError: {message}" in raised or raised.startswith(message)), raised


# ---- end to end: train.py ------------------------------------------------------------------------

TINY_MODEL_FLAGS = ["--arch", "unify_tiny", "--embed-dim", "32", "--ffn-dim", "64", "--attention-heads", "2",
                    "--encoder-layers", "1", "--decoder-layers", "1", "--image-backbone", "test_resnet",
                    "--image-backbone-out-index", "2", "--patch-image-size", "64"]


def train_command(data, vocab_dir, save_dir, *extra):
    return [sys.executable, "train.py", data, "--task", "refcoco", "--vocab-dir", str(vocab_dir), *TINY_MODEL_FLAGS,
            "--criterion", "constrained_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-3",
            "--batch-size", "4", "--max-epoch", "1", "--save-dir", str(save_dir), "--no-save",
            "--num-workers", "0", "--log-format", "simple", "--seed", "1", *extra]


@pytest.fixture
def train_with_two_bad_rows(demo_dir, tmp_path):
    """20 good training rows with bad ones at lines 6 (box) and 15 (image); 8 validation rows."""
    good = demo_rows(demo_dir, "refcoco_train.tsv", 20)
    rows = good[:5] + [set_cell(good[5], 4, "1,2,x,4")] + good[5:13] + [set_cell(good[13], 5, "@@@")] + good[13:]
    train = write_tsv(tmp_path / "train.tsv", rows)
    valid = write_tsv(tmp_path / "valid.tsv", demo_rows(demo_dir, "refcoco_valid.tsv", 8))
    return f"{train},{valid}", [f"{train}:6: column 4 (region):", f"{train}:15: column 5 (image):"]


def run(command):
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_train_skips_two_bad_rows_and_reports_them(train_with_two_bad_rows, vocab_dir, tmp_path):
    data, expected = train_with_two_bad_rows
    result = run(train_command(data, vocab_dir, tmp_path / "ckpt", "--skip-bad-rows", "2"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for message in expected:
        assert message in output, output[-3000:]
    summary = [line for line in output.splitlines() if "| train | epoch 001 |" in line]
    assert summary and "| bad_rows 2 |" in summary[-1], summary
    train = data.split(",")[0]
    assert listed_bad_rows(tmp_path / "ckpt") == [
        {"file": train, "line": 6, "column": 4, "column_name": "region"},
        {"file": train, "line": 15, "column": 5, "column_name": "image"}]


def listed_bad_rows(save_dir):
    """Where the rows in --save-dir's bad_rows.jsonl are, in the order met, each checked against its message."""
    with open(save_dir / "bad_rows.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        assert row["message"] == str(BadInputError(row["file"], row["line"], row["column"], row["reason"],
                                                   row["column_name"]))
    return sorted(({k: row[k] for k in ("file", "line", "column", "column_name")} for row in rows),
                  key=lambda row: row["line"])


@pytest.mark.slow
def test_train_stops_at_the_first_bad_row_by_default(train_with_two_bad_rows, vocab_dir, tmp_path):
    data, expected = train_with_two_bad_rows
    result = run(train_command(data, vocab_dir, tmp_path / "ckpt", "--skip-bad-rows", "0"))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert any(message in output for message in expected), output[-3000:]
    assert "BadInputError" in output
    assert not (tmp_path / "ckpt" / "bad_rows.jsonl").exists()  # nothing was skipped


@pytest.mark.slow
def test_the_row_over_the_budget_is_listed_too(train_with_two_bad_rows, vocab_dir, tmp_path):
    data, expected = train_with_two_bad_rows
    result = run(train_command(data, vocab_dir, tmp_path / "ckpt", "--skip-bad-rows", "1"))
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "more than --skip-bad-rows 1" in output, output[-3000:]
    assert [row["line"] for row in listed_bad_rows(tmp_path / "ckpt")] == [6, 15]
