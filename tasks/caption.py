"""Image captioning on UnIVAL/OFA caption TSVs: uniq-id, image-id, caption, objects, image."""
import functools
import string
from dataclasses import dataclass

from fairseq.tasks import register_task

from criterions.cider_reward import CiderReward
from data.errors import BadInputError
from data.ofa_text import caption_without_punctuation
from evaluation.metrics import caption_sample_cider, caption_scores
from evaluation.report import SampleView
from tasks.base import UniGroundConfig, UniGroundTask
from tasks.results import Caption
from tasks.validation_metrics import ROWS

_NO_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation})


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

    def validation_counts(self, predictions):
        """The sum of the captions' CIDEr with the document frequencies of the whole validation file, as
        pycocoevalcap takes them from the scored references: its mean over the file is then the CIDEr
        evaluate.py reports, where a batch's own frequencies would weigh n-grams by the batch."""
        scores = self.validation_cider.scores([p["caption"] for p in predictions],
                                              [p["references"] for p in predictions])
        return {"cider": float(scores.sum()), ROWS: len(predictions)}

    @functools.cached_property
    def validation_cider(self):
        return CiderReward([self.tsv_file(self.data_paths()[-1])], self.columns, self.usable_row, end=None)

    def sample_scores(self, predictions, full=False):
        """Each caption's CIDEr with the whole set's document frequencies (their mean is ``score``'s)."""
        cider = caption_sample_cider({p["uniq_id"]: p["caption"] for p in predictions},
                                     {p["uniq_id"]: p["references"] for p in predictions})
        name = "CIDEr" if full else "cider"
        return [{name: cider[p["uniq_id"]]} for p in predictions]

    def sequence_rewards(self, predictions):
        """Self-critical training's reward of each prediction: CIDEr-D of its caption against its row's
        references, with the document frequencies of the training references."""
        return self.cider_reward.scores([p["caption"] for p in predictions], [p["references"] for p in predictions])

    @functools.cached_property
    def cider_reward(self):
        paths = self.data_paths()
        return CiderReward([self.tsv_file(path) for path in paths[:-1] or paths], self.columns, self.usable_row)

    def usable_row(self, row):
        """The row's captions as written, or None for a row the task refuses (it counts for no document)."""
        try:
            self.references(row)
        except BadInputError:
            return None
        return raw_references(row)

    def report_view(self, prediction, row):
        return SampleView(prediction["caption"], " | ".join(prediction["references"]))

    def result(self, prediction):
        return Caption(prediction["score"], prediction["caption"])
