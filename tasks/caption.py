"""Image captioning on UnIVAL/OFA caption TSVs: uniq-id, image-id, caption, objects, image."""
import string
from dataclasses import dataclass

from fairseq.tasks import register_task

from tasks.base import UniGroundConfig, UniGroundTask
from tasks.results import Caption
from utils.metrics import caption_sample_cider, caption_scores
from utils.ofa_text import caption_without_punctuation
from utils.report import SampleView

_NO_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation})


def normalise_caption(text):
    return " ".join(text.lower().translate(_NO_PUNCTUATION).split())


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
            **self.read_media(row, train),
            "meta": {"uniq_id": row["uniq_id"], "references": references},
        }
        if references:
            sample["target"] = self.encode_target(self.vocab.encode_output(references[0]), row, "caption")
        return sample

    def row_lengths(self, row):
        return len(self.vocab.encode_text(self.prompt)), len(self.vocab.encode_output(self.references(row)[0]))

    def references(self, row):
        """The row's captions, normalised (with OFA's preprocessing, as OFA does); the first is the training target."""
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
        """CIDEr on whitespace tokens while training; ``full``: BLEU-4, METEOR, ROUGE-L, CIDEr after
        pycocoevalcap's PTB tokenizer, as the COCO evaluation does."""
        hypotheses = {p["uniq_id"]: p["caption"] for p in predictions}
        references = {p["uniq_id"]: p["references"] for p in predictions}
        return caption_scores(hypotheses, references, full=full)

    def sample_scores(self, predictions, full=False):
        """Each caption's CIDEr with the whole set's document frequencies (their mean is ``score``'s)."""
        cider = caption_sample_cider({p["uniq_id"]: p["caption"] for p in predictions},
                                     {p["uniq_id"]: p["references"] for p in predictions}, full=full)
        name = "CIDEr" if full else "cider"
        return [{name: cider[p["uniq_id"]]} for p in predictions]

    def report_view(self, prediction, row):
        return SampleView(prediction["caption"], " | ".join(prediction["references"]))

    def result(self, prediction):
        return Caption(prediction["score"], prediction["caption"])
