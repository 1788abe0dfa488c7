"""VQA answers: the ``conf|!+answer&&...`` cells of UnIVAL/OFA VQA TSVs, candidate answer files
(one answer a line, a JSON list, or OFA's ans2label as JSON or as its ``.pkl``, read as plain data with
no code run), and the candidate list read from training rows."""
import json
import logging
import math

from data.dataset import Row
from data.errors import BadInputError
from data.plain_pickle import load_plain_pickle
from data.tsv import TsvFile

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


def training_answers(paths, columns, cols, skip_bad_rows):
    """Every row's best answer in the TSVs ``paths`` (``cols`` selected, named ``columns``), in order of
    first appearance. A bad row raises, or with ``skip_bad_rows`` is passed over here (the dataset
    meets it again, and logs and counts it)."""
    answers = {}
    for path in paths:
        tsv = TsvFile(path, selected_cols=cols)
        logger.info("reading candidate answers from the %d rows of %s (--answers-file skips this)", len(tsv), path)
        for i in range(len(tsv)):
            try:
                row = Row(tsv, i, dict(zip(columns, tsv.fields(i))))
                answers.setdefault(best_answer(parse_answers(row)), None)
            except BadInputError:
                if not skip_bad_rows:
                    raise
    logger.info("%d candidate answers", len(answers))
    return list(answers)
