"""Visual grounding on UnIVAL/OFA refcoco TSVs: uniq-id, image-id, text, x0,y0,x1,y1, image.

The target is four bin tokens; generation is constrained to exactly that.
"""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from fairseq.tasks import register_task

from data.ofa_text import clean_text
from data.row_media import stacked_pixels
from decoding.constraints import FixedLengthRange
from evaluation.drawing import Mark
from evaluation.metrics import box_ious, grounding_scores
from evaluation.report import SampleView
from geometry.codec import CodecError, outside_image
from tasks.base import UniGroundConfig, UniGroundTask
from tasks.results import Box



def parse_box(row, width, height):
    try:
        box = [float(v) for v in row["region"].split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or not np.isfinite(box).all():
        raise row.error("region", f"expected x0,y0,x1,y1 in pixels, got {row['region']!r}")
    x0, y0, x1, y1 = box
    if not (x0 < x1 and y0 < y1):
        raise row.error("region", f"empty box {row['region']!r}: need x0 < x1 and y0 < y1")
    if outside_image((x0, x1), (y0, y1), width, height):
        raise row.error("region", f"box {row['region']!r} lies outside the {width}x{height} image")
    return box


@dataclass
class RefcocoConfig(UniGroundConfig):
    bin_span: Optional[int] = field(default=None, metadata={
        "help": "side in model-input pixels of the square that the box bins span (OFA's max_image_size); "
                "default: --patch-image-size, the whole input"})


@register_task("refcoco", dataclass=RefcocoConfig)
class RefcocoTask(UniGroundTask):
    columns = ("uniq_id", "image", "text", "region")
    prompt = ' which region does the text " {} " describe?'
    primary_metric = "acc@0.5"
    default_cols = "0,4,2,3"

    def build_constraint(self):
        return FixedLengthRange(self.vocab.first_bin, self.vocab.num_bins, 4, self.vocab.dictionary.eos(),
                                len(self.vocab.dictionary), not_below={2: 0, 3: 1})

    def build_sample(self, row, train):
        text = self.expression(row)
        originals = self.media.images(row)
        chosen = self.chosen_image(row, len(originals))
        width, height = originals[chosen].size
        box = parse_box(row, width, height) if row.labelled else None
        images = [self.media.transform(original, train, boxes=np.array([box]) if box and k == chosen else None)
                  for k, original in enumerate(originals)]
        sample = {
            "source": self.encode_source(self.prompt.format(text), row, "text"),
            "image": stacked_pixels(row, [image.pixels for image in images]),
            "meta": {"uniq_id": row["uniq_id"], "text": text, "box": box, "size": (width, height),
                     **self.images_meta(originals, chosen if row.labelled else None)},
        }
        if box is not None:
            try:
                bins = self.codec.encode_box(images[chosen].boxes[0], *self.bin_frame(images[chosen].size))
            except CodecError as error:
                raise row.error("region", str(error)) from None
            sample["target"] = self.encode_target(self.image_prefix(chosen) + self.vocab.bin_ids(bins), row, "region")
            if len(images) == 1:
                sample["region"] = images[0].region()
        return sample

    def chosen_image(self, row, count):
        """The 0-based image of the row's region (a one-image task: its image)."""
        return 0

    def images_meta(self, originals, chosen):
        """Meta entries a task of several images keeps of them."""
        return {}

    def image_prefix(self, chosen):
        """The target's tokens before the box (a one-image task: none)."""
        return []

    def row_lengths(self, row):
        return len(self.source_ids(self.prompt.format(self.expression(row)))), 4

    def bin_frame(self, size):
        """(width, height) in which bins 0 and num_bins - 1 are the edges, for an image of ``size`` in the
        model's input: the input itself, or ``--bin-span`` pixels of it."""
        span = self.cfg.bin_span
        return size if span is None else tuple(side * span / self.cfg.patch_image_size for side in size)

    def expression(self, row):
        text = clean_text(row["text"]) if self.cfg.ofa_preprocessing else " ".join(row["text"].split())
        if not text:
            raise row.error("text", "empty referring expression")
        return text

    def decode_prediction(self, tokens, meta):
        bins = [self.vocab.to_bin(t) for t in tokens]
        box = None
        if len(bins) == 4 and None not in bins and bins[0] <= bins[2] and bins[1] <= bins[3]:
            box = list(self.codec.decode_box(bins, *self.bin_frame(meta["size"])))
        return {"uniq_id": meta["uniq_id"], "text": meta["text"], "box": box, "reference": meta["box"]}

    def score(self, predictions, full=False):
        return grounding_scores(self.scored_boxes(predictions), [p["reference"] for p in predictions])

    def sequence_rewards(self, predictions):
        """Self-critical training's reward of each prediction: the IoU of its box with the reference (0 for none)."""
        return np.array(box_ious(self.scored_boxes(predictions), [p["reference"] for p in predictions]))

    def scored_boxes(self, predictions):
        """The predicted boxes scored against the references (None: no box)."""
        return [p["box"] for p in predictions]

    def report_view(self, prediction, row):
        boxes = {"prediction": prediction["box"], "reference": prediction["reference"]}
        return SampleView(**{side: box_text(box) for side, box in boxes.items()},
                          marks=[Mark(side, "box", box) for side, box in boxes.items() if box is not None])

    def result(self, prediction):
        return Box(prediction["score"], prediction["box"])


def box_text(box):
    return "no box" if box is None else "box " + ", ".join(f"{v:.1f}" for v in box)
