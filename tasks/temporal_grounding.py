"""Temporal grounding on the generic layout: uniq-id, image, video, audio, text, annotation-json.

A text query and one clip (video or audio) in; the query's span out as two time
tokens relative to the part of the clip the model sees (Vid2Seq-style), decoding
forced to a start and an end no earlier than it. The annotation holds the span
in seconds: ``{"spans": [[start, end]]}``.
"""
import math
from dataclasses import dataclass

from fairseq.tasks import register_task

from decoding.constraints import FixedLengthRange
from evaluation.drawing import Mark
from evaluation.metrics import temporal_grounding_scores
from evaluation.report import SampleView
from geometry.codec import CodecError, ends_after_clip
from tasks.base import UniGroundConfig, UniGroundTask
from tasks.results import Span



@dataclass
class TemporalGroundingConfig(UniGroundConfig):
    pass


@register_task("temporal_grounding", dataclass=TemporalGroundingConfig)
class TemporalGroundingTask(UniGroundTask):
    columns = ("uniq_id", "video", "audio", "text", "annotation")
    uniground_tokens = True
    prompt = ' when does " {} " happen?'
    primary_metric = "r1@0.5"
    default_cols = "0,2,3,4,5"
    optional_media = True

    def build_constraint(self):
        return FixedLengthRange(self.vocab.first_time, self.vocab.num_time_bins, 2, self.vocab.dictionary.eos(),
                                len(self.vocab.dictionary), not_below={1: 0})

    def row_lengths(self, row):
        return len(self.vocab.encode_text(self.prompt.format(self.query(row)))), 2

    def query(self, row):
        text = " ".join(row["text"].split())
        if not text:
            raise row.error("text", "empty query")
        return text

    def build_sample(self, row, train):
        text = self.query(row)
        if bool(row["video"]) == bool(row["audio"]):
            raise row.error("video", "temporal grounding needs exactly one clip: a video or an audio cell")
        span = parse_span(row, row.json_object()) if row.labelled else None
        media = self.media.read(row, train, keep=span)
        start, length, duration = media.pop("window")
        sample = {
            "source": self.encode_source(self.prompt.format(text), row, "text"),
            **media,
            "meta": {"uniq_id": row["uniq_id"], "text": text, "span": span, "window": (start, length),
                     "duration": duration},
        }
        if span is not None:
            sample["target"] = self.encode_target(self.vocab.time_ids(self.span_bins(row, span, start, length,
                                                                                     duration)), row, "annotation")
        return sample

    def span_bins(self, row, span, start, length, duration):
        """The time bins of ``span`` (seconds of the clip) in the window of ``length`` seconds at ``start``."""
        if ends_after_clip(span[1], duration):
            raise row.error("annotation", f"span {span} ends after the {duration:.3f} s clip")
        try:
            return self.codec.encode_span(span[0] - start, span[1] - start, length)
        except CodecError as error:  # a long clip's window that misses the span (eval: centred)
            raise row.error("annotation", f"{error} (window of {length:.3f} s at {start:.3f} s)") from None

    def decode_prediction(self, tokens, meta):
        bins = [self.vocab.to_time_bin(t) for t in tokens]
        span = None
        if len(bins) == 2 and None not in bins and bins[0] <= bins[1]:
            start, length = meta["window"]
            span = [start + t for t in self.codec.decode_span(bins, length)]
        return {"uniq_id": meta["uniq_id"], "text": meta["text"], "span": span, "reference": meta["span"],
                "duration": meta["duration"]}

    def score(self, predictions, full=False):
        return temporal_grounding_scores([p["span"] for p in predictions], [p["reference"] for p in predictions])

    def report_view(self, prediction, row):
        spans = {"prediction": prediction["span"], "reference": prediction["reference"]}
        return SampleView(**{side: "no span" if span is None else f"{span[0]:.2f} s to {span[1]:.2f} s"
                             for side, span in spans.items()},
                          marks=[Mark(side, "span", span) for side, span in spans.items() if span is not None])

    def result(self, prediction):
        return Span(prediction["score"], prediction["span"])


def parse_span(row, annotation):
    """The annotation's one span [start, end] in seconds, checked."""
    spans = annotation.get("spans")
    if not isinstance(spans, list) or len(spans) != 1:
        raise row.error("annotation", f"expected \"spans\": [[start, end]] (one span), got {spans!r}")
    span = spans[0]
    if (not isinstance(span, list) or len(span) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in span)):
        raise row.error("annotation", f"a span is [start, end] in seconds, got {span!r}")
    start, end = float(span[0]), float(span[1])
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
        raise row.error("annotation", f"span {span} must be finite and start at 0 s or later")
    if start >= end:
        raise row.error("annotation", f"span {span} starts at or after its end")
    return [start, end]
