"""The ner, re and ee tasks: targets round-trip to the gold records on every modality mix, constrained
generation always parses, and every bad annotation is located."""
import json
import re

import numpy as np
import pytest
import torch

from data.dataset import Row
from data.errors import BadInputError
from helpers import build_model, build_task, model_config, read_lines, set_cell, write_tsv
from test_bad_input import assert_located
from geometry.codec import SPAN_TOLERANCE

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


def test_a_span_may_overhang_its_clip_by_the_tolerance_temporal_grounding_allows(demo_dir, vocab_dir, tmp_path):
    """One span tolerance for every task (it was 0.01 s here, 0.05 s in temporal_grounding)."""
    row = first_with(read_lines(demo_dir / "ner_valid.tsv"), "V")

    def item_ending_at(end):
        path = write_tsv(tmp_path / f"{end}.tsv", [with_annotation(row, set_first_entity("ground", {"span": [0.5, end]}))])
        task = build_task("ner", path, vocab_dir)
        task.load_dataset("valid")
        return task.dataset("valid")[0]

    with pytest.raises(BadInputError) as info:
        item_ending_at(99.0)
    duration = float(re.search(r"ends after the ([0-9.]+) s clip", info.value.reason)[1])
    assert item_ending_at(duration + SPAN_TOLERANCE - 0.01)["target"] is not None
    with pytest.raises(BadInputError, match="ends after"):
        item_ending_at(duration + SPAN_TOLERANCE + 0.01)


def first_image_text_row(demo_dir, name):
    return first_with(read_lines(demo_dir / f"{name}_valid.tsv"), "T+I")


def eighteen_boxes_file(demo_dir, tmp_path):
    boxes = [{"type": "shape", "mention": "red square", "ground": {"box": [k, k, k + 20, k + 20]}} for k in range(18)]
    row = with_annotation(first_image_text_row(demo_dir, "ner"), lambda a: a.update(entities=boxes))
    return write_tsv(tmp_path / "boxes.tsv", [row])


def test_an_entity_grounded_by_eighteen_boxes_keeps_every_record(demo_dir, vocab_dir, tmp_path):
    """GMNER: one name grounded by up to 18 boxes is 18 records; unset, --max-tgt-length is sized to
    hold them all (it used to default to 128, and the row's target came out empty)."""
    path = eighteen_boxes_file(demo_dir, tmp_path)
    task = build_task("ner", path, vocab_dir)
    task.load_dataset("valid")
    sample = task.dataset("valid")[0]
    assert len(sample["target"]) == task.cfg.max_tgt_length > 128
    prediction = task.decode_prediction(sample["target"][:-1].tolist(), sample["meta"])
    assert len(prediction["prediction"]["entities"]) == 18 and prediction["malformed"] == 0
    # a row that was not measured (a task sized to other data) is a located bad row, not a cut target
    smaller = build_task("ner", f"{demo_dir}/ner_valid.tsv", vocab_dir)
    tsv = smaller.tsv_file(path)
    with pytest.raises(BadInputError, match=rf"the target takes {task.cfg.max_tgt_length} tokens, more than "
                                            rf"--max-tgt-length {smaller.cfg.max_tgt_length}") as error:
        smaller.build_sample(Row(tsv, 0, dict(zip(smaller.columns, tsv.fields(0)))), False)
    assert_located(error.value, path, 1, ANNOTATION)
    for option in ({"max_tgt_length": 128}, {"max_tgt_length": task.cfg.max_tgt_length - 1}):
        short = build_task("ner", path, vocab_dir, **option)
        with pytest.raises(ValueError, match=rf"{path}: 1 of 1 rows need more than --max-tgt-length "
                                             rf"{option['max_tgt_length']} target tokens \(the longest needs "
                                             rf"{task.cfg.max_tgt_length}\); raise --max-tgt-length"):
            short.load_dataset("valid")


def test_a_prompt_offering_22_labels_sizes_the_source_limit(demo_dir, vocab_dir, tmp_path):
    """MNRE offers 22 relation labels: the prompt outgrows the old --max-src-length 160, which refused
    every row; unset, the limit is the longest prompt, and a set one too small names the rows."""
    labels = [f"relation number {k} of the schema" for k in range(22)]
    row = with_annotation(first_image_text_row(demo_dir, "re"),
                          lambda a: a["schema"].update(relation=a["schema"]["relation"] + labels))
    path = write_tsv(tmp_path / "labels.tsv", [row, row])
    task = build_task("re", path, vocab_dir)
    task.load_dataset("valid")
    source = task.dataset("valid")[0]["source"]
    assert len(source) == task.cfg.max_src_length > 160
    assert "relation number 21 of the schema" in task.vocab.decode_text(source[:-1].tolist())
    with pytest.raises(ValueError, match=rf"2 of 2 rows need more than --max-src-length 160 source tokens"):
        build_task("re", path, vocab_dir, max_src_length=160).load_dataset("valid")


@pytest.mark.parametrize("name", SUBTASKS)
def test_unset_limits_are_the_longest_source_and_target_of_all_data_files(name, demo_dir, vocab_dir):
    task = build_task(name, f"{demo_dir}/{name}_train.tsv,{demo_dir}/{name}_valid.tsv", vocab_dir)
    longest = [0, 0]
    for split in ("train", "valid"):
        task.load_dataset(split)
        dataset = task.dataset(split)
        for i in range(len(dataset)):
            sample = dataset[i]
            longest = [max(longest[0], len(sample["source"])), max(longest[1], len(sample["target"]))]
    assert [task.cfg.max_src_length, task.cfg.max_tgt_length] == longest


def test_token_lengths_are_cached_per_file_and_settings_and_remeasured_when_the_file_changes(
        demo_dir, vocab_dir, tmp_path):
    rows = read_lines(demo_dir / "ner_valid.tsv")
    path = write_tsv(tmp_path / "rows.tsv", rows[:5])
    task = build_task("ner", path, vocab_dir)
    (cache,) = tmp_path.glob("rows.tsv.tokens-*.index")
    built = cache.stat().st_mtime_ns
    measured = task.measured_lengths(task.tsv_file(path)).copy()
    assert measured.shape == (5, 2) and cache.stat().st_mtime_ns == built
    # the cache, not a new pass: a cache that says otherwise is believed (so it must be kept current)
    values = np.load(cache)
    values[-2:] = 7
    with open(cache, "wb") as f:
        np.save(f, values)
    assert task.measured_lengths(task.tsv_file(path))[-1].tolist() == [7, 7]
    write_tsv(tmp_path / "rows.tsv", rows[:6])  # the file changed: measured again
    assert task.measured_lengths(task.tsv_file(path)).tolist()[:5] == measured.tolist()
    assert len(task.measured_lengths(task.tsv_file(path))) == 6
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"entity": ["person", "place", "shape", "animal", "organization"]}))
    build_task("ner", path, vocab_dir, schema_file=str(schema))  # other settings, their own cache
    assert len(list(tmp_path.glob("rows.tsv.tokens-*.index"))) == 2


def test_limits_beyond_the_model_positions_stop_the_model_build(demo_dir, vocab_dir, tmp_path):
    path = eighteen_boxes_file(demo_dir, tmp_path)
    task = build_task("ner", f"{demo_dir}/ner_valid.tsv,{path}", vocab_dir)
    assert task.cfg.max_tgt_length > 100

    def model_cfg(**overrides):
        cfg = model_config(task, **overrides)
        cfg._name = "unify_tiny"  # as fairseq-train names the architecture
        return cfg

    with pytest.raises(ValueError, match=rf"--max-tgt-length {task.cfg.max_tgt_length} .* more than the model's "
                                         rf"--max-target-positions 100; 0 rows of {demo_dir}/ner_valid.tsv, 1 rows of "
                                         rf"{path} need more target tokens than that: raise --max-target-positions"):
        task.build_model(model_cfg(max_target_positions=100))
    assert task.build_model(model_cfg()) is not None
