"""The official VQA accuracy (vqaEval.py's normalisation and leave-one-out average), on hand-computed cases."""
import pytest

from evaluation.metrics import vqa_soft_accuracy
from evaluation.vqa_accuracy import answer_confidences, normalise_answer, official_accuracy, strip_punctuation


@pytest.mark.parametrize("text, expected", [
    ("yes!", "yes"),              # a mark touching no space becomes a space
    ("hello, world", "hello world"),  # one touching a space is deleted
    ("1,000", "1000"),            # a comma between digits: every mark is deleted
    ("t-shirt", "t shirt"),
    ("2.5", "2.5"),               # a period before a digit stays
    ("yes.", "yes"),
    ("Two Dogs", "2 dogs"),       # number words as digits, lower case
    ("the red one", "red 1"),     # articles dropped
    ("None", "0"),
    ("dont", "don't"),            # contractions get their apostrophe
    ("it's", "it's"),             # apostrophes are not punctuation
    ("  an\tapple\n", "apple"),
    ("somebody'd", "somebodyd"),  # as in vqaEval.py's table
])
def test_answers_are_normalised_as_the_official_evaluation_does(text, expected):
    assert normalise_answer(text) == expected


def test_a_mark_is_deleted_everywhere_once_it_touches_a_space_anywhere():
    assert strip_punctuation("a-b - c") == "ab  c"


@pytest.mark.parametrize("matches, accuracy", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_accuracy_is_the_leave_one_out_average(matches, accuracy):
    # c of 10 humans: c subsets keep c - 1 matches, 10 - c keep c; e.g. c = 3: (3 * 2/3 + 7 * 1) / 10
    humans = ["red"] * matches + ["blue", "green"] * 5
    assert official_accuracy("red", humans[:10]) == pytest.approx(accuracy)


def test_answers_are_compared_normalised_when_humans_disagree():
    assert official_accuracy("2", ["two", "Two.", "2"] + ["3"] * 7) == pytest.approx(0.9)
    assert official_accuracy("the Red!", ["red"] * 4 + ["blue"] * 6) == pytest.approx(1.0)


def test_unanimous_answers_are_compared_as_given():
    # vqaEval.py normalises only when the human answers differ
    assert official_accuracy("yes", ["yes"] * 10) == 1.0
    assert official_accuracy("yes.", ["yes"] * 10) == 0.0
    assert official_accuracy(" yes\n", ["yes"] * 10) == 1.0  # cleaning always happens


def test_candidate_confidences_of_a_question():
    humans = ["red"] * 4 + ["Red."] * 2 + ["dark red"] + ["maroon"] * 3
    assert answer_confidences(humans) == {"red": 1.0, "maroon": pytest.approx(0.9), "dark red": pytest.approx(0.3)}
    assert answer_confidences(["Yes"] * 10) == {"Yes": 1.0}


def test_soft_accuracy_compares_normalised_answers():
    references = [{"2": 0.6, "3": 0.3}, {"red": 1.0}, {"red": 1.0}, {"Two": 0.3, "2": 0.9}, {"no": 0.6}]
    predictions = ["Two.", "the red", "blue", "2", None]
    # 0.6, 1.0, 0 (not listed), 0.9 (the better of the equal candidates), 0 (no answer)
    assert vqa_soft_accuracy(predictions, references)["vqa_score"] == pytest.approx(2.5 / 5)
