"""A local web demo and JSON API over the predictor (predict.py), on aiohttp.

    python serve.py --path checkpoint.pt            # http://127.0.0.1:8000/

``GET /`` is a page where a person picks a task, uploads a photo, a clip or a recording, types the text,
and sees the prediction drawn on it (as the evaluation report draws it) beside its JSON.
``POST /api/predict`` takes a multipart form (fields ``task``, ``text``, ``premise``, ``schema``, ``draw``
and one file in ``image``, ``video`` or ``audio``, or several in ``image`` for a row of several images) or a
JSON object (the same fields, media as base64; ``image`` may be a list)
and answers ``{"task", "result", "pictures": [{"kind", "description", "png": base64}]}``;
``GET /api/tasks`` lists the tasks. The model is loaded once and runs in one thread: requests wait in
a queue of ``--queue`` and those waiting together are decoded as one batch (of ``--batch-size``).
Requests are bounded: body size (413), text length, image pixels and clip seconds (400, through the
task's own media limits), a full queue (503); bad input is a 400 with the reason. Media come only from
the request's bytes: nothing is read from the server's disk by a request.
"""
import argparse
import asyncio
import base64
import binascii
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

from utils.logs import add_verbose_flag, set_up_logging  # noqa: E402

if __name__ == "__main__":
    set_up_logging()  # before fairseq is imported (utils/logs.py says why)

from aiohttp import web  # noqa: E402

import evaluate  # noqa: E402
from data.dataset import InputPlace  # noqa: E402
from data.errors import BadInputError  # noqa: E402
from predict import EXTENSIONS, MEDIA, PRECISIONS, Input, Predictor  # noqa: E402
from evaluation.drawing import COLOURS, SIDES  # noqa: E402

logger = logging.getLogger("serve")
TEXT_FIELDS = ("text", "premise")
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>UniGround</title>
<style>
body { font: 14px/1.4 sans-serif; margin: 1.5em; color: #222; }
form { display: flex; flex-direction: column; align-items: flex-start; gap: 0.5em; padding: 0.6em;
       background: #f3f3f3; max-width: 44em; }
form label > :first-child { margin-left: 0.5em; }
#text, #premise, textarea { width: 32em; }
textarea { height: 3em; vertical-align: top; }
#status.error { color: #b00; }
#output { display: flex; flex-wrap: wrap; gap: 1.5em; margin-top: 1em; }
figure { margin: 0; } figcaption { color: #777; font-size: 12px; }
pre { background: #f8f8f8; padding: 0.6em; max-width: 40em; overflow: auto; }
.swatch { display: inline-block; width: 1.2em; height: 0.8em; background: PREDICTION_COLOUR; }
</style>
</head>
<body>
<h1>UniGround</h1>
<p>Pick a task, give a photo, a clip or a recording and the text; the prediction is drawn in
<span class="swatch"></span> vermillion, its JSON beside it.</p>
<form id="form">
<label>task <select id="task" name="task"></select></label>
<label>file <input id="file" type="file"></label>
<label data-field="text">text <input id="text" name="text" type="text"></label>
<label data-field="premise">premise <input id="premise" name="premise" type="text"></label>
<label data-field="schema">schema <textarea id="schema" name="schema"
  placeholder='{"entity": ["person", "place"]}'></textarea></label>
<button id="run" type="submit">Predict</button>
</form>
<p id="status"></p>
<div id="output"><div id="pictures"></div><pre id="json"></pre></div>
<script>
const EXTENSIONS = EXTENSIONS_JSON;
const [form, task, file, status, pictures, json] = ["form", "task", "file", "status", "pictures", "json"].map(
    id => document.getElementById(id));
function medium(chosen) {
  const kind = chosen.type.split("/")[0];
  if (kind in EXTENSIONS) return kind;
  const extension = chosen.name.slice(chosen.name.lastIndexOf(".")).toLowerCase();
  return Object.keys(EXTENSIONS).find(m => EXTENSIONS[m].includes(extension)) || "image";
}
function say(text, error) {
  status.textContent = text;
  status.className = error ? "error" : "";
}
let reads = {};
function showFields() {
  const wanted = reads[task.value] || [];
  for (const label of document.querySelectorAll("[data-field]")) {
    label.hidden = !wanted.includes(label.dataset.field);
    for (const input of label.querySelectorAll("input, textarea")) input.disabled = label.hidden;
  }
  file.accept = wanted.filter(m => m in EXTENSIONS).map(m => m + "/*").join(",");
}
task.addEventListener("change", showFields);
fetch("/api/tasks").then(r => r.json()).then(info => {
  reads = info.reads;
  for (const name of info.tasks) task.add(new Option(name, name));
  task.value = info.default;
  showFields();
  document.body.dataset.ready = "1";
});
form.addEventListener("submit", async event => {
  event.preventDefault();
  const data = new FormData(form);
  data.append("draw", "1");
  if (file.files.length) data.append(medium(file.files[0]), file.files[0]);
  say("predicting ...", false);
  delete document.body.dataset.result;
  const response = await fetch("/api/predict", {method: "POST", body: data});
  const body = await response.json();
  if (!response.ok) {
    say(response.status + ": " + body.error, true);
    document.body.dataset.result = "error";
    return;
  }
  pictures.replaceChildren(...body.pictures.map(p => {
    const figure = document.createElement("figure"), img = document.createElement("img");
    const caption = document.createElement("figcaption");
    img.src = "data:image/png;base64," + p.png;
    img.alt = caption.textContent = p.description;
    figure.append(img, caption);
    return figure;
  }));
  json.textContent = JSON.stringify(body.result, null, 2);
  say(body.task + ": done", false);
  document.body.dataset.result = "ok";
});
</script>
</body>
</html>
"""


class RequestError(ValueError):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


class Batcher:
    """Runs the predictor in one thread on batches of the requests waiting together (of one task)."""

    def __init__(self, predictor, batch_size, queue_size, prepare_threads=2):
        self.predictor, self.batch_size = predictor, batch_size
        self.queue, self.most_waiting, self.waiting = asyncio.Queue(), queue_size, 0
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.prepare_threads = ThreadPoolExecutor(prepare_threads, thread_name_prefix="prepare")
        self.worker = None

    def start(self):
        self.worker = asyncio.get_running_loop().create_task(self.run())

    async def stop(self):
        self.worker.cancel()
        self.model_thread.shutdown(wait=False, cancel_futures=True)
        self.prepare_threads.shutdown(wait=False, cancel_futures=True)

    async def predict(self, item, task, draw):
        """The result of one input: decoded beside the model thread, then batched with the others waiting."""
        if self.waiting >= self.most_waiting:
            raise RequestError(f"the server is busy: {self.waiting} requests are waiting; try again", 503)
        self.waiting += 1
        try:
            loop = asyncio.get_running_loop()
            prepared = await loop.run_in_executor(self.prepare_threads, self.predictor.prepare, item, task)
            future = loop.create_future()
            self.queue.put_nowait((task, draw, prepared, future))
            return await future
        finally:
            self.waiting -= 1

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            waiting = [await self.queue.get()]
            while len(waiting) < self.batch_size and not self.queue.empty():
                waiting.append(self.queue.get_nowait())
            for task in dict.fromkeys(entry[0] for entry in waiting):
                batch = [entry for entry in waiting if entry[0] == task]
                draw = any(entry[1] for entry in batch)
                try:
                    results = await loop.run_in_executor(self.model_thread, self.predictor.finish,
                                                         [entry[2] for entry in batch], task, draw)
                except Exception as error:  # noqa: BLE001 (the requests get it; the server goes on)
                    logger.exception("a batch of %d failed", len(batch))
                    for entry in batch:
                        if not entry[3].done():
                            entry[3].set_exception(error)
                    continue
                for entry, result in zip(batch, results):
                    if not entry[3].done():  # a client that left
                        entry[3].set_result(result)


def media_from_json(body):
    """The media of a JSON request: base64 strings, decoded here (never a path); ``image`` may be a list of
    them (a row of several images)."""
    media = {}
    for medium in MEDIA:
        value = body.get(medium)
        if value is None:
            continue
        if medium == "image" and isinstance(value, list) and value:
            media[medium] = [decoded(v, f"image {k} of {len(value)}") for k, v in enumerate(value, start=1)]
        else:
            media[medium] = decoded(value, medium)
    return media


def decoded(value, name):
    if not isinstance(value, str):
        raise RequestError(f"{name}: expected the file's bytes as a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(f"{name}: invalid base64: {error}") from None


async def read_request(request):
    """(fields, media) of a multipart form or a JSON object; 415 for another content type."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except json.JSONDecodeError as error:
            raise RequestError(f"the body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object")
        return body, media_from_json(body)
    if request.content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise RequestError(f"send multipart/form-data or application/json, not {request.content_type}", 415)
    form = await request.post()
    fields, media = {}, {}
    for name, value in form.items():
        if name in MEDIA:
            if not isinstance(value, web.FileField):
                raise RequestError(f"{name}: expected an uploaded file")
            media.setdefault(name, []).append(value.file.read())
        else:
            fields[name] = value if isinstance(value, str) else None
    return fields, {name: files[0] if len(files) == 1 else files for name, files in media.items()}


def request_input(fields, media, limits):
    """The ``Input`` of a request's fields and media, its text bounded."""
    unknown = set(fields) - {"task", "draw", "schema", "id", *TEXT_FIELDS, *MEDIA}
    if unknown:
        raise RequestError(f"unknown fields: {', '.join(sorted(unknown))}")
    texts = {}
    for name in TEXT_FIELDS:
        value = fields.get(name) or ""
        if not isinstance(value, str):
            raise RequestError(f"{name}: expected text")
        if len(value) > limits.max_text_chars:
            raise RequestError(f"{name}: {len(value)} characters, more than the limit of {limits.max_text_chars}")
        texts[name] = value
    schema = fields.get("schema")
    if isinstance(schema, str):
        try:
            schema = json.loads(schema) if schema.strip() else None
        except json.JSONDecodeError as error:
            raise RequestError(f"schema: not valid JSON: {error}") from None
    if schema is not None and not isinstance(schema, dict):
        raise RequestError("schema: expected a JSON object of label lists")
    name = next((f"{medium} upload" for medium in media), "request")
    return Input(schema=schema, place=InputPlace(name), **texts, **media)


def json_error(message, status):
    return web.json_response({"error": message}, status=status)


def make_app(predictor, limits):
    """The aiohttp application over a loaded predictor."""
    batcher = Batcher(predictor, limits.batch_size, limits.queue)
    tasks = predictor.task_names()
    for name in tasks:
        task, _ = predictor.task(name)
        task.cfg.max_image_pixels = min(task.cfg.max_image_pixels, limits.max_image_pixels)
        task.cfg.max_video_seconds = min(task.cfg.max_video_seconds, limits.max_seconds)
        task.cfg.max_input_audio_seconds = min(task.cfg.max_input_audio_seconds, limits.max_seconds)
        task.cfg.max_media_bytes = min(task.cfg.max_media_bytes, limits.max_upload_bytes)
    page = PAGE.replace("PREDICTION_COLOUR", "rgb{}".format(COLOURS[SIDES[-1]])).replace(
        "EXTENSIONS_JSON", json.dumps({medium: sorted(ends) for medium, ends in EXTENSIONS.items()}))

    async def index(request):
        return web.Response(text=page, content_type="text/html")

    async def task_list(request):
        return web.json_response({"tasks": tasks, "default": predictor.default_task or tasks[0],
                                  "reads": {name: predictor.reads(name) for name in tasks}, "limits": vars(limits)})

    async def predict(request):
        try:
            fields, media = await read_request(request)
            task = fields.get("task") or predictor.default_task or tasks[0]
            if task not in tasks:
                raise RequestError(f"unknown task {task!r}: this model runs {', '.join(tasks)}")
            draw = str(fields.get("draw", "")).lower() in ("1", "true", "yes", "on")
            result = await batcher.predict(request_input(fields, media, limits), task, draw)
        except RequestError as error:
            return json_error(str(error), error.status)
        except BadInputError as error:
            return json_error(str(error), 400)
        except web.HTTPRequestEntityTooLarge as error:
            return json_error(f"the request is larger than the limit of {limits.max_upload_bytes} bytes "
                              f"({error.text})", 413)
        except Exception as error:  # noqa: BLE001 (logged; the server goes on)
            logger.exception("a request failed")
            return json_error(f"internal error: {type(error).__name__}: {error}", 500)
        pictures = [{"kind": kind, "description": description, "png": base64.b64encode(png).decode("ascii")}
                    for kind, png, description in result.pictures]
        return web.json_response({"task": task, "result": result.json(), "pictures": pictures})

    async def start(app):
        batcher.start()

    async def stop(app):
        await batcher.stop()

    app = web.Application(client_max_size=limits.max_upload_bytes)
    app.add_routes([web.get("/", index), web.get("/api/tasks", task_list), web.post("/api/predict", predict)])
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", required=True, help="checkpoint file")
    parser.add_argument("--task", help="the task offered first (default: the checkpoint's)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free one, printed)")
    parser.add_argument("--bpe-dir", help="the checkpoint is OFA's: its dict.txt, encoder.json and vocab.bpe are here")
    parser.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                        help="set an option of the task (repeatable; VALUE read as JSON when it parses)")
    parser.add_argument("--batch-size", type=int, default=8, help="most requests decoded together")
    parser.add_argument("--queue", type=int, default=64, help="most requests waiting; more get 503")
    parser.add_argument("--max-upload-mb", type=float, default=50.0, help="largest request body (413 beyond)")
    parser.add_argument("--max-image-pixels", type=int, default=40_000_000, help="largest image (400 beyond)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="longest video or audio clip (400 beyond)")
    parser.add_argument("--max-text-chars", type=int, default=2000, help="longest text field (400 beyond)")
    evaluate.add_generation_options(parser)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="float32")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a legacy checkpoint's pickled objects (runs code: trusted files only)")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def limits_of(args):
    return argparse.Namespace(batch_size=args.batch_size, queue=args.queue,
                              max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
                              max_image_pixels=args.max_image_pixels, max_seconds=args.max_seconds,
                              max_text_chars=args.max_text_chars)


def main(argv=None):
    args = parse_args(argv)
    set_up_logging(args.verbose)
    try:
        predictor = Predictor.from_checkpoint(
            args.path, task=args.task, bpe_dir=args.bpe_dir, device="cpu" if args.cpu else None,
            trust_pickle=args.trust_pickle, task_options=evaluate.task_options(args), batch_size=args.batch_size,
            precision=args.precision, **evaluate.generation_options(args))
        app = make_app(predictor, limits_of(args))
    except (*evaluate.USER_ERRORS, ValueError) as error:
        raise SystemExit(f"{type(error).__name__}: {error}") from None
    try:
        asyncio.run(serve(app, args.host, args.port))
    except KeyboardInterrupt:
        pass


async def serve(app, host, port):
    """Serve ``app`` until interrupted, announcing the address (with the port chosen when ``port`` is 0)."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        print(f"serving on http://{bound_host}:{bound_port}/", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    main()
