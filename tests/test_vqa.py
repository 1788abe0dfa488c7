"""VQA and SNLI-VE: UnIVAL rows, answer tries, both evaluation modes, soft accuracy, bad answer cells."""
import json
import os
import re
import subprocess
import sys
from argparse import Namespace

import pytest
import torch

from data.errors import BadInputError
from helpers import (build_criterion, build_model, build_task, losses_over_steps, read_lines, set_cell,
                     tiny_model_args, write_tsv)
from decoding.constraints import Constraint
from evaluation.metrics import vqa_soft_accuracy

# 1-based file columns: vqa  question-id 1, image-id 2, question 3, answers 4, objects 5, image 6
#                      snli_ve  uniq-id 1, image-id 2, image 3, hypothesis 4, premise 5, label 6
ANSWERS_COLUMN, LABEL_COLUMN = 4, 6


def vqa_task(demo_dir, vocab_dir, **options):
    return build_task("vqa", f"{demo_dir}/vqa_train.tsv,{demo_dir}/vqa_valid.tsv", vocab_dir, **options)


def assert_located(error, path, line, column, name):
    assert re.match(rf"{re.escape(str(path))}:{line}: column {column} \({name}\): ", str(error)), str(error)


# ---- rows and targets -------------------------------------------------------------------------------


def test_demo_rows_target_their_most_confident_answer(demo_dir, vocab_dir):
    task = vqa_task(demo_dir, vocab_dir)
    # no --answers-file: every training row's best answer, in the task state that checkpoints keep
    assert task.state_dict()["answers"] == task.choices
    assert {"yes", "no", "one", "two", "three", "red", "circle"} <= set(task.choices)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    regions = [json.loads(row.split("\t")[5])["regions"] for row in read_lines(demo_dir / "regions_valid.tsv")]
    for i in range(len(dataset)):
        sample, row = dataset[i], read_lines(demo_dir / "vqa_valid.tsv")[i].split("\t")
        answers = sample["meta"]["answers"]
        best = max(answers, key=answers.get)
        assert answers[best] == 1.0 and all(v in (1.0, 0.3) for v in answers.values())
        assert task.vocab.decode_text(sample["target"].tolist()[:-1]) == best
        assert task.vocab.decode_text(sample["source"].tolist()[:-1]) == row[2]
        assert tuple(sample["image"].shape) == (3, 64, 64)
        if row[2] == "how many shapes are there?":
            count = len(regions[int(row[0].split("-")[2])])
            assert answers == {["one", "two", "three"][count - 1]: 1.0, str(count): 0.3}


def test_question_cleaning_follows_ofa(demo_dir, vocab_dir, tmp_path):
    row = read_lines(demo_dir / "vqa_valid.tsv", 1)[0]
    path = write_tsv(tmp_path / "q.tsv", [set_cell(row, 3, "  ,What   color is the T-shirt/top")])
    task = build_task("vqa", path, vocab_dir, answers_file=str(write_tsv(tmp_path / "a.txt", ["red"])))
    task.load_dataset("valid")
    sample = task.dataset("valid")[0]
    # OFA's pre_question strips leading punctuation before spaces, so a comma after spaces stays
    assert sample["meta"]["question"] == ",what color is the t shirt top?"


def test_answer_lists_from_text_and_json_files(demo_dir, vocab_dir, tmp_path):
    text = write_tsv(tmp_path / "answers.txt", ["yes", "no", "red", "two"])
    assert vqa_task(demo_dir, vocab_dir, answers_file=text).choices == ["yes", "no", "red", "two"]
    ans2label = tmp_path / "ans2label.json"
    ans2label.write_text(json.dumps({"no": 1, "yes": 0, "two": 2}))
    assert vqa_task(demo_dir, vocab_dir, answers_file=str(ans2label)).choices == ["yes", "no", "two"]
    repeated = write_tsv(tmp_path / "repeated.txt", ["yes", "no", "yes"])
    with pytest.raises(BadInputError, match=r"repeated.txt:3: column 1: answer 'yes' repeats line 1"):
        vqa_task(demo_dir, vocab_dir, answers_file=repeated)


def test_one_tsv_takes_its_answers_from_the_checkpoint_state_or_is_refused(demo_dir, vocab_dir):
    trained = vqa_task(demo_dir, vocab_dir)
    task = build_task("vqa", f"{demo_dir}/vqa_valid.tsv", vocab_dir)  # evaluate.py's view of a checkpoint
    task.load_state_dict(trained.state_dict())  # as fairseq's checkpoint loading does after setup
    task.load_dataset("valid")
    assert task.choices == trained.choices
    task = build_task("vqa", f"{demo_dir}/vqa_valid.tsv", vocab_dir)
    with pytest.raises(ValueError, match="--answers-file"):
        task.load_dataset("valid")


@pytest.mark.slow
def test_train_then_evaluate_on_one_tsv_with_the_trained_answers(demo_dir, vocab_dir, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in tiny_model_args().items()]
    run([sys.executable, os.path.join(root, "train.py"), f"{demo_dir}/vqa_train.tsv,{demo_dir}/vqa_valid.tsv",
         "--task", "vqa", "--vocab-dir", str(vocab_dir), "--patch-image-size", "64", *flags,
         "--criterion", "constrained_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-3",
         "--batch-size", "8", "--max-update", "2", "--num-workers", "0", "--save-dir", str(tmp_path / "ckpt"),
         "--no-epoch-checkpoints", "--disable-validation", "--log-format", "simple"], tmp_path)
    results = tmp_path / "results"
    run([sys.executable, os.path.join(root, "evaluate.py"), "--path", str(tmp_path / "ckpt" / "checkpoint_last.pt"),
         "--data", f"{demo_dir}/vqa_valid.tsv", "--results-dir", str(results), "--beam", "3", "--cpu"], tmp_path)
    predictions = [json.loads(line) for line in (results / "predictions.jsonl").read_text().splitlines()]
    answers = set(vqa_task(demo_dir, vocab_dir).choices)
    assert len(predictions) == len(read_lines(demo_dir / "vqa_valid.tsv"))
    assert all(p["answer"] in answers for p in predictions)
    expected = vqa_soft_accuracy([p["answer"] for p in predictions], [p["references"] for p in predictions])
    assert json.loads((results / "metrics.json").read_text())["vqa_score"] == pytest.approx(expected["vqa_score"])


def run(command, cwd):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("cell, reason", [
    ("yes", "is not conf|!+answer"),
    ("high|!+yes", "confidence 'high' of answer 'yes' is not a non-negative number"),
    ("-0.5|!+yes", "is not a non-negative number"),
    ("nan|!+yes", "is not a non-negative number"),
    ("1.0|!+yes&&0.3|!+yes", "answer 'yes' is listed twice"),
    ("1.0|!+ ", "empty answer"),
])
def test_bad_answer_cells_name_file_line_and_column(demo_dir, vocab_dir, tmp_path, cell, reason):
    good = read_lines(demo_dir / "vqa_valid.tsv", 3)
    path = write_tsv(tmp_path / "bad.tsv", [good[0], set_cell(good[1], ANSWERS_COLUMN, cell), good[2]])
    task = build_task("vqa", path, vocab_dir, answers_file=write_tsv(tmp_path / "a.txt", ["yes"]))
    task.load_dataset("valid")
    with pytest.raises(BadInputError) as error:
        task.dataset("valid")[1]
    assert_located(error.value, path, 2, ANSWERS_COLUMN, "answers")
    assert reason in str(error.value)


def test_an_answer_outside_the_list_stops_training_but_is_scored(demo_dir, vocab_dir, tmp_path):
    row = set_cell(read_lines(demo_dir / "vqa_valid.tsv", 1)[0], ANSWERS_COLUMN, "1.0|!+purple&&0.3|!+violet")
    path = write_tsv(tmp_path / "rows.tsv", [row])
    answers = write_tsv(tmp_path / "a.txt", ["yes", "no", "red"])
    task = build_task("vqa", f"{path},{path}", vocab_dir, answers_file=answers)
    task.load_dataset("train")
    with pytest.raises(BadInputError, match=r"none of the answers \['purple', 'violet'\] is a candidate"):
        task.dataset("train")[0]
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[0]])
    assert task.vocab.decode_text(batch["target"][0].tolist()[:-1]) == "purple"
    loss, _, _ = build_criterion(task)(build_model(task), batch)
    assert torch.isfinite(loss)


# ---- soft accuracy ---------------------------------------------------------------------------------


def test_soft_accuracy_on_hand_computed_cases():
    references = [{"two": 1.0, "3": 0.3}, {"two": 1.0, "3": 0.3}, {"blue": 1.0}, {"yes": 1.5}, {"no": 0.6}]
    predictions = ["two", "3", "red", "yes", None]
    # 1.0, 0.3, 0 (not listed), min(1, 1.5) = 1.0, 0 (no answer): mean 2.3 / 5
    assert vqa_soft_accuracy(predictions, references) == {"vqa_score": pytest.approx(0.46)}
    assert vqa_soft_accuracy(["no"], [{"no": 0.6}])["vqa_score"] == pytest.approx(0.6)


def test_task_score_reads_predicted_answers(demo_dir, vocab_dir):
    task = vqa_task(demo_dir, vocab_dir)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    metas = [dataset[i]["meta"] for i in range(4)]
    tokens = [task.vocab.encode_text(max(m["answers"], key=m["answers"].get)) for m in metas]
    predictions = [task.decode_prediction(t, m) for t, m in zip(tokens, metas)]
    predictions[0] = task.decode_prediction(task.vocab.encode_text("no such answer"), metas[0])
    assert predictions[0]["answer"] == "no such answer"
    assert task.score(predictions)["vqa_score"] == pytest.approx(3 / 4)


# ---- generation and candidate scoring ----------------------------------------------------------------


def generate(task, model, batch, beam, max_len_b):
    generator = task.build_generator([model], Namespace(beam=beam, max_len_b=max_len_b, min_len=1))
    return task.inference_step(generator, [model], batch)


def test_every_candidate_answer_fits_the_target_limit_whole(demo_dir, vocab_dir, tmp_path):
    """A candidate longer than any training row's answer still sizes the unset limit; a set limit
    that cuts candidates is refused with their count."""
    answers = tmp_path / "answers.txt"
    answers.write_text("yes\nno\na rather long answer that no row gives\n")
    data = f"{demo_dir}/vqa_train.tsv,{demo_dir}/vqa_valid.tsv"
    task = build_task("vqa", data, vocab_dir, answers_file=str(answers))
    longest = max(len(tokens) for tokens in task.choice_tokens)
    assert task.cfg.max_tgt_length == longest > 4
    with pytest.raises(ValueError, match=rf"1 of 3 candidate texts need more than --max-tgt-length 4 tokens "
                                         rf"\(the longest needs {longest}\)"):
        build_task("vqa", data, vocab_dir, answers_file=str(answers), max_tgt_length=4)


@pytest.mark.parametrize("name", ["vqa", "snli_ve"])
def test_constrained_beam_search_never_leaves_the_answer_trie(demo_dir, vocab_dir, name):
    task = build_task(name, f"{demo_dir}/{name}_train.tsv,{demo_dir}/{name}_valid.tsv", vocab_dir)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[i] for i in range(6)])
    torch.manual_seed(0)
    model = build_model(task).eval()
    eos = task.vocab.dictionary.eos()
    # max_len_b 1 is shorter than some answers: the task raises the limit rather than cut an answer
    hypotheses = generate(task, model, batch, beam=3, max_len_b=1)
    assert len(hypotheses) == 6 and all(len(hyps) == 3 for hyps in hypotheses)
    for hyps in hypotheses:
        for hyp in hyps:
            tokens = hyp["tokens"].tolist()
            assert tokens[-1] == eos and task.choice_of(tokens[:-1]) is not None, tokens
            assert torch.isfinite(hyp["score"])
        assert len({tuple(h["tokens"].tolist()) for h in hyps}) == 3  # three different answers
    # beam 5 > SNLI-VE's three answers: fairseq would wait for a fifth finished hypothesis forever, so the
    # task lowers the beam to the candidate count
    predictions = task.predict(task.build_generator([model], Namespace(beam=5, max_len_b=8)), [model], batch)
    answer_key = "answer" if name == "vqa" else "prediction"
    allowed = set(task.choices) if name == "vqa" else {"entailment", "neutral", "contradiction"}
    assert all(p[answer_key] in allowed for p in predictions)
    # the same untrained model, unconstrained, writes text outside the trie: the constraint did the work
    task.cfg.unconstrained = True
    free = generate(task, model, batch, beam=4, max_len_b=8)
    assert any(task.choice_of(h["tokens"].tolist()[:-1]) is None for hyps in free for h in hyps)


def direct_log_likelihood(task, model, batch, b, tokens):
    """Sequence log-likelihood of one candidate for sample b: a plain teacher-forced forward pass, the
    softmax of each step over the tokens the trie allows (the step-wise masks of Constraint)."""
    eos = task.vocab.dictionary.eos()
    target = torch.tensor([tokens])
    net_input = {k: v[b:b + 1] for k, v in batch["net_input"].items() if k != "prev_output_tokens"}
    net_input["prev_output_tokens"] = torch.tensor([[eos] + tokens[:-1]])
    logits = model(**net_input)[0]
    logits = logits.masked_fill(~Constraint.training_masks(task.trie, target), float("-inf"))
    return torch.log_softmax(logits.float(), dim=-1).gather(2, target.unsqueeze(2)).sum().item()


def test_candidate_scoring_picks_the_most_likely_candidate(demo_dir, vocab_dir):
    task = vqa_task(demo_dir, vocab_dir)
    vocab_size, longest = len(task.vocab.dictionary), max(map(len, task.choice_tokens))
    task.cfg.candidate_logits = 5 * longest * vocab_size  # five (sample, candidate) pairs a pass
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[i] for i in range(3)])
    torch.manual_seed(0)
    model = build_model(task).eval()
    scores = task.candidate_scores([model], batch)
    assert scores.shape == (3, len(task.choices))
    with torch.no_grad():
        direct = torch.tensor([[direct_log_likelihood(task, model, batch, b, tokens) for tokens in task.choice_tokens]
                               for b in range(3)])
    assert torch.allclose(scores, direct, atol=1e-4), (scores - direct).abs().max()
    task.cfg.eval_mode = "candidates"
    predictions = task.predict(None, [model], batch)
    assert [p["answer"] for p in predictions] == [task.choices[i] for i in direct.argmax(1).tolist()]


def test_exhaustive_beam_search_agrees_with_candidate_scoring(demo_dir, vocab_dir):
    """With as many beams as candidates the trie search is exhaustive, so it must pick the candidate
    with the highest likelihood: constrained steps renormalised over the allowed tokens, as in
    training, and whole-sequence scores rather than per-token means."""
    task = vqa_task(demo_dir, vocab_dir)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[i] for i in range(4)])
    torch.manual_seed(0)
    model = build_model(task).eval()
    best = task.candidate_scores([model], batch).argmax(1).tolist()
    generator = task.build_generator([model], Namespace(beam=task.trie.num_distinct, max_len_b=16))
    predictions = task.predict(generator, [model], batch)
    assert [p["answer"] for p in predictions] == [task.choices[i] for i in best]


def test_eval_mode_is_checked(demo_dir, vocab_dir):
    with pytest.raises(ValueError, match="--eval-mode"):
        vqa_task(demo_dir, vocab_dir, eval_mode="greedy")


# ---- training ----------------------------------------------------------------------------------------


def test_a_few_steps_lower_the_vqa_loss_under_the_answer_masks(demo_dir, vocab_dir):
    task = vqa_task(demo_dir, vocab_dir)
    task.load_dataset("train")
    dataset = task.dataset("train")
    batch = dataset.collater([dataset[i] for i in range(8)])
    masks = batch["constraint_masks"]
    real = batch["target"].ne(task.vocab.dictionary.pad())
    first_tokens = {tokens[0] for tokens in task.choice_tokens}
    assert masks[:, 0].sum(1).tolist() == [len(first_tokens)] * 8  # the first step offers the answers' first tokens
    assert masks[real].sum(1).lt(len(task.vocab.dictionary)).all()
    losses = losses_over_steps(task, batch, 20)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], losses


# ---- SNLI-VE -----------------------------------------------------------------------------------------


def test_snli_ve_rows_ask_ofa_questions_and_answer_yes_maybe_no(demo_dir, vocab_dir):
    task = build_task("snli_ve", f"{demo_dir}/snli_ve_valid.tsv", vocab_dir)
    assert task.choices == ["yes", "maybe", "no"]
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    answers = {"entailment": "yes", "neutral": "maybe", "contradiction": "no"}
    rows = [row.split("\t") for row in read_lines(demo_dir / "snli_ve_valid.tsv")]
    for i, row in enumerate(rows):
        sample = dataset[i]
        assert task.vocab.decode_text(sample["source"].tolist()[:-1]) == f'does the image describe " {row[3]} "?'
        assert task.vocab.decode_text(sample["target"].tolist()[:-1]) == answers[row[5]]
        prediction = task.decode_prediction(sample["target"].tolist()[:-1], sample["meta"])
        assert prediction["prediction"] == prediction["label"] == row[5]
    metas = [dataset[i]["meta"] for i in range(4)]
    predictions = [task.decode_prediction(task.vocab.encode_text("yes"), m) for m in metas]
    expected = sum(m["label"] == "entailment" for m in metas) / 4
    assert task.score(predictions) == {"accuracy": pytest.approx(expected)}
    with_premise = build_task("snli_ve", f"{demo_dir}/snli_ve_valid.tsv", vocab_dir, add_premise=True)
    with_premise.load_dataset("valid")
    source = with_premise.dataset("valid")[0]["source"].tolist()[:-1]
    assert task.vocab.decode_text(source) == f'can image and text1 " {rows[0][4]} " imply text2 " {rows[0][3]} "?'


def test_unknown_snli_ve_label_names_file_line_and_column(demo_dir, vocab_dir, tmp_path):
    good = read_lines(demo_dir / "snli_ve_valid.tsv", 2)
    path = write_tsv(tmp_path / "bad.tsv", [good[0], set_cell(good[1], LABEL_COLUMN, "entails")])
    task = build_task("snli_ve", path, vocab_dir)
    task.load_dataset("valid")
    with pytest.raises(BadInputError) as error:
        task.dataset("valid")[1]
    assert_located(error.value, path, 2, LABEL_COLUMN, "label")
    assert "unknown label 'entails'" in str(error.value)
