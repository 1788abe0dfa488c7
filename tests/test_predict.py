"""predict.py: the predictor gives evaluate.py's outputs on every task (in-process tiny models on demo rows),
takes media in every form, refuses bad input naming it; the command line on a trained checkpoint, for one
input with its drawing, a JSONL file and a folder."""
import base64
import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import predict
from data.errors import BadInputError
from data.media import read_media_bytes
from helpers import LANDED, build_model, eval_args, landed_task, read_lines, write_tsv
from evaluation.drawing import COLOURS
from tasks.results import Answer, Box, Caption, EntityAnswer, ImageBox, Mask, Records, Span

RESULT_TYPES = {"caption": Caption, "video_caption": Caption, "audio_caption": Caption, "refcoco": Box,
                "refseg": Mask, "vqa": Answer, "video_qa": Answer, "snli_ve": Answer, "entity_recognition": EntityAnswer,
                "temporal_grounding": Span, "ner": Records, "re": Records, "ee": Records, "nlvr": Answer,
                "multi_image_qa": Answer, "multi_image_refcoco": ImageBox}
PICTURE_OF = {"image": "image", "video": "frames", "audio": "audio"}


def input_of(task, row):
    """The predictor's input for a TSV row: its media bytes, text and (IE) schema, no reference."""
    media = {m: media_of(row, m) for m in predict.MEDIA if row.cells.get(m)}
    column = next((c for c in predict.TEXT_COLUMNS if c in row.cells), None)
    schema = json.loads(row["annotation"]).get("schema") if isinstance(task, predict.IETask) else None
    return predict.Input(text=row[column] if column else "", schema=schema, **media)


def tiny_predictor(task):
    torch.manual_seed(0)
    model = build_model(task).eval()
    return [model], predict.Predictor([model], task, beam=2, max_len_b=24, batch_size=4)


@pytest.mark.parametrize("name", LANDED)
def test_the_predictor_gives_evaluates_outputs_on_every_task(name, demo_dir, vocab_dir, tmp_path):
    task, data = landed_task(name, demo_dir, vocab_dir, tmp_path)
    models, predictor = tiny_predictor(task)
    predictions, rows, _ = evaluate.generate(eval_args(data), models, task)
    inputs = [input_of(task, task.dataset("valid").row(i)) for i in rows]
    results = predictor.predict(inputs, draw=True)
    assert [r.json() for r in results] == [task.result(p).json() for p in predictions]
    assert all(type(r) is RESULT_TYPES[name] and r.score < 0 for r in results)
    for item, result in zip(inputs, results):  # the report's pictures of the media the input has
        media = [PICTURE_OF[m] for m in predict.MEDIA if getattr(item, m) is not None]
        assert sorted(kind for kind, _, _ in result.pictures) == sorted(media)
        assert all(png.startswith(b"\x89PNG") for _, png, _ in result.pictures)


def media_of(row, medium):
    """The bytes of a media cell, a list of them for a cell of several images."""
    cell = row[medium]
    if cell.startswith("["):
        return [read_media_bytes(c, None, row.where(medium)) for c in json.loads(cell)]
    return read_media_bytes(cell, None, row.where(medium))


def refcoco_setup(demo_dir, vocab_dir, tmp_path):
    task, data = landed_task("refcoco", demo_dir, vocab_dir, tmp_path)
    _, predictor = tiny_predictor(task)
    cells = read_lines(demo_dir / "refcoco_valid.tsv", 1)[0].split("\t")
    return predictor, base64.b64decode(cells[4]), cells[2]


def test_media_as_a_path_bytes_a_pil_image_or_an_array_read_alike(demo_dir, vocab_dir, tmp_path):
    predictor, photo, text = refcoco_setup(demo_dir, vocab_dir, tmp_path)
    (tmp_path / "photo.jpg").write_bytes(photo)
    pixels = Image.open(io.BytesIO(photo)).convert("RGB")
    png = io.BytesIO()
    pixels.save(png, format="PNG")
    [from_path] = predictor.predict([predict.Input(text, image=str(tmp_path / "photo.jpg"))])
    [from_bytes] = predictor.predict([predict.Input(text, image=photo)])
    assert from_path == from_bytes and from_path.box is not None
    decoded = [predictor.predict([predict.Input(text, image=image)])[0]
               for image in (png.getvalue(), pixels, np.asarray(pixels))]
    assert decoded[0] == decoded[1] == decoded[2]  # PIL images and arrays are their pixels, losslessly


@pytest.mark.parametrize("item, message", [
    (dict(image=b"not an image", text="the circle"),
     r"input:1: column 2 \(image\): cannot decode image: not a known image format"),
    (dict(image=b"", text="the circle"), "empty media cell"),
    (dict(text="the circle"), r"column 2 \(image\): empty media cell"),
    (dict(image="PHOTO", text="word " * 500), r"the source takes \d+ tokens, more than --max-src-length"),
    (dict(image="PHOTO", video=b"...", text="the circle"), "the refcoco task reads no video"),
    (dict(image="PHOTO", text="x", schema={"entity": ["person"]}), "the refcoco task reads no schema"),
    (dict(image=3.5, text="x"), r"column 2 \(image\): give the image as a path or bytes, a PIL image or an array, not float"),
    (dict(image=np.zeros((4, 4), np.float32), text="x"), "an image array must be H x W or H x W x 3 uint8"),
    (dict(image="FOLDER", text="x"), "is a directory, not a regular file"),
    (dict(image="FIFO", text="x"), "is a FIFO, not a regular file"),
])
def test_bad_input_is_an_error_naming_it(item, message, demo_dir, vocab_dir, tmp_path):
    predictor, photo, _ = refcoco_setup(demo_dir, vocab_dir, tmp_path)
    (tmp_path / "photo.jpg").write_bytes(photo)
    os.mkfifo(tmp_path / "pipe.jpg")  # refused by its type, never opened: no hang
    places = {"PHOTO": str(tmp_path / "photo.jpg"), "FOLDER": str(tmp_path), "FIFO": str(tmp_path / "pipe.jpg")}
    item = {k: places.get(v, v) if isinstance(v, str) else v for k, v in item.items()}
    with pytest.raises(BadInputError, match=message):
        predictor.predict([predict.Input(**item)])


def test_an_unknown_task_or_text_for_a_task_without_text_is_refused(demo_dir, vocab_dir, tmp_path):
    predictor, photo, _ = refcoco_setup(demo_dir, vocab_dir, tmp_path)
    with pytest.raises(ValueError, match="'nonsense' is not a UniGround task"):
        predictor.predict([predict.Input("x", image=photo)], task="nonsense")
    with pytest.raises(BadInputError, match="the caption task reads no text"):
        predictor.predict([predict.Input("a caption?", image=photo)], task="caption")
    [caption] = predictor.predict([predict.Input(image=photo)], task="caption")  # same vocabulary, another task
    assert isinstance(caption, Caption)


def test_several_images_come_as_a_list_from_the_command_line_and_a_jsonl_file(demo_dir, vocab_dir, tmp_path):
    task, _ = landed_task("nlvr", demo_dir, vocab_dir, tmp_path)
    _, predictor = tiny_predictor(task)
    cells = read_lines(demo_dir / "nlvr_valid.tsv", 1)[0].split("\t")
    images = [base64.b64decode(cell) for cell in json.loads(cells[4])]
    paths = [str(tmp_path / f"{k}.jpg") for k in range(len(images))]
    for path, image in zip(paths, images):
        with open(path, "wb") as f:
            f.write(image)
    def command_line(*flags):
        return predict.command_line_input(predict.parse_args(["--path", "model.pt", *flags]))

    assert command_line("--image", paths[0]).image == paths[0]
    from_line = command_line("--image", *paths, "--text", cells[2])
    assert from_line.image == paths
    lines = tmp_path / "inputs.jsonl"
    lines.write_text(json.dumps({"image": ["0.jpg", "1.jpg"], "text": cells[2]}) + "\n")
    [from_file] = predict.jsonl_inputs(lines)
    results = predictor.predict([from_line, from_file, predict.Input(cells[2], image=images)])
    assert results[0].json() == results[1].json() == results[2].json()
    assert set(results[0].json()) == {"kind", "score", "answer"}  # no entity field on a true/false label
    lines.write_text(json.dumps({"image": "0.jpg", "text": "x"}) + "\n" + json.dumps({"image": ["0.jpg", 3]}) + "\n")
    with pytest.raises(BadInputError, match=r"inputs.jsonl:2: .*image: expected a path or a list of paths, got \["):
        predict.jsonl_inputs(lines)


# ---- the command line, on a trained checkpoint --------------------------------------------------------------


def run_predict(checkpoint, *flags):
    return predict.main(["--path", str(checkpoint), "--cpu", "--beam", "2", "--batch-size", "8", *flags])


def prediction_pixels(path):
    picture = np.asarray(Image.open(path).convert("RGB"))
    return int((picture == COLOURS["prediction"]).all(-1).sum())


@pytest.fixture(scope="module")
def photos(demo_dir, tmp_path_factory):
    """The first four refcoco validation photos as files, with a JSONL of their texts."""
    folder = tmp_path_factory.mktemp("photos")
    lines = []
    for i, row in enumerate(read_lines(demo_dir / "refcoco_valid.tsv", 4)):
        cells = row.split("\t")
        (folder / f"{i}.jpg").write_bytes(base64.b64decode(cells[4]))
        lines.append(json.dumps({"id": f"row{i}", "image": f"{i}.jpg", "text": cells[2]}))
    (folder / "inputs.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.slow
def test_one_photo_prints_its_box_and_draws_it_in_the_prediction_colour(checkpoints, photos, tmp_path, capsys):
    output = run_predict(checkpoints[-1], "--image", str(photos / "0.jpg"), "--text", "the small blue triangle",
                         "--draw", str(tmp_path / "drawn.png"))
    printed = json.loads(capsys.readouterr().out)
    assert printed == output and printed["kind"] == "box" and printed["drawn"] == [str(tmp_path / "drawn.png")]
    width, height = Image.open(photos / "0.jpg").size
    x0, y0, x1, y1 = printed["box"]
    assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
    assert prediction_pixels(tmp_path / "drawn.png") > 0
    assert prediction_pixels(photos / "0.jpg") == 0


@pytest.mark.slow
def test_a_jsonl_of_inputs_gives_evaluates_predictions(checkpoints, demo_dir, photos, tmp_path):
    results = tmp_path / "results.jsonl"
    run_predict(checkpoints[-1], "--inputs", str(photos / "inputs.jsonl"), "--output", str(results))
    data = write_tsv(tmp_path / "rows.tsv", read_lines(demo_dir / "refcoco_valid.tsv", 4))
    evaluate.main(["--path", str(checkpoints[-1]), "--data", data, "--results-dir", str(tmp_path / "eval"),
                   "--beam", "2", "--batch-size", "8", "--num-workers", "0", "--cpu"])
    evaluated = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [line["id"] for line in lines] == [f"row{i}" for i in range(4)]
    assert [line["result"] for line in lines] == [{"kind": "box", "score": p["score"], "box": p["box"]}
                                                  for p in evaluated]


@pytest.mark.slow
def test_a_folder_gives_a_line_per_media_file_and_a_bad_file_its_error(checkpoints, photos, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("0.jpg", "1.jpg"):
        (folder / name).write_bytes((photos / name).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("not a medium")
    results = tmp_path / "results.jsonl"
    with pytest.raises(SystemExit, match="1 of 3 inputs failed .*broken.png.*cannot decode image"):
        run_predict(checkpoints[-1], "--inputs", str(folder), "--text", "the yellow circle", "--output",
                    str(results), "--draw", str(tmp_path / "drawn"))
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["0.jpg", "1.jpg", "broken.png"]
    assert [("result" in line, "error" in line) for line in lines] == [(True, False), (True, False), (False, True)]
    assert sorted(os.listdir(tmp_path / "drawn")) == ["0.jpg.png", "1.jpg.png"]


@pytest.mark.slow
def test_a_file_that_is_not_a_checkpoint_is_one_line(photos, tmp_path):
    with pytest.raises(SystemExit, match=f"CheckpointReadError: {photos / '0.jpg'}: not a readable checkpoint"):
        run_predict(photos / "0.jpg", "--image", str(photos / "0.jpg"), "--text", "x")
