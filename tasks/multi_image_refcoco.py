"""Grounding on a chosen image: uniq-id, image-id, text, x0,y0,x1,y1, images (a JSON list), image (1-based).

The target is the image-index token of the image the box is in (``<image_k>``) and four bin tokens;
generation allows only the tokens of images the row holds, then a box. A prediction counts only on
the right image.
"""
from fairseq.tasks import register_task

from decoding.constraints import ImageIndexed
from evaluation.drawing import Mark
from evaluation.report import SampleView
from geometry.codec import MAX_IMAGES
from tasks.refcoco import RefcocoConfig, RefcocoTask, box_text
from tasks.results import ImageBox


@register_task("multi_image_refcoco", dataclass=RefcocoConfig)
class MultiImageRefcocoTask(RefcocoTask):
    columns = ("uniq_id", "image", "text", "region", "image_index")
    default_cols = "0,4,2,3,5"
    uniground_tokens = True  # <image_k> tokens, which OFA's vocabulary gets appended

    def build_constraint(self):
        return ImageIndexed(super().build_constraint(), [self.vocab.image_id(k) for k in range(MAX_IMAGES)])

    def chosen_image(self, row, count):
        if not row.labelled:
            return 0
        cell = row["image_index"].strip()
        if not cell.isdigit() or not 1 <= int(cell) <= count:
            raise row.error("image_index", f"expected the 1-based image the box is in, 1 to {count}, got {cell!r}")
        return int(cell) - 1

    def images_meta(self, originals, chosen):
        return {"sizes": [image.size for image in originals], "image_count": len(originals),
                "image": None if chosen is None else chosen + 1}

    def image_prefix(self, chosen):
        return [self.vocab.image_id(chosen)]

    def row_lengths(self, row):
        source, box = super().row_lengths(row)
        return source, box + 1

    def decode_prediction(self, tokens, meta):
        k = self.vocab.to_image_index(tokens[0]) if tokens else None
        found = k is not None and k < len(meta["sizes"])
        prediction = super().decode_prediction(tokens[1:], dict(meta, size=meta["sizes"][k] if found else meta["size"]))
        return {**prediction, "image": k + 1 if found else None, "reference_image": meta["image"]}

    def scored_boxes(self, predictions):
        return [p["box"] if p["image"] == p["reference_image"] else None for p in predictions]

    def report_media(self, row, frame_size):
        """The image of the reference box (of a row without one, the first)."""
        images = self.media.images(row, draft=False)
        return {"image": images[self.chosen_image(row, len(images))].pil()}

    def report_view(self, prediction, row):
        """Both boxes as text with their images; drawn, the reference and a prediction on the same image."""
        shown = prediction["reference_image"] or 1
        boxes = {"prediction": (prediction["image"], prediction["box"]),
                 "reference": (prediction["reference_image"], prediction["reference"])}
        return SampleView(**{side: f"image {image}: {box_text(box)}" for side, (image, box) in boxes.items()},
                          marks=[Mark(side, "box", box) for side, (image, box) in boxes.items()
                                 if box is not None and image == shown])

    def result(self, prediction):
        return ImageBox(prediction["score"], prediction["box"], prediction["image"])
