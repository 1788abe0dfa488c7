"""The ner, re and ee tasks: targets round-trip to the gold records on every modality mix, constrained
generation always parses, and every bad annotation is located."""
import json

import pytest
import torch

from data.errors import BadInputError
from helpers import build_model, build_task, read_lines, set_cell, write_tsv
from test_bad_input import assert_located

SUBTASKS = ("ner", "re", "ee")
ANNOTATION, TEXT, IMAGE = 6, 5, 2  # 1-based columns of the generic layout
MIXES = ("I", "V", "A", "T", "T+I", "T+V", "T+A", "I+A", "T+I+A", "V+A")


@pytest.fixture(scope="module", params=SUBTASKS)
def ie_task(request, demo_dir, vocab_dir):
    task = build_task(request.param, f"{demo_dir}/{request.param}_valid.tsv", vocab_dir, max_tgt_length=160)
    task.load_dataset("valid")
    return task


def test_gold_targets_decode_to_the_reference_records_on_every_mix(ie_task):
    dataset = ie_task.dataset("valid")
    samples = [dataset[i] for i in range(len(dataset))]
    assert {s["meta"]["mix"] for s in samples} == set(MIXES)
    predictions = [ie_task.decode_prediction(s["target"][:-1].tolist(), s["meta"]) for s in samples]
    assert sum(p["malformed"] for p in predictions) == 0
    scores = ie_task.score(predictions, full=True)
    kind = ie_task.primary_metric.split("/")[0]
    # grounds go through the image transform and the bins: IoU stays high but is not exactly 1
    assert scores[f"{kind}/f1"] == 1.0 and scores[f"{kind}/grounded_f1"] == 1.0, scores
    assert scores["mean_iou"] > 0.9
    for mix in MIXES:
        assert scores[f"mix/{mix}/{kind}/f1"] == 1.0


def test_scores_per_source_dataset_from_the_annotation_else_the_file_name(demo_dir, vocab_dir, tmp_path):
    rows = read_lines(demo_dir / "ner_valid.tsv")[:6]
    named = [with_annotation(row, lambda a, name=name: a.update(dataset=name))
             for row, name in zip(rows[:4], ["twitter2015", "twitter2017"] * 2)]
    path = write_tsv(tmp_path / "mixture.tsv", named + rows[4:])
    task = build_task("ner", path, vocab_dir, max_tgt_length=160)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    samples = [dataset[i] for i in range(len(dataset))]
    predictions = [task.decode_prediction(s["target"][:-1].tolist(), s["meta"]) for s in samples]
    predictions[0]["prediction"] = {"entities": []}  # twitter2015 misses one row's entities
    scores = task.score(predictions, full=True)
    assert [p["dataset"] for p in predictions] == ["twitter2015", "twitter2017"] * 2 + ["mixture"] * 2
    assert scores["dataset/twitter2017/entity/f1"] == scores["dataset/mixture/entity/f1"] == 1.0
    assert scores["dataset/twitter2015/entity/recall"] < 1.0 and scores["dataset/twitter2015/samples"] == 2
    assert not any(k.startswith("dataset/") for k in task.score(predictions))  # validation logs totals only


def test_constrained_generation_of_an_untrained_model_always_parses(ie_task):
    dataset = ie_task.dataset("valid")
    by_mix = {}
    for i in range(len(dataset)):
        by_mix.setdefault(dataset[i]["meta"]["mix"], i)
    batch = dataset.collater([dataset[i] for i in by_mix.values()])
    torch.manual_seed(0)
    model = build_model(ie_task).eval()
    generator = ie_task.build_generator([model], type("Args", (), {"beam": 3, "max_len_b": 48})())
    predictions = ie_task.predict(generator, [model], batch)
    assert [p["malformed"] for p in predictions] == [0] * len(predictions)
    assert ie_task.score(predictions, full=True)["malformed"] == 0  # whatever was generated, it scores
    for prediction, meta in zip(predictions, batch["meta"]):
        for items in prediction["prediction"].values():
            for item in items:
                label = item.get("type", item.get("label"))
                assert label in meta["schema"].get("entity", []) + meta["schema"].get("relation", []) + \
                    meta["schema"].get("event", [])


def with_annotation(row, change):
    annotation = json.loads(row.split("\t")[ANNOTATION - 1])
    change(annotation)
    return set_cell(row, ANNOTATION, json.dumps(annotation))


def first_with(rows, mix):
    return next(r for r in rows if json.loads(r.split("\t")[ANNOTATION - 1]).get("mix") == mix)


def set_first_entity(key, value):
    def change(annotation):
        annotation["entities"][0][key] = value
    return change


BAD_CASES = {  # name: (mix of the row to spoil, change, reason)
    "not_json": ("T", None, "not valid JSON"),
    "unknown_type": ("T", set_first_entity("type", "spaceship"), "not in the offered schema"),
    "mention_not_in_text": ("T", set_first_entity("mention", "zanzibar"), "not found in the text"),
    "box_outside_image": ("I", set_first_entity("ground", {"box": [0, 0, 500, 20]}), "outside"),
    "span_after_clip": ("V", set_first_entity("ground", {"span": [0.5, 99.0]}), "ends after"),
    "span_without_clip": ("T+I", set_first_entity("ground", {"span": [0.5, 1.0]}), "needs a video or an audio"),
    "box_without_image": ("A", set_first_entity("ground", {"box": [0, 0, 5, 5]}), "needs an image"),
    "start_after_end": ("A", set_first_entity("ground", {"span": [2.0, 1.0]}), "before its end"),
    "no_schema": ("T", lambda a: a.pop("schema"), "no schema"),
    "dataset_not_a_name": ("T", lambda a: a.update(dataset=["twitter2015"]), '"dataset" must be'),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_ner_annotation_names_file_line_and_column(case, demo_dir, vocab_dir, tmp_path):
    mix, change, reason = BAD_CASES[case]
    rows = read_lines(demo_dir / "ner_valid.tsv")
    bad = with_annotation(first_with(rows, mix), change) if change else set_cell(rows[0], ANNOTATION, "{entities")
    path = write_tsv(tmp_path / "rows.tsv", rows[:2] + [bad])
    task = build_task("ner", path, vocab_dir)
    task.load_dataset("valid")
    with pytest.raises(BadInputError) as info:
        task.dataset("valid")[2]
    assert_located(info.value, path, 3, ANNOTATION)
    assert reason in info.value.reason
