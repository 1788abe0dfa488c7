"""serve.py on a trained checkpoint, started as a user starts it: a real HTTP client sends good and bad
uploads, an oversized body, a wrong content type and concurrent requests; headless Chromium uploads a
photo through the page and the drawn prediction appears, in its colour, with no console error. In
process, requests beyond the queue are refused with 503."""
import asyncio
import base64
import io
import json
import subprocess
import sys
import time

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

import serve
from browser import problems, running_browser
from conftest import ROOT
from helpers import build_model, landed_task, read_lines
from predict import Input, Predictor
from evaluation.drawing import COLOURS

pytestmark = pytest.mark.slow
MAX_UPLOAD_MB = 1


@pytest.fixture(scope="module")
def photos(demo_dir, tmp_path_factory):
    """(path, text) of the first three refcoco validation photos, written as files."""
    folder = tmp_path_factory.mktemp("photos")
    found = []
    for i, row in enumerate(read_lines(demo_dir / "refcoco_valid.tsv", 3)):
        cells = row.split("\t")
        (folder / f"{i}.jpg").write_bytes(base64.b64decode(cells[4]))
        found.append((folder / f"{i}.jpg", cells[2]))
    return found


@pytest.fixture(scope="module")
def server(checkpoints):
    """The URL of serve.py on the trained refcoco checkpoint, on a free port of 127.0.0.1."""
    process = subprocess.Popen(
        [sys.executable, "serve.py", "--path", str(checkpoints[-1]), "--port", "0", "--cpu", "--beam", "2",
         "--batch-size", "4", "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-text-chars", "200"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, output = time.time() + 180, []
    while time.time() < deadline:
        line = process.stdout.readline()
        output.append(line)
        if line.startswith("serving on "):
            break
        assert line or process.poll() is None, "".join(output)
    url = line.split()[-1].rstrip("/")
    assert url.startswith("http://127.0.0.1:"), "".join(output)
    yield url
    process.terminate()
    process.wait(timeout=30)


def post(url, data=None, json_body=None, headers=None):
    async def send():
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/api/predict", data=data, json=json_body, headers=headers) as response:
                return response.status, await response.json()
    return asyncio.run(send())


def form(photo=None, text="", medium="image", **fields):
    data = aiohttp.FormData()
    for name, value in [("text", text), *fields.items()]:
        data.add_field(name, value)
    if photo is not None:
        data.add_field(medium, photo.read_bytes() if hasattr(photo, "read_bytes") else photo, filename="upload")
    return data


def prediction_pixels(png):
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return int((picture == COLOURS["prediction"]).all(-1).sum())


def test_an_upload_gets_its_box_and_its_picture_and_json_gets_the_same(server, photos):
    photo, text = photos[0]
    status, body = post(server, form(photo, text, draw="1"))
    assert status == 200, body
    width, height = Image.open(photo).size
    x0, y0, x1, y1 = body["result"]["box"]
    assert body["task"] == "refcoco" and 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
    [picture] = body["pictures"]
    assert picture["kind"] == "image" and prediction_pixels(base64.b64decode(picture["png"])) > 0
    status, same = post(server, json_body={"text": text, "image": base64.b64encode(photo.read_bytes()).decode()})
    assert status == 200 and same["result"] == body["result"] and same["pictures"] == []


@pytest.mark.parametrize("request_of, status, message", [
    (lambda photo: dict(data=form(b"GIF89a not really", "the circle")), 400,
     "image upload:1: column 2 (image): cannot decode image"),
    (lambda photo: dict(data=form(photo, "the circle", medium="video")), 400, "the refcoco task reads no video"),
    (lambda photo: dict(data=form(photo, "")), 400, "empty referring expression"),
    (lambda photo: dict(data=form(photo, "x" * 201)), 400, "text: 201 characters, more than the limit of 200"),
    (lambda photo: dict(data=form(photo, "word " * 40)), 400, "more than --max-src-length"),
    (lambda photo: dict(data=form(photo, "x", task="caption")), 400, "unknown task 'caption': this model runs refcoco"),
    (lambda photo: dict(data=form(photo, "x", color="red")), 400, "unknown fields: color"),
    (lambda photo: dict(data=form(b"\xff" * (MAX_UPLOAD_MB << 20), "x")), 413, "larger than the limit of 1048576 bytes"),
    (lambda photo: dict(data=b"text=x", headers={"Content-Type": "text/plain"}), 415, "send multipart/form-data"),
    (lambda photo: dict(json_body={"text": "x", "image": "../../etc/passwd"}), 400, "image: invalid base64"),
    (lambda photo: dict(json_body=["x"]), 400, "the body must be a JSON object"),
])
def test_bad_requests_get_a_4xx_with_the_reason_and_the_server_goes_on(request_of, status, message, server, photos):
    answer, body = post(server, **request_of(photos[0][0]))
    assert answer == status and message in body["error"], body
    assert post(server, form(*photos[0]))[0] == 200


def test_concurrent_requests_are_all_answered_as_each_alone(server, photos):
    alone = [post(server, form(photo, text))[1]["result"] for photo, text in photos]

    async def many():
        async with aiohttp.ClientSession() as session:
            async def one(k):
                photo, text = photos[k % len(photos)]
                async with session.post(f"{server}/api/predict", data=form(photo, text)) as response:
                    return k, response.status, await response.json()
            return await asyncio.gather(*(one(k) for k in range(24)))

    for k, status, body in asyncio.run(many()):
        assert status == 200, body
        expected = alone[k % len(photos)]
        assert body["result"]["box"] == expected["box"]
        assert body["result"]["score"] == pytest.approx(expected["score"], abs=1e-4)  # batched with others


@pytest.fixture(scope="module")
def browser():
    yield from running_browser()


def test_the_page_shows_the_drawn_prediction_of_an_uploaded_photo(server, photos, browser, tmp_path):
    photo, text = photos[0]
    assert browser.load(f"{server}/") == []
    wait_for(browser, "document.body.dataset.ready === '1'")
    assert browser.evaluate("document.getElementById('task').value") == "refcoco"
    root = browser.call("DOM.getDocument")["root"]["nodeId"]
    node = browser.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
    browser.call("DOM.setFileInputFiles", files=[str(photo)], nodeId=node)
    browser.evaluate(f"document.getElementById('text').value = {json.dumps(text)};"
                     "document.getElementById('run').click()")
    wait_for(browser, "document.body.dataset.result !== undefined")
    assert browser.evaluate("document.body.dataset.result") == "ok", browser.evaluate(
        "document.getElementById('status').textContent")
    shown = json.loads(browser.evaluate("document.getElementById('json').textContent"))
    assert shown["kind"] == "box" and len(shown["box"]) == 4
    assert browser.evaluate("document.images[0].naturalWidth") > 0
    assert problems(browser.events) == []
    screenshot = browser.screenshot(tmp_path / "page.png")
    assert (np.asarray(screenshot) == COLOURS["prediction"]).all(-1).sum() > 0


def wait_for(browser, condition, seconds=60):
    deadline = time.time() + seconds
    while not browser.evaluate(condition):
        assert time.time() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.1)


def test_requests_beyond_the_queue_get_503_and_the_server_goes_on(demo_dir, vocab_dir, photos, tmp_path):
    """In process, on a tiny refcoco model: with a queue of one, requests sent together while one waits are
    refused with 503, and a request after them is answered."""
    task, _ = landed_task("refcoco", demo_dir, vocab_dir, tmp_path)
    predictor = Predictor([build_model(task).eval()], task, beam=2)
    app = serve.make_app(predictor, serve.limits_of(serve.parse_args(["--path", "unused", "--queue", "1"])))
    photo, text = photos[0]

    async def scenario():
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            async def one():
                async with client.post("/api/predict", data=form(photo, text)) as response:
                    return response.status, await response.json()
            together = await asyncio.gather(*(one() for _ in range(8)))
            return together, await one()

    together, after = asyncio.run(scenario())
    statuses = sorted(status for status, _ in together)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses
    assert all("the server is busy" in body["error"] for status, body in together if status == 503)
    assert after[0] == 200 and len(after[1]["result"]["box"]) == 4


def test_several_images_come_as_several_uploads_or_a_json_list(demo_dir, vocab_dir, tmp_path):
    """In process, on a tiny nlvr model: a row of two images as two uploads of ``image`` and as a JSON list of
    base64 strings gets what the predictor gives; a bad item of the list is a 400 naming it."""
    task, _ = landed_task("nlvr", demo_dir, vocab_dir, tmp_path)
    predictor = Predictor([build_model(task).eval()], task, beam=2)
    app = serve.make_app(predictor, serve.limits_of(serve.parse_args(["--path", "unused"])))
    cells = read_lines(demo_dir / "nlvr_valid.tsv", 1)[0].split("\t")
    images = [base64.b64decode(cell) for cell in json.loads(cells[4])]
    uploads = form(images[0], cells[2])
    uploads.add_field("image", images[1], filename="second")
    requests = [dict(data=uploads), dict(json={"text": cells[2], "image": json.loads(cells[4])}),
                dict(json={"text": cells[2], "image": [json.loads(cells[4])[0], "not base64!"]})]

    async def scenario():
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            answers = []
            for request in requests:
                async with client.post("/api/predict", **request) as response:
                    answers.append((response.status, await response.json()))
            return answers

    (uploaded, by_upload), (listed, by_list), (bad, error) = asyncio.run(scenario())
    [expected] = predictor.predict([Input(cells[2], image=images)])
    assert uploaded == listed == 200 and by_upload["result"] == by_list["result"] == expected.json()
    assert bad == 400 and "image 2 of 2: invalid base64" in error["error"]
