"""evaluate.py --report: the HTML page of every landed task, drawn from real predictions of tiny models
on a few demo rows, checked on disk and in headless Chromium (no console errors, no missing files)."""
import base64
import io
import json
import math
import os
import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
from browser import running_browser
from helpers import FIRST, LANDED, build_model, build_task, eval_args, few_rows, landed_task, read_lines
from evaluation.drawing import COLOURS, LINE_WIDTH, Mark, display_scale, draw_on_image, scaled_box
from evaluation.report import chosen_samples, highlighted, ranking_metric

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MEAN_METRICS = {"CIDEr", "acc@0.5", "mean_iou", "mIoU", "vqa_score", "accuracy", "r1@0.3", "r1@0.5", "r1@0.7"}


def report_of(task, args, out):
    torch.manual_seed(0)
    model = build_model(task).eval()
    metrics = evaluate.evaluate(args, [model], task, str(out / "results"), str(out / "report"))
    return metrics, out / "report"


@pytest.fixture(scope="module")
def reports(demo_dir, vocab_dir, tmp_path_factory):
    """{task: (metrics, report folder, results folder)} for every landed task, and multitask's refcoco."""
    out = tmp_path_factory.mktemp("reports")
    made = {}
    for name in LANDED:
        task, data = landed_task(name, demo_dir, vocab_dir, out)
        metrics, folder = report_of(task, eval_args(data), out / name)
        made[name] = (metrics, folder, out / name / "results")
    refcoco = few_rows(demo_dir, out, "refcoco_valid.tsv")
    mixture = build_task("multitask", f"caption={refcoco};refcoco={refcoco}", vocab_dir, tasks="caption:1,refcoco:1")
    args = eval_args(refcoco, task="refcoco")
    metrics, folder = report_of(evaluate.select_task(mixture, args), args, out / "multitask")
    made["multitask"] = (metrics, folder, out / "multitask" / "results")
    return made


class PageParts(HTMLParser):
    """The images, sample cards and script elements of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.cards, self.external = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if "sample" in attrs.get("class", "").split():
            self.cards.append(json.loads(attrs["data-scores"]))
        for key in ("src", "href"):
            if re.match(r"(https?:)?//", attrs.get(key) or ""):
                self.external.append(attrs[key])


def page_parts(folder):
    parts = PageParts()
    parts.feed((folder / "index.html").read_text(encoding="utf-8"))
    return parts


# ---- the pages on disk ---------------------------------------------------------------------------------------


def test_every_task_gets_a_page_whose_pictures_exist_and_whose_sample_scores_average_to_its_metrics(reports):
    for name, (metrics, folder, results) in reports.items():
        parts = page_parts(folder)
        predictions = (results / "predictions.jsonl").read_text().splitlines()
        assert len(parts.cards) == len(predictions) == metrics["rows"], name
        assert parts.images and not parts.external, name
        for src in parts.images:
            with Image.open(folder / src) as image:
                assert min(image.size) > 16, (name, src)
        # Metrics that are means over samples are the means of the per-sample ones the page sorts by;
        # the malformed count is their sum. (IE's per-sample F1 is not a share of the corpus one.)
        checked = 0
        for key in set(parts.cards[0]) & set(metrics) & (MEAN_METRICS | {"malformed"}):
            values = [card[key] for card in parts.cards]
            total = np.sum(values) if key == "malformed" else np.mean(values)
            assert total == pytest.approx(metrics[key], abs=1e-9), (name, key)
            checked += 1
        assert checked or name in ("ner", "re", "ee"), name


def test_video_rows_show_frame_strips_and_audio_rows_waveforms(reports):
    images = page_parts(reports["temporal_grounding"][1]).images
    assert sum(src.endswith("-frames.png") for src in images) == 2
    assert sum(src.endswith("-audio.png") for src in images) == 2
    assert all(src.endswith("-image.png") for src in page_parts(reports["refseg"][1]).images)


def test_caption_pages_rank_by_cider_per_image_with_corpus_statistics(reports):
    metrics, folder, _ = reports["caption"]
    cards = page_parts(folder).cards
    assert all(set(card) == {"CIDEr"} for card in cards)
    assert np.mean([card["CIDEr"] for card in cards]) == pytest.approx(metrics["CIDEr"], abs=1e-9)


def test_predicted_and_reference_boxes_are_drawn_in_their_colours_at_their_pixels(reports, demo_dir):
    metrics, folder, results = reports["refcoco"]
    predictions = [json.loads(line) for line in (results / "predictions.jsonl").read_text().splitlines()]
    checked = 0
    for i, prediction in enumerate(predictions):
        drawn = np.asarray(Image.open(folder / "media" / f"{i:06d}-image.png").convert("RGB"))
        size = drawn.shape[1::-1]
        scale = display_scale(original_size(demo_dir, i))
        assert size == tuple(round(v * scale) for v in original_size(demo_dir, i))
        boxes = {"prediction": prediction["box"], "reference": prediction["reference"]}
        for side, box in boxes.items():
            if box is None:
                continue
            edge = edge_pixels(scaled_box(box, scale), size)
            if side == "reference" and boxes["prediction"] is not None:
                # the prediction is drawn on top: look outside it (and its outline's width)
                px0, py0, px1, py1 = scaled_box(boxes["prediction"], scale)
                edge = [(x, y) for x, y in edge if not (px0 - LINE_WIDTH <= x <= px1 + LINE_WIDTH
                                                         and py0 - LINE_WIDTH <= y <= py1 + LINE_WIDTH)]
            assert edge, (i, side)
            colours = {tuple(drawn[y, x]) for x, y in edge}
            assert colours == {COLOURS[side]}, (i, side, colours)
            checked += 1
    assert checked >= 2 * len(predictions) - 1


def original_size(demo_dir, i):
    row = read_lines(demo_dir / "refcoco_valid.tsv", i + 1)[i].split("\t")
    return Image.open(io.BytesIO(base64.b64decode(row[4]))).size


def edge_pixels(box, size):
    """The pixels of a box outline LINE_WIDTH wide (inwards), clipped to the image."""
    x0, y0, x1, y1 = box
    pixels = {(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)
              if min(x - x0, x1 - x, y - y0, y1 - y) < LINE_WIDTH}
    return sorted((x, y) for x, y in pixels if 0 <= x < size[0] and 0 <= y < size[1])


def test_box_drawing_marks_exactly_the_outline():
    image = Image.new("RGB", (96, 64), (255, 255, 255))
    drawn = np.asarray(draw_on_image(image, [Mark("reference", "box", (10, 8, 40, 30)),
                                             Mark("prediction", "box", (50, 20, 90, 60))]))
    scale = display_scale((96, 64))
    for side, box in (("reference", (10, 8, 40, 30)), ("prediction", (50, 20, 90, 60))):
        x0, y0, x1, y1 = scaled_box(box, scale)
        assert tuple(drawn[(y0 + y1) // 2, x0]) == COLOURS[side]
        assert tuple(drawn[(y0 + y1) // 2, x1]) == COLOURS[side]
        assert tuple(drawn[(y0 + y1) // 2, x0 + LINE_WIDTH]) == (255, 255, 255)
        assert tuple(drawn[(y0 + y1) // 2, x0 - 1]) == (255, 255, 255)


def test_the_plotting_modules_leave_matplotlibs_backend_to_the_caller():
    """They draw through the object API (a Figure on an Agg canvas): importing them neither switches the
    process-wide backend nor brings in pyplot."""
    code = ("import sys, matplotlib; matplotlib.use('svg'); import evaluation.drawing, preprocess.plot_logs, "
            "tasks.weight_average; print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["svg", "False"], result.stderr[-2000:]


def test_ie_pages_table_records_and_highlight_mentions(reports):
    html = (reports["re"][1] / "index.html").read_text(encoding="utf-8")
    assert '<tr class="reference"><td class="reference">reference</td><td>relation</td>' in html
    assert '<mark class="reference">' in html or '<mark class="prediction reference">' in html
    assert highlighted("a red cat", [("reference", "red cat"), ("prediction", "a red")]) == (
        '<mark class="prediction">a </mark><mark class="prediction reference">red</mark>'
        '<mark class="reference"> cat</mark>')
    assert highlighted("red re", [("prediction", "re")]) == 'red <mark class="prediction">re</mark>'


def test_the_worst_half_and_a_spread_of_the_rest_are_drawn_when_there_are_too_many():
    values = [0.5, 0.1, math.nan, 0.9, 0.3, 0.7, 0.2, 0.8]
    assert chosen_samples(values, 8) == list(range(8))
    # worst two: rows 1 (0.1) and 6 (0.2); of the rest (0, 2, 3, 4, 5, 7), the first and the last
    assert chosen_samples(values, 4) == [0, 1, 6, 7]
    assert ranking_metric("cider", [{"CIDEr": 1.0}]) == "CIDEr"
    assert ranking_metric("acc@0.5", [{"mean_iou": 0.1, "acc@0.5": 0.0}]) == "acc@0.5"


@pytest.mark.slow
def test_evaluate_cli_writes_one_report_per_lambda_of_an_interpolation(checkpoints, demo_dir, tmp_path):
    data = few_rows(demo_dir, tmp_path, "refcoco_valid.tsv")
    evaluate.main(["--path", str(checkpoints[0]), str(checkpoints[2]), "--lambdas", "0", "1", "--data", data,
                   "--results-dir", str(tmp_path / "results"), "--report", str(tmp_path / "report"), "--cpu",
                   "--beam", "2", "--num-workers", "0"])
    for value in ("0", "1"):
        parts = page_parts(tmp_path / "report" / f"lambda_{value}")
        assert len(parts.cards) == len(parts.images) == len(FIRST)


# ---- the pages in Chromium -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    yield from running_browser()


def test_the_browser_check_catches_a_missing_image_and_a_script_error(browser, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "present.png")
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img src="present.png"><img src="missing.png"><script>undefinedFunction();</script>'
                    '</body></html>')
    found = browser.load(page)
    assert any("undefinedFunction" in p for p in found), found
    assert any("missing.png" in p for p in found), found
    assert any("ERR_FILE_NOT_FOUND" in p for p in found), found
    assert not any("present.png" in p for p in found), found


def test_every_report_loads_without_console_errors_or_missing_files_and_sorts(browser, reports):
    for name, (_, folder, _) in reports.items():
        assert browser.load(folder / "index.html") == [], name
        shown = browser.evaluate("document.getElementById('shown').textContent")
        cards = len(page_parts(folder).cards)
        assert shown == f"{cards} of {cards} samples shown", name
        browser.screenshot(folder / "screenshot.png")
        width, height = Image.open(folder / "screenshot.png").size
        assert width > 1200 and height > 400, name  # the whole page, less a scroll bar
    # Sorting worst first puts the lowest per-sample metric on top; a threshold hides the better ones.
    folder = reports["refcoco"][1]
    browser.load(folder / "index.html")
    key = browser.evaluate("document.getElementById('sort-key').value")
    assert key == "acc@0.5"
    browser.evaluate("const s = document.getElementById('sort-key'); s.value = 'mean_iou';"
                     "s.dispatchEvent(new Event('input'))")
    order = browser.evaluate("Array.from(document.querySelectorAll('.sample')).map("
                             "c => JSON.parse(c.dataset.scores).mean_iou)")
    assert order == sorted(order)
    threshold = order[1]
    browser.evaluate(f"const b = document.getElementById('below'); b.value = '{threshold!r}';"
                     "b.dispatchEvent(new Event('input'))")
    visible = browser.evaluate("Array.from(document.querySelectorAll('.sample')).filter(c => !c.hidden).length")
    assert visible == sum(v <= threshold for v in order)
    assert browser.load(folder / "index.html") == []


def test_the_screenshot_shows_the_predicted_box_where_the_drawn_image_has_it(browser, reports, demo_dir):
    metrics, folder, results = reports["refcoco"]
    prediction = json.loads((results / "predictions.jsonl").read_text().splitlines()[0])
    assert prediction["box"] is not None  # refcoco's constraint always gives four bins
    assert browser.load(folder / "index.html") == []
    rect = browser.evaluate("(() => { const r = document.querySelector('img[src=\"media/000000-image.png\"]')"
                            ".getBoundingClientRect(); return {x: r.x + scrollX, y: r.y + scrollY, "
                            "width: r.width, height: r.height}; })()")
    shot = np.asarray(browser.screenshot(folder / "screenshot-image.png", clip=rect))
    drawn = np.asarray(Image.open(folder / "media" / "000000-image.png").convert("RGB"))
    assert shot.shape == drawn.shape
    x0, y0, x1, y1 = scaled_box(prediction["box"], display_scale(original_size(demo_dir, 0)))
    for x, y in ((x0, (y0 + y1) // 2), (x1, (y0 + y1) // 2), ((x0 + x1) // 2, y1)):
        x, y = min(x, shot.shape[1] - 1), min(y, shot.shape[0] - 1)
        assert tuple(shot[y, x]) == COLOURS["prediction"], (x, y)
