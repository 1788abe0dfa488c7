"""What a prediction is, typed, as the predictor (predict.py) returns it: each task's ``result`` turns its
prediction record (``decode_prediction``) into one of these. Positions are in the input's own units:
pixels of the original image, seconds of the whole clip. ``score`` is the mean log-probability per
token the model gave the output (``UniGroundTask.predict``)."""
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np

from geometry.masks import encode_rle


@dataclass
class Result:
    score: float
    # [(kind, PNG bytes, description)]: the input drawn with the prediction, when asked for (predict.py)
    pictures: list = field(default_factory=list, repr=False, compare=False, kw_only=True)

    def json(self):
        """A JSON-ready dict of the result, with its ``kind`` and without its pictures."""
        return {"kind": type(self).__name__.lower(),
                **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "pictures"}}


@dataclass
class Caption(Result):
    text: str


@dataclass
class Box(Result):
    box: Optional[list]  # x0, y0, x1, y1; None when the output is not a box (only with --unconstrained)


@dataclass
class ImageBox(Box):
    image: Optional[int]  # of a row of several images, the 1-based one the box is in (None with --unconstrained)


@dataclass
class Mask(Result):
    polygons: list  # flat [x0, y0, x1, y1, ...] polygons whose union is the mask
    mask: np.ndarray  # H x W bool, the polygons rasterised
    malformed: bool = False

    def json(self):
        """The mask as a COCO RLE ({"size": [h, w], "counts": ...})."""
        return {**super().json(), "mask": encode_rle(self.mask)}


@dataclass
class Span(Result):
    span: Optional[list]  # start, end


@dataclass
class Answer(Result):
    answer: Optional[str]  # None when the output is none of the candidates (only with --unconstrained)


@dataclass
class EntityAnswer(Answer):
    entity_id: Optional[str]  # entity recognition: the catalogue entity the answer names


@dataclass
class Records(Result):
    records: dict  # the generic layout's annotation form: {"entities" | "relations" | "events": [...]}
    malformed: int = 0  # outputs that did not parse
