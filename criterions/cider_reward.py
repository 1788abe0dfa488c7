"""CIDEr-D as self-critical training's reward for captions (criterions/self_critical.py), as OFA and
self-critical.pytorch compute it: captions tokenised as the evaluation scores them, an end token
appended, and the document frequencies of the training files' references, a row being one document,
counted once per file and cached beside it."""
import json
import logging
from collections import Counter

import numpy as np

from data.dataset import Row
from data.tsv import settings_digest
from evaluation.metrics import CiderD, document_frequencies, ptb_words
from utils.progress import track

logger = logging.getLogger(__name__)
# Appended to every caption the training reward scores, as OFA's and self-critical.pytorch's CIDEr-D do:
# n-grams that end a caption count, so a caption cut short earns less. No caption holds it: the PTB tokenizer
# lower-cases every token.
REWARD_END = "<EOS>"


def reward_tokens(groups, end=REWARD_END):
    """Each group of captions as token lists, tokenised as the evaluation scores them (``ptb_words``, one
    Java run for all), each followed by ``end`` (None: nothing)."""
    words = iter(ptb_words([caption for group in groups for caption in group]))
    tail = [end] if end is not None else []
    return [[next(words) + tail for _ in group] for group in groups]


class CiderReward:
    """CIDEr-D against each sample's references with the document frequencies of ``tsvs`` (rows read by
    ``columns``; ``references_of(row)``: its captions, or None for a row that counts for none). With
    ``end=None`` and the file being scored, it is the evaluation's CIDEr, one sample at a time."""

    def __init__(self, tsvs, columns, references_of, end=REWARD_END):
        self.columns, self.references_of, self.end = columns, references_of, end
        frequencies, documents = Counter(), 0
        for tsv in tsvs:
            file_frequencies, file_documents = self.reference_frequencies(tsv)
            frequencies.update(file_frequencies)
            documents += file_documents
        self.scorer = CiderD(frequencies, documents)

    def scores(self, captions, references):
        """The reward of each caption against its sample's references."""
        tokens = reward_tokens([[caption] for caption in captions] + references, self.end)
        return self.scorer.scores([caption for caption, in tokens[:len(captions)]], tokens[len(captions):])

    def reference_frequencies(self, tsv):
        """(n-gram -> rows whose references use it, rows) of a file; cached beside the file as
        ``<file>.cider-df-<digest>.index`` and counted again when the file (its stamp,
        ``TsvFile.cached_array``) or the reference columns change."""
        def count():
            captions = []
            for i in track(range(len(tsv)), f"read the references of {tsv.path}", unit="rows", log=logger):
                references = self.references_of(Row(tsv, i, dict(zip(self.columns, tsv.fields(i)))))
                if references is not None:
                    captions.append(references)
            references = reward_tokens(captions, self.end)
            frequencies, documents = document_frequencies(references)
            stored = {"documents": documents, "references": sum(map(len, references)),
                      "ngrams": [[" ".join(gram), n] for gram, n in frequencies.items()]}
            return np.frombuffer(json.dumps(stored).encode(), dtype=np.uint8)

        digest = settings_digest({"columns": tsv.selected_cols, "end": self.end, "tokens": "ptb"})
        stored = json.loads(tsv.cached_array(f"cider-df-{digest}", count).tobytes())
        if self.end is not None and stored["references"] == stored["documents"]:
            logger.warning("%s: every row holds one reference; the CIDEr-D reward scores each sample against its "
                           "row's references only, so rows should hold all of an image's captions joined by && "
                           "(one row per image, as validation files)", tsv.path)
        return {tuple(gram.split()): n for gram, n in stored["ngrams"]}, stored["documents"]
