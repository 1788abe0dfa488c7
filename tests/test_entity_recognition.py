"""Entity recognition: the catalogue reader, names and aliases in one trie, seen/unseen accuracy."""
import json
import re
from argparse import Namespace

import pytest
import torch

from data.catalogue import read_catalogue
from data.errors import BadInputError
from helpers import build_model, build_task, set_cell, validated
from preprocess.demo_world.images import CATALOGUE_FILE, LANDMARK_COLOURS, LANDMARK_SHAPES, UNSEEN_LANDMARKS
from evaluation.metrics import seen_unseen_accuracy

ANNOTATION_COLUMN = 6  # generic layout: uniq-id 1, image 2, video 3, audio 4, text 5, annotation 6
# Shared prefixes: a name that is the start of two others, and an alias shared by two entities.
CATALOGUE = [
    ("Q1", "scarlet dome", "a red circle", "red dome&&the dome"),
    ("Q2", "scarlet dome tower", "taller", "tower of scarlet"),
    ("Q3", "scarlet domes", "", "the dome"),
    ("Q4", "red dome", "a name that is Q1's alias", ""),
]


def write_lines(path, rows):
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    return str(path)


def write_catalogue(path, entries=CATALOGUE):
    return write_lines(path, ["\t".join(entry) for entry in entries])


def demo_lines(demo_dir, name, count=None):
    with open(demo_dir / name, encoding="utf-8") as f:
        return f.read().splitlines()[:count]


# ---- the catalogue ------------------------------------------------------------------------------------


def test_tsv_and_jsonl_catalogues_read_alike(tmp_path):
    tsv = read_catalogue(write_lines(tmp_path / "c.tsv", ["id\tname\tdescription\taliases"] +
                                     ["\t".join(e) for e in CATALOGUE]))
    jsonl = read_catalogue(write_lines(tmp_path / "c.jsonl", [json.dumps(
        {"id": i, "name": n, "description": d, "aliases": [a for a in aliases.split("&&") if a], "wikidata": "x"})
        for i, n, d, aliases in CATALOGUE]))
    for catalogue in (tsv, jsonl):
        assert len(catalogue) == 4 and catalogue.ids == ["Q1", "Q2", "Q3", "Q4"]
        assert catalogue.entity("Q1").aliases == ("red dome", "the dome") and catalogue.entity("Q4").aliases == ()
        assert catalogue.entity("Q3").description == "" and catalogue.names[1] == "scarlet dome tower"
        assert "Q2" in catalogue and "Q9" not in catalogue


@pytest.mark.parametrize("name, lines, line, column, reason", [
    ("dup.tsv", ["Q1\ta", "Q2\tb", "Q1\tc"], 3, 1, "duplicate id 'Q1' (first on line 1)"),
    ("empty.tsv", ["Q1\ta", "Q2\t  \tdescription"], 2, 2, "empty name for id 'Q2'"),
    ("noid.tsv", ["\ta"], 1, 1, "empty id"),
    ("short.tsv", ["Q1\ta", "Q2"], 2, 2, "expected 2 to 4 tab-separated columns"),
    ("long.tsv", ["Q1\ta\tb\tc\td"], 1, 5, "found 5"),
    ("alias.tsv", ["Q1\ta\t\tx&&&&y"], 1, 4, "empty alias"),
    ("blank.tsv", ["Q1\ta", "", "Q2\tb"], 2, 1, "empty line"),
    ("bad.jsonl", ['{"id": "Q1", "name": "a"}', '{"id": "Q2", "name": "b",}'], 2, 26, "not valid JSON"),
    ("dup.jsonl", ['{"id": "Q1", "name": "a"}', '{"name": "b", "id": "Q1"}'], 2, 15, "duplicate id 'Q1'"),
    ("noname.jsonl", ['{"id": "Q1", "name": ""}'], 1, 14, "missing or empty name"),
    ("aliases.jsonl", ['{"id": "Q1", "name": "a", "aliases": "b"}'], 1, 27, "aliases must be a list"),
])
def test_bad_catalogues_name_file_line_and_column(tmp_path, name, lines, line, column, reason):
    path = write_lines(tmp_path / name, lines)
    with pytest.raises(BadInputError) as error:
        read_catalogue(path)
    assert re.match(rf"{re.escape(path)}:{line}: column {column}\b", str(error.value)), str(error.value)
    assert reason in str(error.value)


@pytest.mark.parametrize("name, first", [("c.tsv", "id\tname\tdescription\taliases"), ("c.tsv", None),
                                         ("c.jsonl", None)])
def test_byte_order_mark_is_stripped_before_the_header_and_reported(name, first, tmp_path, caplog):
    """A BOM (Windows editors write one) is not part of the first id, nor does it hide the header."""
    rows = ["\t".join(entry) for entry in CATALOGUE] if name.endswith(".tsv") else [
        json.dumps({"id": i, "name": n, "description": d, "aliases": a.split("&&") if a else []})
        for i, n, d, a in CATALOGUE]
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + "".join(f"{row}\n" for row in ([first] if first else []) + rows).encode())
    with caplog.at_level("WARNING"):
        catalogue = read_catalogue(path)
    assert catalogue.ids == ["Q1", "Q2", "Q3", "Q4"]
    assert [r.message for r in caplog.records] == [f"{path}: starts with a UTF-8 byte order mark, ignored"]


def test_a_catalogue_of_many_entities_loads(tmp_path):
    count = 20000
    path = write_lines(tmp_path / "big.tsv", [f"E{i}\tplace number {i}\t\tspot {i}&&site {i}" for i in range(count)])
    catalogue = read_catalogue(path)
    assert len(catalogue) == count and catalogue.entity("E19999").aliases == ("spot 19999", "site 19999")


# ---- names, aliases and the trie -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_world(demo_dir, vocab_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("entities")
    catalogue = write_catalogue(out / "catalogue.tsv")
    row = demo_lines(demo_dir, "entity_valid.tsv", 1)[0]
    rows = [set_cell(row, ANNOTATION_COLUMN, json.dumps({"entity_id": e[0]})) for e in CATALOGUE]
    return write_lines(out / "rows.tsv", rows), catalogue


def test_names_and_aliases_map_back_to_their_entities(small_world, vocab_dir):
    rows, catalogue = small_world
    task = build_task("entity_recognition", rows, vocab_dir, catalogue=catalogue)
    # batch tokenisation equals the one-text encoder
    assert [ids[:-1] for ids in task.choice_tokens] == [task.vocab.encode_text(t) for t in task.choices]
    # canonical names first, then aliases that differ from their entity's name
    assert task.choices == ["scarlet dome", "scarlet dome tower", "scarlet domes", "red dome",
                            "red dome", "the dome", "tower of scarlet", "the dome"]
    meta = {"uniq_id": "x", "entity_id": "Q1", "seen": None}
    expected = {"scarlet dome": "Q1", "scarlet dome tower": "Q2", "scarlet domes": "Q3", "tower of scarlet": "Q2",
                # shared by Q1 (alias) and Q4 (name): the canonical name wins; "the dome": the first entity
                "red dome": "Q4", "the dome": "Q1"}
    for text, entity_id in expected.items():
        prediction = task.decode_prediction(task.vocab.encode_text(text), meta)
        assert prediction["entity_id"] == entity_id and prediction["name"] == text, text
    for text in ("scarlet", "scarlet dome tow", "blue dome"):  # prefixes and strangers name no entity
        assert task.decode_prediction(task.vocab.encode_text(text), meta)["entity_id"] is None
    # the name's tokens end at a node whose children are EOS and the longer names' next tokens
    name = task.vocab.encode_text("scarlet dome")
    allowed = task.trie.allowed(torch.tensor([name]), None)[0].nonzero().squeeze(1).tolist()
    continuations = {ids[len(name)] for ids in task.choice_tokens if ids[:len(name)] == name}
    assert set(allowed) == continuations and task.vocab.dictionary.eos() in continuations
    # the target is the canonical name, whatever aliases exist
    task.load_dataset("valid")
    for i, (entity_id, name, _, _) in enumerate(CATALOGUE):
        sample = task.dataset("valid")[i]
        assert task.vocab.decode_text(sample["target"].tolist()[:-1]) == name
        assert sample["meta"]["entity_id"] == entity_id


@pytest.mark.parametrize("annotation, reason", [
    ({"entity_id": "Q77"}, "entity_id 'Q77' is not in the catalogue"),
    ({"entity": "Q1"}, 'annotation needs an "entity_id" string'),
    ({"entity_id": "Q1", "seen": "yes"}, '"seen" must be true or false'),
])
def test_bad_annotations_name_file_line_and_column(small_world, vocab_dir, tmp_path, annotation, reason):
    rows, catalogue = small_world
    with open(rows, encoding="utf-8") as f:
        good = f.read().splitlines()
    path = write_lines(tmp_path / "bad.tsv", [good[0], set_cell(good[1], ANNOTATION_COLUMN, json.dumps(annotation))])
    task = build_task("entity_recognition", path, vocab_dir, catalogue=catalogue)
    task.load_dataset("valid")
    with pytest.raises(BadInputError) as error:
        task.dataset("valid")[1]
    assert re.match(rf"{re.escape(path)}:2: column {ANNOTATION_COLUMN} \(annotation\): ", str(error.value))
    assert reason in str(error.value)


def test_missing_catalogue_is_refused(demo_dir, vocab_dir):
    with pytest.raises(ValueError, match="--catalogue"):
        build_task("entity_recognition", f"{demo_dir}/entity_valid.tsv", vocab_dir)


# ---- metrics -----------------------------------------------------------------------------------------------


def test_seen_unseen_accuracy_and_harmonic_mean_by_hand():
    correct = [True, False, True, True, False, False]
    seen = [True, True, True, True, False, False]
    # seen 3/4, unseen 0/2 -> harmonic mean 0; overall 3/6
    assert seen_unseen_accuracy(correct, seen) == {"accuracy": 0.5, "seen_accuracy": 0.75, "unseen_accuracy": 0.0,
                                                   "harmonic_mean": 0.0}
    correct[4] = True  # unseen 1/2: harmonic mean 2 * 0.75 * 0.5 / 1.25 = 0.6
    assert seen_unseen_accuracy(correct, seen)["harmonic_mean"] == pytest.approx(0.6)
    assert seen_unseen_accuracy([True, False], [None, None]) == {"accuracy": 0.5}
    assert seen_unseen_accuracy([True, False], [True, True]) == {"accuracy": 0.5, "seen_accuracy": 0.5}


def test_validation_reports_seen_and_unseen_accuracy_over_their_own_rows(demo_dir, vocab_dir):
    """In batches of 4, validation's seen and unseen accuracy and harmonic mean are those of all the rows at
    once (each over its own rows), not row-weighted means of the batches' figures."""
    task = demo_task(demo_dir, vocab_dir)
    seen = [True, True, True, False, True, True, False, True, False, False, False, True]
    correct = [True, True, False, False, True, False, True, True, True, False, True, True]
    predictions = [{"entity_id": "Q1" if c else "Q2", "reference": "Q1", "seen": s} for c, s in zip(correct, seen)]
    expected = task.score(predictions)
    assert set(expected) == {"accuracy", "seen_accuracy", "unseen_accuracy", "harmonic_mean"}
    values = validated(task, predictions, batch_size=4)
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, abs=1e-4), name
    batches = [task.score(predictions[s:s + 4]) for s in range(0, 12, 4)]
    assert abs(sum(b["unseen_accuracy"] for b in batches) / 3 - expected["unseen_accuracy"]) > 0.01


# ---- the demo world -------------------------------------------------------------------------------------------


def demo_task(demo_dir, vocab_dir, split="valid"):
    return build_task("entity_recognition", f"{demo_dir}/entity_{split}.tsv", vocab_dir,
                      catalogue=f"{demo_dir}/{CATALOGUE_FILE}")


def test_demo_catalogue_holds_every_landmark_and_prefix_sharing_distractors(demo_dir):
    catalogue = read_catalogue(demo_dir / CATALOGUE_FILE)
    pairs = len(LANDMARK_COLOURS) * len(LANDMARK_SHAPES)
    assert len(catalogue) == 2 * pairs + len(LANDMARK_COLOURS)
    for colour, word in LANDMARK_COLOURS.items():
        for kind, shape_word in LANDMARK_SHAPES.items():
            landmark = catalogue.entity(f"landmark-{colour}-{kind}")
            assert landmark.name == f"{word} {shape_word}" and f"{colour} {kind} landmark" in landmark.aliases
            assert catalogue.entity(f"tower-{colour}-{kind}").name == f"{landmark.name} tower"


def test_demo_rows_name_landmarks_with_seen_flags(demo_dir, vocab_dir):
    task = demo_task(demo_dir, vocab_dir)
    names = {f"landmark-{c}-{k}": f"{w} {LANDMARK_SHAPES[k]}" for c, w in LANDMARK_COLOURS.items()
             for k in LANDMARK_SHAPES}
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    seen_flags = set()
    for i in range(len(dataset)):
        sample = dataset[i]
        entity_id = sample["meta"]["entity_id"]
        colour, kind = entity_id.split("-")[1:]
        assert sample["meta"]["seen"] == ((colour, kind) not in UNSEEN_LANDMARKS)
        seen_flags.add(sample["meta"]["seen"])
        assert task.vocab.decode_text(sample["target"].tolist()[:-1]) == names[entity_id]
    train = demo_task(demo_dir, vocab_dir, "train")
    train.load_dataset("train")
    trained = {train.dataset("train")[i]["meta"]["entity_id"] for i in range(len(train.dataset("train")))}
    assert not {f"landmark-{c}-{k}" for c, k in UNSEEN_LANDMARKS} & trained
    assert seen_flags == {True, False}


def test_constrained_beam_search_writes_only_catalogue_names(demo_dir, vocab_dir):
    task = demo_task(demo_dir, vocab_dir)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[i] for i in range(4)])
    torch.manual_seed(0)
    model = build_model(task).eval()
    generator = task.build_generator([model], Namespace(beam=3, max_len_b=4, min_len=1))
    eos = task.vocab.dictionary.eos()
    for hyps in task.inference_step(generator, [model], batch):
        assert len(hyps) == 3
        for hyp in hyps:
            tokens = hyp["tokens"].tolist()
            assert tokens[-1] == eos and task.choice_of(tokens[:-1]) is not None, tokens
    predictions = task.predict(generator, [model], batch)
    assert all(p["entity_id"] in task.catalogue for p in predictions)
    scores = task.score(predictions)
    assert scores["accuracy"] == pytest.approx(sum(p["entity_id"] == p["reference"] for p in predictions) / 4)
