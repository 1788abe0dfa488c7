"""Use a trained model on your own files: a Python predictor, and a command line over it.

    python predict.py --path checkpoint.pt --task refcoco --image photo.jpg --text "the dog on the left" --draw out.png
    python predict.py --path checkpoint.pt --task caption --inputs photos/ --output captions.jsonl

Each input (media as a path, bytes, a PIL image or an array, and text) becomes a row of the task's own
layout with no reference, and takes evaluate.py's path from there: the task's ``build_sample`` (media
readers, limits and transforms), ``collate``, constrained generation and ``decode_prediction``; so
the predictor and evaluate.py give the same outputs on the same inputs. Results are typed
(tasks/results.py): a caption, a box in original pixels, polygons and their mask, a span in seconds,
an answer, IE records with their grounds, each with its score. ``--draw`` writes the picture the
evaluation report draws, with the prediction alone (in vermillion).

From Python::

    from predict import Input, Predictor
    predictor = Predictor.from_checkpoint("checkpoint.pt")
    [box] = predictor.predict([Input(image="photo.jpg", text="the dog on the left")])
"""
import argparse
import base64
import io
import json
import logging
import os
import sys
from argparse import Namespace
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

from utils.logs import add_verbose_flag, set_up_logging  # noqa: E402

if __name__ == "__main__":
    set_up_logging()  # before fairseq is imported (utils/logs.py says why)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from fairseq import utils as fairseq_utils  # noqa: E402
from fairseq.tasks import TASK_REGISTRY  # noqa: E402
from PIL import Image  # noqa: E402

import evaluate  # noqa: E402  (registers the tasks and models)
from data.dataset import InputPlace, Row  # noqa: E402
from data.errors import BadInputError  # noqa: E402
from data.media import read_media_bytes  # noqa: E402
from tasks.ie import IETask  # noqa: E402
from tasks.multitask import checkpoint_subtask  # noqa: E402
from evaluation.drawing import SIDES  # noqa: E402
from utils.files import atomic_open, check_outputs  # noqa: E402
from utils.progress import track  # noqa: E402
from evaluation.report import REPORT_FRAME_SIZE, render_media  # noqa: E402

logger = logging.getLogger("predict")
MEDIA = ("image", "video", "audio")
TEXT_COLUMNS = ("text", "question", "hypothesis", "statement")  # the cell a task reads its input text from, by layout
EXTENSIONS = {
    "image": {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"},
    "video": {".mp4", ".webm", ".mkv", ".avi", ".mov", ".mpg", ".mpeg", ".m4v"},
    "audio": {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac"},
}
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


@dataclass
class Input:
    """One thing to predict on. Media: a path, bytes, a PIL image or an H x W x 3 uint8 array (images), or a
    list of such images for a row of several (``<image_k>`` in ``text`` places image k).
    ``text``: the referring expression, question, hypothesis or query, as the task reads it;
    ``premise``: SNLI-VE's text premise (``add_premise``); ``schema``: an IE task's labels
    ({"entity": [...], ...}); ``place``: where the input came from, named by its errors."""

    text: str = ""
    image: object = None
    video: object = None
    audio: object = None
    premise: str = ""
    schema: Optional[dict] = None
    id: str = ""
    place: InputPlace = field(default_factory=lambda: InputPlace("input"))


@dataclass
class Prepared:
    """An input as its task's row and sample, ready to be batched."""

    row: Row
    sample: dict


class Predictor:
    """A model and its task(s), loaded once; ``predict`` batches inputs and decodes them together."""

    def __init__(self, models, task, path="the model", default_task=None, batch_size=16, device=None,
                 precision="float32", task_options=None, **generation):
        """``task``: the checkpoint's; ``default_task``: the name of the one ``predict`` runs when it names
        none (by default the checkpoint's own); ``generation``: beam-search settings (evaluate.py's
        ``GENERATION_OPTIONS``) replacing the task's --eval-args."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.models, self.checkpoint_task, self.path, self.default_task = models, task, path, default_task
        unknown = set(generation) - set(evaluate.GENERATION_OPTIONS)
        if unknown:
            raise TypeError(f"unknown generation options {sorted(unknown)} (known: {evaluate.GENERATION_OPTIONS})")
        self.generation = Namespace(**{name: generation.get(name) for name in evaluate.GENERATION_OPTIONS})
        self.batch_size, self.precision = batch_size, PRECISIONS[precision]
        self.device = torch.device(device or next(models[0].parameters()).device)
        self.task_options = dict(task_options or {})
        self.loaded = {}  # task name -> (task, generator)

    @classmethod
    def from_checkpoint(cls, path, task=None, bpe_dir=None, device=None, trust_pickle=False, use_ema=False,
                        unconstrained=False, task_options=None, **options):
        """A predictor of a checkpoint (UniGround's, or OFA's with ``bpe_dir``), on ``device`` (a GPU when
        there is one). ``task`` names the task used when ``predict`` names none; ``task_options`` replace
        options of the tasks (evaluate.py's --task-option); ``options`` are ``Predictor``'s."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        overrides = {"eval_metrics": False, "unconstrained": unconstrained, "media_dir": None}
        if task is None:  # the checkpoint's own task, which then needs no training data (a multitask one would)
            overrides.update(data="", **(task_options or {}))
        models, loaded = evaluate.load_checkpoint(path, overrides, bpe_dir, trust_pickle, use_ema, device)
        return cls(models, loaded, path=path, default_task=task, device=device, task_options=task_options, **options)

    def task_names(self):
        """The tasks this model can be asked for: a multitask checkpoint's sub-tasks, else its own task."""
        own = self.checkpoint_task
        return list(getattr(own, "subtasks", {})) or [registered_name(own)]

    def task(self, name=None):
        """(task, generator) for ``name`` (by default the checkpoint's own), set up once."""
        name = name or self.default_task or self.task_names()[0]
        if name not in self.loaded:
            own = self.checkpoint_task
            # the options went into the checkpoint's own task only when no task was named (from_checkpoint)
            if registered_name(own) == name and own.reads_rows and not (self.default_task and self.task_options):
                task = own
            else:
                task = checkpoint_subtask(own, name, self.path, data="", **self.task_options)
            self.loaded[name] = task, task.build_generator(self.models, evaluate.generation_args(self.generation, task))
        return self.loaded[name]

    def reads(self, name=None):
        """The ``Input`` fields task ``name`` reads (``fields_read``)."""
        return fields_read(self.task(name)[0])

    # ---- inputs -> rows -> samples ----------------------------------------------------------------

    def row(self, task, item, index):
        """The input as a row of ``task``'s layout whose reference cells are empty: media as base64 cells (so
        nothing is read by a path later), the text in the cell the task reads it from, an IE schema in the
        annotation."""
        cells = dict.fromkeys(task.columns, "")
        cells[task.columns[0]] = item.id or str(index)
        given = [name for name in (*MEDIA, "text", "premise", "schema") if is_given(getattr(item, name))]
        unread = [name for name in given if name not in fields_read(task)]
        if unread:
            raise BadInputError(item.place.path, item.place.line, 1, f"the {registered_name(task)} task reads no "
                                f"{unread[0]} (it reads {', '.join(fields_read(task))})", column_name=unread[0])
        for medium in (m for m in MEDIA if m in given):
            where = (item.place.path, item.place.line, item.place.column_number(task.columns.index(medium)), medium)
            value = getattr(item, medium)
            if medium == "image" and isinstance(value, (list, tuple)):
                cells[medium] = json.dumps([base64_cell(media_bytes(v, medium, where, task.cfg.max_media_bytes))
                                            for v in value])
            else:
                cells[medium] = base64_cell(media_bytes(value, medium, where, task.cfg.max_media_bytes))
        for column in TEXT_COLUMNS:
            if column in task.columns:
                cells[column] = item.text
        if "premise" in task.columns:
            cells["premise"] = item.premise
        if "annotation" in task.columns:
            cells["annotation"] = json.dumps({} if item.schema is None else {"schema": item.schema})
        return Row(item.place, index, cells, labelled=False)

    def prepare(self, item, task=None, index=0):
        """The input as a ``Prepared`` row and sample of the task; bad input raises ``BadInputError``."""
        task, _ = self.task(task)
        row = self.row(task, item, index)
        sample = task.build_sample(row, False)
        sample["id"] = index
        return Prepared(row, sample)

    # ---- samples -> results -------------------------------------------------------------------------

    def finish(self, prepared, task=None, draw=False):
        """Results of prepared inputs of one task, in one batch; with ``draw``, each with its pictures."""
        task, generator = self.task(task)
        batch = task.collate([p.sample for p in prepared])
        if self.device.type == "cuda":
            batch = fairseq_utils.move_to_cuda(batch, self.device)
        precision = torch.autocast(self.device.type, self.precision) if self.precision else nullcontext()
        with precision:
            predictions = task.predict(generator, self.models, batch)
        results = [task.result(prediction) for prediction in predictions]
        if draw:
            for result, prediction, p in zip(results, predictions, prepared):
                result.pictures = self.pictures(task, prediction, p.row)
        return results

    def predict(self, inputs, task=None, draw=False):
        """Typed results (tasks/results.py) of ``inputs`` (``Input`` s), ``batch_size`` at a time."""
        results = []
        for start in range(0, len(inputs), self.batch_size):
            prepared = [self.prepare(item, task, index) for index, item in
                        enumerate(inputs[start:start + self.batch_size], start)]
            results += self.finish(prepared, task, draw)
        return results

    def pictures(self, task, prediction, row):
        """[(kind, PNG bytes, description)]: the input drawn as the evaluation report draws it, with the
        prediction alone."""
        marks = [m for m in task.report_view(prediction, row).marks if m.side == SIDES[-1]]
        return render_media(task.media.for_report(row, REPORT_FRAME_SIZE), marks)


def is_given(value):
    """Whether an ``Input`` field holds something: not None, not empty text (empty bytes are a bad medium)."""
    return value is not None and not (isinstance(value, str) and not value)


def fields_read(task):
    """The ``Input`` fields a task reads: its media, and "text", "premise", "schema" when it takes them."""
    fields = [m for m in MEDIA if m in task.columns]
    fields += ["text"] * any(c in task.columns for c in TEXT_COLUMNS) + ["premise"] * ("premise" in task.columns)
    return fields + ["schema"] * isinstance(task, IETask)


def registered_name(task):
    return next(name for name, cls in TASK_REGISTRY.items() if cls is type(task))


def base64_cell(data):
    return base64.b64encode(data).decode("ascii")


def media_bytes(value, medium, where, max_bytes):
    """The encoded file bytes of a medium given as a path, bytes, a PIL image or an image array. A path is
    read as evaluate.py reads media paths (a regular file, at most ``max_bytes``)."""
    if isinstance(value, (str, os.PathLike)):
        path = os.path.realpath(value)
        return read_media_bytes(os.path.join(".", os.path.basename(path)), os.path.dirname(path), where, max_bytes)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if medium == "image" and isinstance(value, (Image.Image, np.ndarray)):
        image = value if isinstance(value, Image.Image) else image_of_array(value, where)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # lossless: the model sees these pixels
        return buffer.getvalue()
    path, line, column, name = where
    raise BadInputError(path, line, column, f"give the {medium} as a path or bytes"
                        + (", a PIL image or an array" if medium == "image" else "")
                        + f", not {type(value).__name__}", column_name=name)


def image_of_array(array, where):
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        path, line, column, name = where
        raise BadInputError(path, line, column, f"an image array must be H x W or H x W x 3 uint8, got "
                                                f"{array.dtype} {array.shape}", column_name=name)
    return Image.fromarray(array)


# ---- the command line -----------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", required=True, help="checkpoint file")
    parser.add_argument("--task", help="the task to run (default: the checkpoint's; one of a multitask checkpoint's)")
    parser.add_argument("--image", nargs="+",
                        help="image file, or several for a row of several images (<image_k> in --text places image k)")
    for medium in ("video", "audio"):
        parser.add_argument(f"--{medium}", help=f"{medium} file")
    parser.add_argument("--text", default="", help="the referring expression, question, hypothesis or query")
    parser.add_argument("--premise", default="", help="snli_ve with add_premise: the text premise")
    parser.add_argument("--schema", help="ner, re, ee: the labels offered, as JSON or a JSON file "
                                         '({"entity": [...], "relation": [...], "event": [...], "role": [...]})')
    parser.add_argument("--inputs", help="many inputs: a JSONL file (one object a line with image, video, audio "
                                         "paths relative to it, text, premise, schema, id) or a folder of media "
                                         "files (each with --text)")
    parser.add_argument("--output", help="with --inputs: the JSONL file of results, one line per input")
    parser.add_argument("--draw", help="write the input with the prediction drawn: a PNG file (one input; "
                                       "FILE-<kind>.png for each medium when it has several), or a folder with --inputs")
    parser.add_argument("--bpe-dir", help="the checkpoint is OFA's: its dict.txt, encoder.json and vocab.bpe are here")
    parser.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                        help="set an option of the task (repeatable; VALUE read as JSON when it parses)")
    parser.add_argument("--batch-size", type=int, default=16)
    evaluate.add_generation_options(parser)
    parser.add_argument("--unconstrained", action="store_true", help="generate without the task's constraint")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="float32",
                        help="bfloat16: run the model under autocast")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a legacy checkpoint's pickled objects (runs code: trusted files only)")
    parser.add_argument("--use-ema", action="store_true", help="use the checkpoint's EMA weights")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    given = [m for m in MEDIA if getattr(args, m)]
    if args.inputs and given:
        parser.error("give --inputs or media files, not both")
    if args.inputs and not args.output:
        parser.error("--inputs needs --output, the JSONL file of results")
    if not args.inputs and args.output:
        parser.error("--output goes with --inputs")
    if not args.inputs and not given and not args.text:
        parser.error("give an input: --image, --video, --audio and/or --text, or --inputs")
    return args


def read_schema(text):
    """--schema: JSON text, or a JSON file."""
    if text is None:
        return None
    if not text.lstrip().startswith("{"):
        with open(text, encoding="utf-8") as f:
            text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SystemExit(f"--schema: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}")


def one_or_list(paths):
    """An image given as one path stays one; several are a list (a row of several images)."""
    return paths[0] if isinstance(paths, list) and len(paths) == 1 else paths


def command_line_input(args):
    return Input(text=args.text, premise=args.premise, schema=read_schema(args.schema), id="input",
                 place=InputPlace("command line"), **{m: one_or_list(getattr(args, m)) for m in MEDIA})


def jsonl_inputs(path):
    """``Input`` s of a JSONL file, media paths relative to its folder; a bad line is an error naming it."""
    folder, inputs = os.path.dirname(os.path.abspath(path)), []
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
            except json.JSONDecodeError as error:
                raise BadInputError(path, line, error.colno, f"not valid JSON: {error.msg}") from None
            unknown = set(item) - {"id", "text", "premise", "schema", *MEDIA} if isinstance(item, dict) else None
            if unknown is None or unknown:
                raise BadInputError(path, line, 1, "expected an object with image, video, audio, text, premise, "
                                                   f"schema and id{f'; unknown: {sorted(unknown)}' if unknown else ''}")
            media = {m: media_paths(folder, item[m], path, line, m) for m in MEDIA if item.get(m)}
            inputs.append(Input(text=item.get("text", ""), premise=item.get("premise", ""), schema=item.get("schema"),
                                id=str(item.get("id", line)), place=InputPlace(path, line), **media))
    return inputs


def media_paths(folder, value, path, line, medium):
    """A JSONL line's media: a path relative to ``folder``, or for images a list of such paths."""
    if medium == "image" and isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return [os.path.join(folder, v) for v in value]
    if not isinstance(value, str):
        expected = "a path or a list of paths" if medium == "image" else "a path"
        raise BadInputError(path, line, 1, f"{medium}: expected {expected}, got {json.dumps(value)[:60]}")
    return os.path.join(folder, value)


def folder_inputs(folder, args):
    """One ``Input`` per media file of ``folder`` (by extension, sorted), each with --text; others are
    named in a warning."""
    inputs, others = [], []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        medium = next((m for m, ends in EXTENSIONS.items() if os.path.splitext(name)[1].lower() in ends), None)
        if medium is None or not os.path.isfile(path):
            others.append(name)
            continue
        inputs.append(Input(text=args.text, premise=args.premise, schema=read_schema(args.schema), id=name,
                            place=InputPlace(path), **{medium: path}))
    if others:
        logger.warning("%s: %d entries that are not media files by their extension left out: %s", folder,
                       len(others), ", ".join(others[:10]) + (" ..." if len(others) > 10 else ""))
    return inputs


def drawing_paths(target, pictures):
    """Where ``--draw`` writes pictures: the file itself for one, FILE-<kind>.png for several."""
    if len(pictures) == 1:
        return [target]
    stem = os.path.splitext(target)[0]
    return [f"{stem}-{kind}.png" for kind, _, _ in pictures]


def write_drawing(target, pictures):
    paths = drawing_paths(target, pictures)
    for path, (_, png, _) in zip(paths, pictures):
        with atomic_open(path, "wb") as f:
            f.write(png)
    return paths


def result_line(item, result=None, error=None, drawn=None):
    given = (getattr(item, m) for m in MEDIA)
    line = {"id": item.id, "input": next((value for value in given if isinstance(value, (str, list))), None)}
    if error is not None:
        return {**line, "error": error}
    return {**line, "result": result.json(), **({"drawn": drawn} if drawn else {})}


def predict_many(predictor, inputs, args):
    """Results of many inputs as JSONL lines, in input order: a bad input's line holds its error."""
    lines, pending = [None] * len(inputs), []

    def flush():
        results = predictor.finish([p for _, p in pending], args.task, draw=bool(args.draw))
        for (k, _), result in zip(pending, results):
            drawn = write_drawing(os.path.join(args.draw, inputs[k].id + ".png"), result.pictures) if args.draw else None
            lines[k] = result_line(inputs[k], result, drawn=drawn)
        pending.clear()

    for k in track(range(len(inputs)), "predicted", unit="inputs", log=logger):
        try:
            pending.append((k, predictor.prepare(inputs[k], args.task, k)))
        except BadInputError as error:
            lines[k] = result_line(inputs[k], error=str(error))
        if len(pending) == predictor.batch_size or (k == len(inputs) - 1 and pending):
            flush()
    return lines


def main(argv=None):
    args = parse_args(argv)
    set_up_logging(args.verbose)
    try:
        return run(args)
    except (*evaluate.USER_ERRORS, BadInputError, ValueError) as error:
        raise SystemExit(f"{type(error).__name__}: {error}") from None


def run(args):
    if args.inputs:
        check_outputs([args.output], [args.path, args.inputs])
    predictor = Predictor.from_checkpoint(
        args.path, task=args.task, bpe_dir=args.bpe_dir, device="cpu" if args.cpu else None,
        trust_pickle=args.trust_pickle, use_ema=args.use_ema, unconstrained=args.unconstrained,
        task_options=evaluate.task_options(args), batch_size=args.batch_size, precision=args.precision,
        **evaluate.generation_options(args))
    if not args.inputs:
        [result] = predictor.predict([command_line_input(args)], args.task, draw=bool(args.draw))
        output = result.json()
        if args.draw:
            output["drawn"] = write_drawing(args.draw, result.pictures)
        print(json.dumps(output, ensure_ascii=False))
        return output
    inputs = jsonl_inputs(args.inputs) if os.path.isfile(args.inputs) else folder_inputs(args.inputs, args)
    if args.draw:
        os.makedirs(args.draw, exist_ok=True)
    lines = predict_many(predictor, inputs, args)
    with atomic_open(args.output) as f:
        f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    failed = [line for line in lines if "error" in line]
    logger.info("%d results, %d errors: %s", len(lines) - len(failed), len(failed), args.output)
    if failed:
        raise SystemExit(f"{len(failed)} of {len(lines)} inputs failed (the first: {failed[0]['error']}); "
                         f"their lines in {args.output} hold their errors")
    return lines


if __name__ == "__main__":
    main()
