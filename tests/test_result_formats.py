"""evaluate.py --result-format: the predictions as the COCO caption and VQA evaluation servers take them."""
import json

import pytest
import torch

import evaluate
from helpers import build_model, build_task, eval_args, read_lines, set_cell, write_tsv


def test_coco_caption_results_hold_integer_image_ids_and_captions(tmp_path):
    predictions = [{"uniq_id": "391895", "caption": "a man riding a bike", "references": ["x"]},
                   {"uniq_id": "42", "caption": "a cat's bowl", "references": ["y"]}]
    evaluate.write_results(tmp_path, predictions, {"rows": 2}, "coco-caption")
    assert json.loads((tmp_path / "captions_results.json").read_text(encoding="utf-8")) == [
        {"image_id": 391895, "caption": "a man riding a bike"}, {"image_id": 42, "caption": "a cat's bowl"}]
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 2


def test_vqa_results_hold_integer_question_ids_and_answers(tmp_path):
    predictions = [{"question_id": "458752000", "question": "what?", "answer": "yes", "references": {}}]
    evaluate.write_results(tmp_path, predictions, {"rows": 1}, "vqa")
    assert json.loads((tmp_path / "vqa_results.json").read_text()) == [{"question_id": 458752000, "answer": "yes"}]


@pytest.mark.parametrize("ids, message", [(["12", "abc"], r"row id 'abc' is not one"),
                                          (["12", "12"], r"image_id 12 is in two rows")])
def test_ids_the_server_cannot_take_write_nothing(tmp_path, ids, message):
    evaluate.write_results(tmp_path, [{"uniq_id": "1", "caption": "old"}], {"rows": 1}, "coco-caption")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    predictions = [{"uniq_id": i, "caption": "new"} for i in ids]
    with pytest.raises(evaluate.OutputError, match=message):
        evaluate.write_results(tmp_path, predictions, {"rows": 2}, "coco-caption")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_evaluate_writes_the_server_file_of_its_predictions(demo_dir, vocab_dir, tmp_path):
    rows = read_lines(demo_dir / "vqa_valid.tsv", 3)
    data = write_tsv(tmp_path / "rows.tsv", [set_cell(row, 1, str(458752000 + i)) for i, row in enumerate(rows)])
    task = build_task("vqa", f"{demo_dir}/vqa_train.tsv,{data}", vocab_dir)
    torch.manual_seed(0)
    evaluate.evaluate(eval_args(data, result_format="vqa"), [build_model(task).eval()], task, str(tmp_path / "out"))
    lines = (tmp_path / "out" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    predictions = [json.loads(line) for line in lines]
    assert [p["question_id"] for p in predictions] == ["458752000", "458752001", "458752002"]
    assert json.loads((tmp_path / "out" / "vqa_results.json").read_text(encoding="utf-8")) == [
        {"question_id": 458752000 + i, "answer": p["answer"]} for i, p in enumerate(predictions)]
