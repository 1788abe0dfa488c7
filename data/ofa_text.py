"""Text cleaning as OFA's datasets do it (``pre_caption``, ``pre_question``, the caption's punctuation)."""
import re
import string

_DELETE_PUNCTUATION = str.maketrans({c: None for c in string.punctuation})


def _clean(text):
    """Lower case, no leading punctuation, '-' and '/' as spaces, runs of whitespace as one space, no
    spaces at the ends; exactly as OFA (a space before leading punctuation keeps it)."""
    text = text.lower().lstrip(",.!?*#:;~").replace("-", " ").replace("/", " ")
    return re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")


def clean_text(text):
    """OFA's ``pre_caption`` (hypotheses, premises, referring expressions): ``<person>`` becomes "person" too."""
    return _clean(text).replace("<person>", "person")


def clean_question(text):
    """OFA's ``pre_question``, ending in '?'."""
    question = _clean(text)
    return question if not question or question.endswith("?") else question + "?"


def caption_without_punctuation(text):
    """OFA's caption targets, references and outputs: punctuation deleted (not made a space), case kept."""
    return " ".join(text.translate(_DELETE_PUNCTUATION).split())
