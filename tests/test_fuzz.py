"""Fuzzing the readers and parsers with hypothesis: garbage in, the project's own error out, nothing else.

Each target runs at least ``CASES`` generated cases (``pytest -m fuzz``; CI runs them). Derandomised,
so a failure reproduces; FUZZ_CASES=200 makes a quick local try. The only exception a target may raise is the one its API documents:
``BadInputError`` for rows, cells and media, ``CodecError`` for the location codec; the output
parsers raise nothing, since whatever the model generates must become a prediction. Media are
mutations of real files (the demo world's JPEG, MP4 and FLAC) under small, configured bounds on
pixels, frames and seconds, so a mutated header cannot make decoding unbounded.
"""
import base64
import collections
import io
import itertools
import json
import math
import os
import pathlib
import shutil
import tempfile
import wave

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from data.audio import decode_audio
from data.dataset import Row
from data.errors import BadInputError, DataFileError
from data.media import decode_image, read_media_bytes
from data.tsv import BOM, TsvFile
from data.video import decode_video
from helpers import build_task, read_lines
from geometry.codec import CodecError, LocationCodec
from ie.tokens import Frame, parse

pytestmark = [pytest.mark.fuzz, pytest.mark.filterwarnings("ignore")]

CASES = int(os.environ.get("FUZZ_CASES", 10_000))  # fewer for a quick local try
FUZZ = settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
WHERE = ("rows.tsv", 7, 3, "cell")
MAX_PIXELS, MAX_FRAMES, MAX_SECONDS = 1 << 20, 300, 60.0
RUNS = collections.Counter()  # cases run per target, checked at the end of each test


def ran(target):
    RUNS[target] += 1


@pytest.fixture(autouse=True)
def at_least_cases(request):
    RUNS.clear()
    yield
    for target, count in RUNS.items():
        print(f"{request.node.name}: {target}: {count} cases")
        assert count >= CASES, (target, count)


def assert_located(error, path="rows.tsv"):
    assert isinstance(error, BadInputError)
    assert error.path == path and error.line >= 1 and error.column >= 1 and error.reason


# ---- TSV rows ----------------------------------------------------------------------------------------


FILE_NUMBERS = itertools.count()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """Where the TSV cases are written: in memory (tmpfs) where there is one, as the index is fsynced."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        folder = tempfile.mkdtemp(dir="/dev/shm", prefix="uniground-fuzz-")
        yield pathlib.Path(folder)
        shutil.rmtree(folder, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("tsv")


@FUZZ
@given(rows=st.lists(st.binary(max_size=60) | st.text(alphabet="ab\t\r\n\\é\x00", max_size=30).map(str.encode),
                     min_size=1, max_size=6))
@example(rows=[b"\xff\xfe\t\t", b"a\r", b"\t"])
def test_tsv_rows(rows, scratch):
    # a new file each time: the index is keyed by size and mtime, which a rewrite within a clock tick keeps
    folder = scratch / str(next(FILE_NUMBERS))
    folder.mkdir()
    path = folder / "rows.tsv"
    path.write_bytes(b"\n".join(rows))
    try:
        check_rows(path, folder)
    finally:
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    ran("tsv rows")


def check_rows(path, folder):
    try:
        tsv = TsvFile(path, selected_cols=[0, 2], index_dir=folder)
    except DataFileError:
        assert path.read_bytes() in (b"", BOM)  # only an empty file is refused whole
        return
    for i in range(len(tsv)):
        try:
            cells = tsv.fields(i)
        except BadInputError as error:
            assert_located(error, str(path))
            assert error.line == i + 1
            continue
        assert len(cells) == 2 and all(isinstance(cell, str) and "\n" not in cell for cell in cells)
        row = Row(tsv, i, dict(zip(("a", "b"), cells)))
        assert row.where("b") == (str(path), i + 1, 3, "b")


# ---- media cells and media bytes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    """media/ with a file, a subfolder and an inner symlink; beside it a secret and a symlink pointing out."""
    root = tmp_path_factory.mktemp("media_root")
    media = root / "media"
    (media / "sub").mkdir(parents=True)
    (media / "a.jpg").write_bytes(b"inside")
    (media / "sub" / "b.png").write_bytes(b"inside too")
    (root / "secret.txt").write_text("secret")
    (media / "out.jpg").symlink_to(root / "secret.txt")
    (media / "in.jpg").symlink_to(media / "a.jpg")
    return media


PATH_PIECES = st.sampled_from(["a.jpg", "sub", "b.png", "..", ".", "out.jpg", "in.jpg", "secret.txt", "", "/", "//",
                               "media", "\x00", "é", "a.jpg/"])
CELLS = (st.lists(PATH_PIECES, max_size=5).map("/".join) | st.text(max_size=40)
         | st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()))


@FUZZ
@given(cell=CELLS, with_dir=st.booleans())
@example(cell="../secret.txt", with_dir=True)
@example(cell="out.jpg", with_dir=True)
@example(cell="sub/../../media/a.jpg", with_dir=True)
def test_media_cells(cell, with_dir, media_dir):
    try:
        data = read_media_bytes(cell, str(media_dir) if with_dir else None, WHERE)
    except BadInputError as error:
        assert_located(error)
        ran("media cells")
        return
    assert isinstance(data, bytes)
    if "." in cell:  # a path: it must have resolved inside the media dir
        assert with_dir and data in (b"inside", b"inside too"), cell
    else:  # base64 in either alphabet, padded or not
        assert data == base64.urlsafe_b64decode(cell.replace("+", "-").replace("/", "_") + "=" * (-len(cell) % 4))
    ran("media cells")


def first_media(demo_dir, name, column):
    return base64.b64decode(read_lines(demo_dir / name, 1)[0].split("\t")[column])


def mutations(seeds):
    """A real file changed by a few byte edits (overwrites, insertions, deletions), maybe truncated."""
    edit = st.tuples(st.sampled_from(["set", "insert", "delete"]), st.floats(0, 1, exclude_max=True),
                     st.binary(min_size=1, max_size=8))

    def mutate(seed, edits, cut):
        data = bytearray(seed)
        for kind, where, chunk in edits:
            at = int(where * len(data)) if data else 0
            if kind == "set":
                data[at:at + len(chunk)] = chunk
            elif kind == "insert":
                data[at:at] = chunk
            else:
                del data[at:at + len(chunk)]
        return bytes(data[: int(cut * len(data))] if cut < 1 else data)

    cuts = st.one_of(st.just(1.0), st.floats(0, 1))
    return st.builds(mutate, st.sampled_from(seeds), st.lists(edit, max_size=4), cuts)


def media_seeds(demo_dir):
    png = io.BytesIO()
    Image.new("RGB", (24, 16), "red").save(png, format="PNG")
    wav = io.BytesIO()
    with wave.open(wav, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.zeros(800, np.int16).tobytes())
    return {"image": [first_media(demo_dir, "caption_valid.tsv", 4), png.getvalue()],
            "video": [first_media(demo_dir, "video_caption_valid.tsv", 4)],
            "audio": [first_media(demo_dir, "audio_caption_valid.tsv", 4), wav.getvalue()]}


@pytest.fixture(scope="module")
def seeds(demo_dir):
    return media_seeds(demo_dir)


def decoded_or_bad(target, decode, data):
    try:
        result = decode(data)
    except BadInputError as error:
        assert_located(error)
        result = None
    ran(target)
    return result


@FUZZ
@given(data=st.data())
def test_image_bytes(data, seeds):
    image = decoded_or_bad("image bytes", lambda d: decode_image(d, WHERE, MAX_PIXELS),
                           data.draw(mutations(seeds["image"])))
    if image is not None:
        channels, height, width = image.pixels.shape
        assert channels == 3 and 0 < width * height <= MAX_PIXELS


@FUZZ
@given(data=st.data())
def test_video_bytes(data, seeds):
    clip = decoded_or_bad("video bytes", lambda d: decode_video(d, WHERE, 4, 16, max_seconds=MAX_SECONDS,
                                                                 max_pixels=MAX_PIXELS, max_decoded_frames=MAX_FRAMES),
                          data.draw(mutations(seeds["video"])))
    if clip is not None:
        assert clip.frames.shape == (4, 3, 16, 16) and 0 < clip.duration <= MAX_SECONDS
        assert np.all(np.diff(clip.times) >= 0) and np.all(clip.times >= 0)


@FUZZ
@given(data=st.data())
def test_audio_bytes(data, seeds):
    clip = decoded_or_bad("audio bytes", lambda d: decode_audio(d, WHERE, 5.0, max_input_seconds=MAX_SECONDS),
                          data.draw(mutations(seeds["audio"])))
    if clip is not None:
        assert clip.samples.ndim == 1 and 0 < len(clip.samples) <= 5 * 16_000 and clip.duration <= MAX_SECONDS
        assert np.isfinite(clip.samples.numpy()).all()


# ---- annotation JSON of the generic layout ----------------------------------------------------------


GENERIC = {"refseg": "refseg_valid.tsv", "temporal_grounding": "temporal_valid.tsv", "ner": "ner_valid.tsv",
           "re": "re_valid.tsv", "ee": "ee_valid.tsv", "entity_recognition": "entity_valid.tsv"}


def options(name, demo_dir):
    return {"catalogue": str(demo_dir / "entities.tsv")} if name == "entity_recognition" else {}
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
                    max_leaves=20)


@pytest.fixture(scope="module")
def generic_rows(demo_dir, vocab_dir):
    """Per generic-layout task: the task, a TSV of its real validation rows, and their annotations."""
    found = {}
    for name, file in GENERIC.items():
        task = build_task(name, demo_dir / file, vocab_dir, max_video_seconds=MAX_SECONDS,
                          max_image_pixels=MAX_PIXELS, **options(name, demo_dir))
        tsv = TsvFile(demo_dir / file, selected_cols=[int(c) for c in task.default_cols.split(",")])
        rows = [Row(tsv, i, dict(zip(task.columns, tsv.fields(i)))) for i in range(min(len(tsv), 4))]
        found[name] = (task, rows)
    return found


def mutated_annotation(annotation, path, value):
    """``annotation`` with the value at ``path`` (keys and indices, each taken modulo what is there) replaced."""
    if not path or not isinstance(annotation, (dict, list)) or not annotation:
        return value
    keys = list(annotation) if isinstance(annotation, dict) else list(range(len(annotation)))
    key = keys[path[0] % len(keys)]
    changed = dict(annotation) if isinstance(annotation, dict) else list(annotation)
    changed[key] = mutated_annotation(annotation[key], path[1:], value)
    return changed


@FUZZ
@given(task_name=st.sampled_from(sorted(GENERIC)), row_index=st.integers(0, 3),
       path=st.lists(st.integers(0, 50), max_size=4), value=JSON, raw=st.none() | st.text(max_size=30),
       train=st.booleans())
@example(task_name="refseg", row_index=0, path=[], value={"regions": [{"polygon": [0, 0, 1e308, 1e308, 5, 5]}]},
         raw=None, train=False)
def test_annotation_cells(task_name, row_index, path, value, raw, train, generic_rows):
    task, rows = generic_rows[task_name]
    row = rows[row_index % len(rows)]
    cell = raw if raw is not None else json.dumps(mutated_annotation(json.loads(row["annotation"]), path, value))
    bad = Row(row.tsv, row.index, dict(row.cells, annotation=cell))
    try:
        sample = task.build_sample(bad, train)
    except BadInputError as error:
        assert (error.path, error.line) == (row.tsv.path, row.index + 1)
    else:
        assert sample["target"].ndim == 1 and len(sample["target"]) <= task.cfg.max_tgt_length
    ran("annotation cells")


# ---- the location codec ---------------------------------------------------------------------------------


NUMBERS = st.floats() | st.integers(-2**40, 2**40) | st.sampled_from([0, 1, -1, 1e308, -1e-308, 2**63])
EXTENTS = st.floats() | st.integers(-5, 5000)


@FUZZ
@given(kind=st.sampled_from(["box", "span", "polygons", "rasterize", "decode_box", "decode_span", "decode_polygons"]),
       values=st.lists(NUMBERS, max_size=14), groups=st.integers(1, 3), width=EXTENTS, height=EXTENTS)
def test_codec(kind, values, groups, width, height):
    codec = LocationCodec(num_bins=100, num_time_bins=50, max_poly_vertices=8)
    polygons = [values[i::groups] for i in range(groups)]
    bins = [int(v) if isinstance(v, int) else 0 for v in values]
    calls = {
        "box": lambda: codec.encode_box(values, width, height),
        "span": lambda: codec.encode_span(*(values + [0, 0])[:2], width),
        "polygons": lambda: codec.encode_polygons(polygons, width, height),
        "rasterize": lambda: codec.rasterize(polygons, min(abs(int(width)) if math.isfinite(width) else 1, 64),
                                             min(abs(int(height)) if math.isfinite(height) else 1, 64)),
        "decode_box": lambda: codec.decode_box(bins, width, height),
        "decode_span": lambda: codec.decode_span(bins, width),
        "decode_polygons": lambda: codec.decode_polygons([bins[i::groups] for i in range(groups)], width, height),
    }
    try:
        result = calls[kind]()
    except CodecError:
        result = None
    if result is not None and kind in ("box", "span"):
        assert all(0 <= b < (100 if kind == "box" else 50) for b in result)
    ran("codec")


# ---- output parsers -------------------------------------------------------------------------------------


DECODED = ["caption", "refcoco", "refseg", "snli_ve", "vqa", "temporal_grounding", "ner", "re", "ee",
           "entity_recognition"]
FILES = {"caption": "caption_valid.tsv", "refcoco": "refcoco_valid.tsv", "snli_ve": "snli_ve_valid.tsv",
         "vqa": "vqa_valid.tsv", **GENERIC}


@pytest.fixture(scope="module")
def metas(demo_dir, vocab_dir):
    """Per task: the task and the meta of its first validation row, as generation hands them over."""
    found = {}
    for name in DECODED:
        path = demo_dir / FILES[name]
        data = f"{demo_dir}/vqa_train.tsv,{path}" if name == "vqa" else path
        task = build_task(name, data, vocab_dir, **options(name, demo_dir))
        task.load_dataset("valid")
        found[name] = (task, task.dataset("valid")[0]["meta"])
    return found


@FUZZ
@given(name=st.sampled_from(DECODED), data=st.data())
def test_decode_prediction(name, data, metas):
    task, meta = metas[name]
    size = len(task.vocab.dictionary)
    special = list(range(task.vocab.first_bin, task.vocab.first_bin + 5)) + list(range(size - 40, size))
    ids = data.draw(st.lists(st.integers(0, size - 1) | st.sampled_from(special), max_size=40))
    prediction = task.decode_prediction(ids, meta)
    json.dumps(prediction)  # a JSON-ready record
    if name in ("ner", "re", "ee", "entity_recognition"):
        records, malformed = parse(ids, task.vocab, task.codec, Frame())
        assert malformed >= 0 and isinstance(records, list)
    ran("decode_prediction")

