"""Visual question answering on UnIVAL/OFA VQA TSVs:
question-id, image-id, question, ``conf|!+answer&&conf|!+answer...``, objects, image.

Answers come from a fixed candidate list (a text file with one answer per line, a JSON
list, or OFA's ans2label as JSON or as its ``.pkl``, read as plain data with no code run)
or, without one, from the training rows: each training row's best answer, read once and
kept in the task state, which fairseq saves in checkpoints (``task_state``), so evaluation
uses the list the model was trained on. The target is the row's most confident candidate
answer; generation and the training softmax are confined to the candidates
(tasks/closed_set.py); the metric is the official VQA accuracy (evaluation/vqa_accuracy.py: answers
compared after the official normalisation).
"""
from dataclasses import dataclass, field
from typing import Optional

from fairseq.tasks import register_task

from data.answers import best_answer, parse_answers, read_answer_file, training_answers
from data.ofa_text import clean_question
from evaluation.metrics import vqa_soft_accuracy
from evaluation.report import SampleView
from tasks.closed_set import ClosedSetConfig, ClosedSetTask
from tasks.results import Answer


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
        return bool(self.cfg.answers_file) or "answers" in self.state.state_dict or len(self.data_paths()) > 1

    def choice_texts(self):
        if self.cfg.answers_file:
            answers, self.answers_source = read_answer_file(self.cfg.answers_file), self.cfg.answers_file
        else:
            self.answers_source = "the checkpoint's answer list"
            self.state.add_factory("answers", self.training_answers)  # unless a checkpoint's state brought them
            answers = self.state.answers
        self.answer_set = set(answers)
        return answers

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        answers = state_dict.get("answers")
        if not self.cfg.answers_file and answers is not None:
            self.forget_constraint()  # it may have been built on this data's answers, not the checkpoint's

    def training_answers(self):
        """Every training row's best answer, in order of first appearance (read once)."""
        paths = self.data_paths()
        if len(paths) < 2:
            raise ValueError(f"{self.__class__.__name__}: no candidate answers. Give --answers-file (one answer "
                             "a line), DATA as train.tsv[,more.tsv],valid.tsv to read them from the training rows "
                             "(a single TSV would be the evaluated one), or a checkpoint that keeps them.")
        cols = [int(c) for c in (self.cfg.selected_cols or self.default_cols).split(",")]
        self.answers_source = "the training rows"
        return training_answers(paths[:-1], self.columns, cols, self.cfg.skip_bad_rows)

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
            **self.media.read(row, train),
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
