"""Referring segmentation on the generic layout: uniq-id, image, video, audio, text, annotation-json.

The text cell holds the referring expression, the annotation its mask in original-image pixels as
one or more regions whose union is the mask, each COCO polygons or a COCO RLE (crowds):
``{"regions": [{"polygons": [[x0, y0, x1, y1, ...], ...]}, {"rle": {"size": [h, w], "counts": ...}}]}``.
The image is required; the video and audio cells are not read.

The target is the mask as polygon tokens (DESIGN.md section 3): an RLE is first traced into
polygons, the polygons move with the image transform and are simplified to the vertex budget by
the codec, then written largest first, each ``<poly>`` and its vertices clockwise from the top-most
(then left-most) one, so one mask has one target. Every part is written: rows are measured at
load (``row_lengths``, each polygon at its vertex budget) and --max-tgt-length, unless set, is sized
to the longest; the vertex budget shrinks if a set limit could not hold a single polygon. Generation
is constrained to that syntax; the predicted polygons are rasterised at the original resolution
and scored against the reference mask by cIoU, mIoU and acc@0.5.
"""
from dataclasses import dataclass

from fairseq.tasks import register_task

from data.media import image_size
from data.regions import parse_regions, reference_mask, region_parts
from decoding.polygon import MalformedPolygons, PolygonSyntax, polygon_tokens, read_polygons
from evaluation.drawing import Mark
from evaluation.metrics import mask_overlap, overlap_scores
from evaluation.report import SampleView
from geometry.codec import MIN_VERTICES, CodecError, LocationCodec
from geometry.masks import decode_rle, encode_rle
from tasks.base import UniGroundConfig, UniGroundTask
from tasks.results import Mask



@dataclass
class RefsegConfig(UniGroundConfig):
    pass


def polygon_budget(cfg):
    """(most tokens before EOS, most vertices per polygon) that a target and generation may use."""
    length = cfg.max_tgt_length - 1
    vertices = min(cfg.max_poly_vertices, (length - 1) // 2)
    if vertices < MIN_VERTICES:
        raise ValueError(f"--max-tgt-length {cfg.max_tgt_length} cannot hold one polygon: refseg needs at least "
                         f"{2 * MIN_VERTICES + 2} (<poly>, {MIN_VERTICES} vertices, EOS)")
    return length, vertices


@register_task("refseg", dataclass=RefsegConfig)
class RefsegTask(UniGroundTask):
    columns = ("uniq_id", "image", "text", "annotation")
    uniground_tokens = True
    prompt = ' which region does the text " {} " describe? give its mask'
    primary_metric = "mIoU"
    default_cols = "0,1,4,5"

    def __init__(self, cfg, vocab):
        super().__init__(cfg, vocab)
        self.max_length, self.max_vertices = polygon_budget(cfg)  # the lengths are fitted now
        self.codec = LocationCodec(cfg.num_bins, cfg.num_time_bins, self.max_vertices)

    def build_constraint(self):
        return PolygonSyntax(self.vocab.first_bin, self.vocab.num_bins, self.vocab.poly, self.vocab.dictionary.eos(),
                             len(self.vocab.dictionary), self.max_vertices, max_length=self.max_length)

    def build_sample(self, row, train):
        text = " ".join(row["text"].split())
        if not text:
            raise row.error("text", "empty referring expression")
        original = self.media.image(row, "image")
        width, height = original.size
        meta = {"uniq_id": row["uniq_id"], "text": text, "size": (width, height), "reference": None}
        if not row.labelled:
            return {"source": self.encode_source(self.prompt.format(text), row, "text"),
                    "image": self.media.transform(original, train).pixels, "meta": meta}
        regions = parse_regions(row, row.json_object(), width, height)
        image = self.media.transform(original, train, polygons=[region_parts(regions)])
        try:
            bins = self.codec.encode_polygons([part.ravel().tolist() for part in image.polygons[0]], *image.size)
        except CodecError as error:
            raise row.error("annotation", f"the mask does not survive encoding: {error}") from None
        if not train:
            meta["reference"] = encode_rle(reference_mask(regions, width, height, self.codec))
        return {
            "source": self.encode_source(self.prompt.format(text), row, "text"),
            "target": self.encode_target(polygon_tokens(bins, self.vocab), row, "annotation"),
            "image": image.pixels,
            "region": image.region(),
            "meta": meta,
        }

    def row_lengths(self, row):
        """The prompt, and every part of the mask at the vertex budget: at least what the target holds."""
        text = " ".join(row["text"].split())
        width, height = image_size(self.media.file_bytes(row, "image"), row.where("image"))
        parts = region_parts(parse_regions(row, row.json_object(), width, height))
        vertices = self.cfg.max_poly_vertices
        return (len(self.vocab.encode_text(self.prompt.format(text))),
                sum(1 + 2 * min(len(part) // 2, vertices) for part in parts))

    def split_polygons(self, tokens):
        """Generated ids -> bin polygons, or None when they break the polygon syntax."""
        try:
            polygons, end = read_polygons(tokens, 0, self.vocab, self.max_vertices)
        except MalformedPolygons:
            return None
        return polygons if end == len(tokens) else None

    def decode_prediction(self, tokens, meta):
        """Polygons in original pixels, and their overlap with the reference mask (when the row has one);
        a malformed output (possible with --unconstrained) is an empty mask, flagged ``malformed``."""
        width, height = meta["size"]
        bins = self.split_polygons(tokens)
        polygons = [] if bins is None else [
            [round(c, 2) for c in p] for p in self.codec.decode_polygons(bins, width, height)]
        prediction = {"uniq_id": meta["uniq_id"], "text": meta["text"], "polygons": polygons,
                      "malformed": bins is None, "size": list(meta["size"])}
        if meta["reference"] is not None:
            predicted = self.codec.rasterize(polygons, width, height)
            intersection, union = mask_overlap(predicted, decode_rle(meta["reference"]))
            prediction.update(iou=intersection / union if union else 0.0, intersection=intersection, union=union)
        return prediction

    def score(self, predictions, full=False):
        """cIoU, mIoU, acc@0.5 and the share of malformed outputs; ``full`` adds their count."""
        scores = overlap_scores([p["intersection"] for p in predictions], [p["union"] for p in predictions])
        malformed = sum(p["malformed"] for p in predictions)
        scores["malformed_rate"] = malformed / len(predictions)
        if full:
            scores["malformed"] = malformed
        return scores

    def validation_counts(self, predictions):
        """Means over rows as by default, and for cIoU the pixels of the intersections and unions."""
        counts = super().validation_counts(predictions)
        del counts["cIoU"]
        counts["intersection"] = sum(p["intersection"] for p in predictions)
        counts["union"] = sum(p["union"] for p in predictions)
        return counts

    def validation_metrics(self, counts):
        pixels = ("intersection", "union")
        scores = super().validation_metrics({name: value for name, value in counts.items() if name not in pixels})
        return {"cIoU": counts["intersection"] / counts["union"] if counts["union"] else 0.0, **scores}

    def sample_scores(self, predictions, full=False):
        """Each sample's IoU (under mIoU, the mean of them) and acc@0.5; cIoU exists only over a set."""
        return [{"mIoU": p["iou"], "acc@0.5": float(p["iou"] >= 0.5), "malformed": int(p["malformed"])}
                for p in predictions]

    def report_view(self, prediction, row):
        """The predicted polygons against the row's regions (polygons, or an RLE's mask), if it has them."""
        width, height = prediction["size"]
        regions = parse_regions(row, row.json_object(), width, height) if row.labelled else []
        marks = [Mark("reference", "polygons" if kind == "polygons" else "mask", value) for kind, value in regions]
        if prediction["polygons"]:
            marks.append(Mark("prediction", "polygons", prediction["polygons"]))
        parts = len(prediction["polygons"])
        predicted = "malformed output" if prediction["malformed"] else f"{parts} polygon{'s' * (parts != 1)}"
        if "iou" in prediction:
            predicted += f", IoU {prediction['iou']:.3f}"
        return SampleView(predicted, f"{len(regions)} region(s)", marks=marks)

    def result(self, prediction):
        width, height = prediction["size"]
        return Mask(prediction["score"], prediction["polygons"],
                    self.codec.rasterize(prediction["polygons"], width, height), prediction["malformed"])
