"""Visual question answering on UnIVAL/OFA VQA TSVs:
question-id, image-id, question, ``conf|!+answer&&conf|!+answer...``, objects, image.

Answers come from a fixed candidate list (a text file with one answer per line, a JSON
list, or OFA's ans2label as JSON or as its ``.pkl``, read as plain data with no code run)
or, without one, from the training rows: each training row's best answer, read once and
kept in the task state, which fairseq saves in checkpoints (``task_state``), so evaluation
uses the list the model was trained on. The target is the row's most confident candidate
answer; generation and the training softmax are confined to the candidates
(tasks/closed_set.py); the metric is the official VQA accuracy (utils/vqa_eval.py: answers
compared after the official normalisation).
"""
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Optional

from fairseq.tasks import register_task

from data.dataset import Row
from data.errors import BadInputError
from data.tsv import TsvFile
from tasks.closed_set import ClosedSetConfig, ClosedSetTask
from tasks.results import Answer
from utils.metrics import vqa_soft_accuracy
from utils.ofa_text import clean_question
from utils.plain_pickle import load_plain_pickle
from utils.report import SampleView

logger = logging.getLogger(__name__)

ANSWER_SEPARATOR, CONFIDENCE_SEPARATOR = "&&", "|!+"


def parse_answers(row, column="answers"):
    """``conf|!+answer&&...`` -> {answer: confidence}, in row order; bad cells name their column."""
    answers = {}
    for item in row[column].split(ANSWER_SEPARATOR):
        confidence, separator, answer = item.partition(CONFIDENCE_SEPARATOR)
        if not separator:
            raise row.error(column, f"answer {item!r} is not conf{CONFIDENCE_SEPARATOR}answer")
        try:
            value = float(confidence)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise row.error(column, f"confidence {confidence!r} of answer {answer!r} is not a non-negative number")
        answer = answer.strip()
        if not answer:
            raise row.error(column, f"empty answer in {item!r}")
        if answer in answers:
            raise row.error(column, f"answer {answer!r} is listed twice")
        answers[answer] = value
    return answers


def best_answer(answers, allowed=None):
    """The most confident answer (the first of equals), among ``allowed`` if given; None if none is."""
    best = None
    for answer, confidence in answers.items():
        if (allowed is None or answer in allowed) and (best is None or confidence > answers[best]):
            best = answer
    return best


def read_answer_object(path):
    """The answers object of a .json file, or of a .pkl file (OFA's ``trainval_ans2label.pkl``) read
    without running any of its code; None for another kind of file."""
    if str(path).endswith(".pkl"):
        return load_plain_pickle(path)
    if str(path).endswith(".json"):
        with open(path, encoding="utf-8") as f:
            try:
                return json.load(f)
            except json.JSONDecodeError as error:
                raise BadInputError(path, error.lineno, error.colno, f"not valid JSON: {error.msg}") from None
    return None


def read_answer_file(path):
    """Candidate answers: a JSON list or OFA's ans2label {answer: label} (ordered by label) in a .json
    file or OFA's .pkl, otherwise one answer per line. Empty or repeated answers are errors."""
    loaded = read_answer_object(path)
    if loaded is not None:
        if isinstance(loaded, dict):
            loaded = sorted(loaded, key=loaded.get)
        if not isinstance(loaded, list) or not all(isinstance(a, str) for a in loaded):
            raise BadInputError(path, 1, 1, "expected a list of answers or an {answer: label} object")
        entries = [(1, answer) for answer in loaded]
    else:
        with open(path, encoding="utf-8") as f:
            entries = list(enumerate(f.read().split("\n"), start=1))
        if entries and entries[-1][1] == "":
            entries.pop()  # the final newline
    answers, seen = [], {}
    for line, answer in entries:
        answer = answer.strip()
        if not answer:
            raise BadInputError(path, line, 1, "empty answer")
        if answer in seen:
            raise BadInputError(path, line, 1, f"answer {answer!r} repeats line {seen[answer]}")
        seen[answer] = line
        answers.append(answer)
    if not answers:
        raise BadInputError(path, 1, 1, "no answers")
    return answers


@dataclass
class VqaConfig(ClosedSetConfig):
    answers_file: Optional[str] = field(default=None, metadata={
        "help": "candidate answers: one per line, a .json list, or OFA's ans2label {answer: label} as .json or "
                "as OFA's .pkl (read as plain data; a pickle naming any class is refused); "
                "default: every training row's best answer"})


@register_task("vqa", dataclass=VqaConfig)
class VqaTask(ClosedSetTask):
    columns = ("question_id", "image", "question", "answers", "objects")
    prompt = " {}"
    primary_metric = "vqa_score"
    default_cols = "0,5,2,3,4"
    normalise_answers = True  # compare answers as the official VQA evaluation does

    def choices_known(self):
        """Known now from a file, or from training rows; otherwise (a checkpoint evaluated on one TSV)
        the checkpoint's task state brings them after setup."""
        self.state.add_factory("answers", self.training_answers)
        return bool(self.cfg.answers_file) or "answers" in self.state.state_dict or len(self.data_paths()) > 1

    def choice_texts(self):
        if self.cfg.answers_file:
            answers, self.answers_source = read_answer_file(self.cfg.answers_file), self.cfg.answers_file
        else:
            self.answers_source = "the checkpoint's answer list"
            answers = self.state.answers  # read from the training rows when not loaded from a checkpoint
        self.answer_set = set(answers)
        return answers

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        answers = state_dict.get("answers")
        if self._trie is not None and not self.cfg.answers_file and answers is not None and answers != self.choices:
            self._trie = None  # the checkpoint's answers, not this data's

    def training_answers(self):
        """Every training row's best answer, in order of first appearance (read once)."""
        paths = self.data_paths()
        if len(paths) < 2:
            raise ValueError(f"{self.__class__.__name__}: no candidate answers. Give --answers-file (one answer "
                             "a line), DATA as train.tsv[,more.tsv],valid.tsv to read them from the training rows "
                             "(a single TSV would be the evaluated one), or a checkpoint that keeps them.")
        cols = [int(c) for c in (self.cfg.selected_cols or self.default_cols).split(",")]
        answers = {}
        for path in paths[:-1]:
            tsv = TsvFile(path, selected_cols=cols)
            logger.info("reading candidate answers from the %d rows of %s (--answers-file skips this)",
                        len(tsv), path)
            for i in range(len(tsv)):
                try:
                    row = Row(tsv, i, dict(zip(self.columns, tsv.fields(i))))
                    answers.setdefault(best_answer(parse_answers(row)), None)
                except BadInputError:
                    if not self.cfg.skip_bad_rows:
                        raise  # otherwise the dataset meets the row again, and logs and counts it
        self.answers_source = "the training rows"
        logger.info("%d candidate answers", len(answers))
        return list(answers)

    def row_lengths(self, row):
        """The prompt, and the row's best answer: a training row's target is its best candidate, which
        ``least_target_length`` covers."""
        return (len(self.source_ids(self.prompt.format(self.question(row)))),
                len(self.vocab.encode_output(best_answer(parse_answers(row)))))

    def question(self, row):
        question = clean_question(row["question"])
        if not question:
            raise row.error("question", "empty question")
        return question

    def build_sample(self, row, train):
        question = self.question(row)
        answers = parse_answers(row) if row.labelled else {}
        target = self.target(row, answers, train) if row.labelled else None
        sample = {
            "source": self.encode_source(self.prompt.format(question), row, "question"),
            **self.read_media(row, train),
            "meta": {"question_id": row["question_id"], "question": question, "answers": answers},
        }
        if target is not None:
            sample["target"] = self.encode_target(self.vocab.encode_output(target), row, "answers")
        return sample

    def target(self, row, answers, train):
        """The answer a row is trained on: its most confident candidate answer."""
        target = best_answer(answers, self.answer_set)
        if target is None:
            if train:
                raise row.error("answers", f"none of the answers {sorted(answers)} is a candidate answer (from "
                                           f"{self.answers_source}): add one to the list or drop the row")
            target = best_answer(answers)  # scored, but never produced under the constraint
        return target

    def decode_prediction(self, tokens, meta):
        choice = self.choice_of(tokens)
        answer = self.choices[choice] if choice is not None else self.vocab.decode_text(tokens)
        return {"question_id": meta["question_id"], "question": meta["question"], "answer": answer,
                "references": meta["answers"]}

    def score(self, predictions, full=False):
        return vqa_soft_accuracy([p["answer"] for p in predictions], [p["references"] for p in predictions],
                                 self.normalise_answers)

    def report_view(self, prediction, row):
        answers = ", ".join(f"{answer} ({confidence:g})" for answer, confidence in prediction["references"].items())
        return SampleView(prediction["answer"], answers)

    def result(self, prediction):
        return Answer(prediction["score"], prediction["answer"])
