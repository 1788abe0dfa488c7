"""evaluate.py --result-format: the predictions as the COCO caption and VQA evaluation servers take them."""
import json

import pytest

import evaluate


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
