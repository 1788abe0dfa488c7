"""Image captioning on UnIVAL/OFA caption TSVs: uniq-id, image-id, caption, objects, image."""
import functools
import json
import logging
import string
from collections import Counter
from dataclasses import dataclass

import numpy as np
from fairseq.tasks import register_task

from data.dataset import Row
from data.errors import BadInputError
from data.ofa_text import caption_without_punctuation
from evaluation.metrics import CiderD, caption_sample_cider, caption_scores, document_frequencies, ptb_words
from evaluation.report import SampleView
from tasks.base import UniGroundConfig, UniGroundTask, settings_digest
from tasks.results import Caption
from utils.progress import track

logger = logging.getLogger(__name__)
_NO_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation})
# Appended to every caption the training reward scores, as OFA's and self-critical.pytorch's CIDEr-D do:
# n-grams that end a caption count, so a caption cut short earns less. No caption holds it: the PTB tokenizer
# lower-cases every token.
REWARD_END = "<EOS>"


def reward_tokens(groups):
    """Each group of captions as token lists, tokenised as the evaluation scores them (``ptb_words``, one
    Java run for all), each followed by ``REWARD_END``."""
    words = iter(ptb_words([caption for group in groups for caption in group]))
    return [[next(words) + [REWARD_END] for _ in group] for group in groups]


def normalise_caption(text):
    return " ".join(text.lower().translate(_NO_PUNCTUATION).split())


def raw_references(row):
    """The row's captions as written (ends stripped), as the COCO caption evaluation scores outputs."""
    return [c.strip() for c in row["caption"].split("&&") if c.strip()]


@dataclass
class CaptionConfig(UniGroundConfig):
    pass


@register_task("caption", dataclass=CaptionConfig)
class CaptionTask(UniGroundTask):
    columns = ("uniq_id", "image", "caption")
    prompt = " what does the image describe?"
    primary_metric = "cider"
    default_cols = "0,4,2"

    def build_sample(self, row, train):
        references = self.references(row) if row.labelled else []
        sample = {
            "source": self.encode_source(self.prompt, row, "caption"),
            **self.media.read(row, train),
            "meta": {"uniq_id": row["uniq_id"], "references": raw_references(row) if references else []},
        }
        if references:
            sample["target"] = self.encode_target(self.vocab.encode_output(references[0]), row, "caption")
        return sample

    def row_lengths(self, row):
        return len(self.vocab.encode_text(self.prompt)), len(self.vocab.encode_output(self.references(row)[0]))

    def references(self, row):
        """The row's captions, normalised (with OFA's preprocessing, as OFA does); the first is the training
        target. Scores compare outputs with the captions as written (``raw_references``)."""
        clean = caption_without_punctuation if self.cfg.ofa_preprocessing else normalise_caption
        references = [c for c in map(clean, row["caption"].split("&&")) if c]
        if not references:
            raise row.error("caption", "empty caption")
        return references

    def decode_prediction(self, tokens, meta):
        caption = self.vocab.decode_text(tokens)
        if self.cfg.ofa_preprocessing:
            caption = caption_without_punctuation(caption)
        return {"uniq_id": meta["uniq_id"], "caption": caption,
                "references": meta["references"]}

    def score(self, predictions, full=False):
        """CIDEr while training; ``full``: BLEU-4, METEOR, ROUGE-L, CIDEr; both against the captions as
        written, tokenised by pycocoevalcap's PTB tokenizer as the COCO evaluation does."""
        hypotheses = {p["uniq_id"]: p["caption"] for p in predictions}
        references = {p["uniq_id"]: p["references"] for p in predictions}
        return caption_scores(hypotheses, references, full=full)

    def sample_scores(self, predictions, full=False):
        """Each caption's CIDEr with the whole set's document frequencies (their mean is ``score``'s)."""
        cider = caption_sample_cider({p["uniq_id"]: p["caption"] for p in predictions},
                                     {p["uniq_id"]: p["references"] for p in predictions})
        name = "CIDEr" if full else "cider"
        return [{name: cider[p["uniq_id"]]} for p in predictions]

    def sequence_rewards(self, predictions):
        """Self-critical training's reward of each prediction: CIDEr-D of its caption against its row's
        references, with the document frequencies of the training references (``reward_scorer``)."""
        tokens = reward_tokens([[p["caption"]] for p in predictions] + [p["references"] for p in predictions])
        return self.reward_scorer.scores([caption for caption, in tokens[:len(predictions)]], tokens[len(predictions):])

    @functools.cached_property
    def reward_scorer(self):
        """CIDEr-D with the document frequencies of every training file's references."""
        paths = self.data_paths()
        frequencies, documents = Counter(), 0
        for path in paths[:-1] or paths:
            file_frequencies, file_documents = self.reference_frequencies(self.tsv_file(path))
            frequencies.update(file_frequencies)
            documents += file_documents
        return CiderD(frequencies, documents)

    def reference_frequencies(self, tsv):
        """(n-gram -> rows whose references use it, rows) of a file, a row's references being one
        document; cached beside the file as ``<file>.cider-df-<digest>.index`` and counted again when the
        file (its stamp, ``TsvFile.cached_array``) or the reference columns change. Bad rows count for none."""
        def count():
            captions = []
            for i in track(range(len(tsv)), f"read the references of {tsv.path}", unit="rows", log=logger):
                row = Row(tsv, i, dict(zip(self.columns, tsv.fields(i))))
                try:
                    self.references(row)  # a row the task refuses counts for none
                except BadInputError:
                    continue
                captions.append(raw_references(row))
            references = reward_tokens(captions)
            frequencies, documents = document_frequencies(references)
            stored = {"documents": documents, "references": sum(map(len, references)),
                      "ngrams": [[" ".join(gram), n] for gram, n in frequencies.items()]}
            return np.frombuffer(json.dumps(stored).encode(), dtype=np.uint8)

        digest = settings_digest({"columns": tsv.selected_cols, "end": REWARD_END, "tokens": "ptb"})
        stored = json.loads(tsv.cached_array(f"cider-df-{digest}", count).tobytes())
        if stored["references"] == stored["documents"]:
            logger.warning("%s: every row holds one reference; the CIDEr-D reward scores each sample against its "
                           "row's references only, so rows should hold all of an image's captions joined by && "
                           "(one row per image, as validation files)", tsv.path)
        return {tuple(gram.split()): n for gram, n in stored["ngrams"]}, stored["documents"]

    def report_view(self, prediction, row):
        return SampleView(prediction["caption"], " | ".join(prediction["references"]))

    def result(self, prediction):
        return Caption(prediction["score"], prediction["caption"])
