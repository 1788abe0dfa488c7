"""Caption metrics as the COCO caption evaluation computes them: the captions as written, PTB-tokenised
by pycocoevalcap, then its scorers; checked on COCO-mini's real captions, leaving one out per image."""
import json
import os

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from conftest import SHARED_DATA
from helpers import build_task, write_tsv
from tasks.caption import normalise_caption
from evaluation import metrics
from evaluation.metrics import caption_inputs, caption_scores, ptb_tokenize

COCO = os.path.join(SHARED_DATA, "coco-mini")


def pycocoevalcap_inputs(references, hypotheses):
    """(gts, res) as COCOEvalCap.evaluate makes them: each side PTB-tokenised by its own tokenizer run."""
    return (PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in references.items()}),
            PTBTokenizer().tokenize({k: [{"caption": v}] for k, v in hypotheses.items()}))


@pytest.fixture(scope="module")
def leave_one_out(vocab_dir, tmp_path_factory):
    """A caption TSV of one row per COCO-mini photo and caption: the other four captions, as written, are
    the row's references; the caption left out is its hypothesis. Returns the task, its predictions and
    the references (uid -> the four captions from captions.json)."""
    with open(os.path.join(COCO, "captions.json")) as f:
        captions = json.load(f)
    files = {image["id"]: image["file_name"] for image in captions["images"]}
    by_image = {}
    for a in sorted(captions["annotations"], key=lambda a: a["id"]):
        by_image.setdefault(a["image_id"], []).append(a["caption"])
    rows, held_out, references = [], {}, {}
    for image_id, texts in sorted(by_image.items()):
        for k, text in enumerate(texts):
            uid = f"{image_id}_{k}"
            held_out[uid], references[uid] = text, texts[:k] + texts[k + 1:]
            rows.append("\t".join([uid, str(image_id), "&&".join(references[uid]), "", files[image_id]]))
    data = write_tsv(tmp_path_factory.mktemp("captions") / "valid.tsv", rows)
    task = build_task("caption", data, vocab_dir, media_dir=os.path.join(COCO, "images"), max_tgt_length=200)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    metas = [dataset[i]["meta"] for i in range(len(dataset))]
    predictions = [{"uniq_id": m["uniq_id"], "caption": held_out[m["uniq_id"]], "references": m["references"]}
                   for m in metas]
    return task, predictions, references


def test_validation_cider_equals_pycocoevalcap_on_the_raw_references(leave_one_out):
    task, predictions, references = leave_one_out
    assert len(predictions) == len(references) == 130 and all(len(r) == 4 for r in references.values())
    hypotheses = {p["uniq_id"]: p["caption"] for p in predictions}
    gts, res = pycocoevalcap_inputs(references, hypotheses)
    assert caption_inputs(hypotheses, references) == (gts, res)  # what every scorer reads, METEOR included
    expected = Cider().compute_score(gts, res)[0]
    assert task.score(predictions)["cider"] == pytest.approx(expected, abs=1e-9)  # checkpoint selection
    per_caption = [s["CIDEr"] for s in task.sample_scores(predictions, full=True)]
    assert sum(per_caption) / len(per_caption) == pytest.approx(expected, abs=1e-9)
    # References normalised before tokenising (as before) score differently: the check can tell them apart.
    normalised = {k: [normalise_caption(r) for r in v] for k, v in references.items()}
    assert abs(caption_scores(hypotheses, normalised, full=False)["cider"] - expected) > 1e-4


def test_validation_batches_add_up_to_the_files_cider(leave_one_out):
    """Validation batches scored one at a time and weighed by their size, as reduce_metrics does, give the
    file's CIDEr: each caption is scored with the whole file's document frequencies, not its batch's."""
    task, predictions, _ = leave_one_out
    expected = task.score(predictions)["cider"]
    batches = [predictions[i:i + 16] for i in range(0, len(predictions), 16)]
    counts = [task.validation_counts(batch) for batch in batches]
    summed = {name: sum(c[name] for c in counts) for name in counts[0]}
    assert task.validation_metrics(summed)["cider"] == pytest.approx(expected, abs=1e-9)
    # Each batch with its own frequencies (what validation reported before) is another figure.
    batch_means = sum(task.score(batch)["cider"] * len(batch) for batch in batches) / len(predictions)
    assert abs(batch_means - expected) > 0.01


@pytest.mark.slow  # METEOR loads its paraphrase tables in Java: 20 s a run
def test_evaluation_metrics_equal_pycocoevalcap_on_the_raw_references(leave_one_out):
    task, predictions, references = leave_one_out
    gts, res = pycocoevalcap_inputs(references, {p["uniq_id"]: p["caption"] for p in predictions})
    expected = {"BLEU-4": Bleu(4).compute_score(gts, res, verbose=0)[0][3],
                "METEOR": Meteor().compute_score(gts, res)[0],
                "ROUGE-L": Rouge().compute_score(gts, res)[0], "CIDEr": Cider().compute_score(gts, res)[0]}
    ours = task.score(predictions, full=True)
    assert set(ours) == set(expected)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name


def test_references_reach_the_scorers_as_the_ptb_tokenizer_splits_them():
    gts, res = caption_inputs({"1": "A turkey s head."}, {"1": ["A turkey's head (roasted)!", "Two \"big\" dogs..."]})
    # lower-cased; clitic split off; quotes, '.', '!' and '...' dropped; brackets kept as the lower-cased
    # -lrb-/-rrb- that pycocoevalcap's punctuation list (upper case) misses
    assert gts == {"1": ["a turkey 's head -lrb- roasted -rrb-", "two big dogs"]} and res == {"1": ["a turkey s head"]}
    assert caption_scores({"1": "a turkey s head"}, {"1": ["A turkey's head."]}, full=False)["cider"] == 0.0


def test_a_line_break_inside_a_caption_keeps_every_caption_on_its_own_id():
    """pycocoevalcap's PTBTokenizer replaces only "\\n": a caption holding "\\r" or U+2028 became two lines
    for Java and every later caption moved to the id before it. Ours tokenises them as spaces."""
    texts = {"a": ["A red\rsquare."], "b": ["", "Two\u2028dogs"], "c": ["Café au lait, naïve."]}
    assert ptb_tokenize(texts) == {"a": ["a red square"], "b": ["", "two dogs"], "c": ["café au lait naïve"]}
    shifted = PTBTokenizer().tokenize({k: [{"caption": t} for t in v] for k, v in texts.items()})
    assert shifted["c"] != ["café au lait naïve"]  # pycocoevalcap's own run moves it


def test_a_failed_tokenizer_run_is_an_error_not_missing_captions(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics, "PTB_JAR", str(tmp_path / "absent.jar"))
    with pytest.raises(RuntimeError, match=r"PTB tokenizer failed \(exit 1, 1 lines for 2 texts\)"):
        ptb_tokenize({"a": ["A red square.", "A blue circle."]})
