"""MUIE scoring of grounded IE records (DESIGN.md section 5).

A sample is its predicted and gold records (``ie.records`` dataclasses, grounds in original pixels and
seconds), its modality mix and, for mask IoU, the original image size. The scored units are

    entity    (type, mention text)
    relation  (label, head text, tail text)
    trigger   (event type, trigger text)
    argument  (event type, role, argument text)

with labels and texts compared after ``normalize`` (case-folded, whitespace runs collapsed to one
space). Matching is one-to-one within a sample: a unit predicted twice where the gold has it once is
one true positive and one false positive; a unit the gold holds twice (the same name twice in a
tweet) needs two predictions.

Grounded matching also needs every mention of a matched pair to agree on its grounding: both without
a ground, or both grounded with IoU >= 0.5 (box IoU for two boxes, temporal IoU for two spans, mask
IoU at the sample's image size when a polygon mask is involved, 0 across media). A gold mention
without a ground needs a prediction without one: that is how Twitter-GMNER scores ungroundable
entities (the prediction has to say "no region"), and it keeps a model from gaining anything by
inventing boxes. Pairs are matched by a maximum bipartite matching (scipy's linear_sum_assignment),
so duplicates and near-duplicates are never counted twice.

``mean_iou`` is the mean IoU over the grounded gold mentions of the pairs matched on text (0 for a
prediction that gives no ground or one in another medium; among duplicates the pairing with the
largest IoU is taken): how well correctly extracted records are localised, independent of the 0.5
threshold.

Precision, recall and F1 define 0/0 as 0 (conlleval's and scikit-learn's convention); a kind with
neither gold nor predicted units in a group has no rates at all, only its counts.
"""
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from geometry.codec import LocationCodec, box_iou, span_iou
from ie.records import SUBTASK_KEYS, Entity, Event, Relation, parse_records

KINDS = ("entity", "relation", "trigger", "argument")
COUNTED = ("pred", "gold", "tp", "grounded_tp")  # the unit counts of each kind that add up over samples
MODALITIES = ("T", "I", "V", "A")  # the order mixes are written in
MUIE_MIXES = ("I", "V", "A", "T", "T+I", "T+V", "T+A", "I+A", "T+I+A", "V+A")
IOU_THRESHOLD = 0.5

_codec = LocationCodec()


def normalize(text):
    """Case-folded, single-spaced text: the form labels and mentions are compared in."""
    return " ".join(text.split()).casefold()


def canonical_mix(mix):
    """A modality mix ("I+T", "t + i") written as the breakdown keys write it ("T+I")."""
    parts = [p.strip().upper() for p in str(mix).split("+")]
    if not parts or any(p not in MODALITIES for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"modality mix {mix!r}: expected modalities among T, I, V, A joined by '+', e.g. 'T+I'")
    return "+".join(m for m in MODALITIES if m in parts)


def modality_mix(text=False, image=False, video=False, audio=False):
    """The mix of a generic-layout row from which of its cells are non-empty."""
    present = [m for m, on in zip(MODALITIES, (text, image, video, audio)) if on]
    if not present:
        raise ValueError("a sample needs at least one of text, image, video, audio")
    return "+".join(present)


@dataclass
class IESample:
    """One scored sample. ``image_size`` is (width, height) of the original image, needed only when a
    polygon mask is compared; ``malformed`` counts the predicted records the decoder had to drop;
    ``dataset`` names its source dataset for the per-dataset breakdown."""

    predicted: list
    gold: list
    mix: str = "T"
    image_size: Optional[tuple] = None
    malformed: int = 0
    dataset: Optional[str] = None


def scored_units(records):
    """(kind, key, grounds) for every unit of a list of records, keys normalized."""
    for record in records:
        if isinstance(record, Entity):
            yield "entity", (normalize(record.type), normalize(record.mention.text)), (record.mention.ground,)
        elif isinstance(record, Relation):
            key = (normalize(record.label), normalize(record.head.text), normalize(record.tail.text))
            yield "relation", key, (record.head.ground, record.tail.ground)
        elif isinstance(record, Event):
            event_type = normalize(record.type)
            yield "trigger", (event_type, normalize(record.trigger.text)), (record.trigger.ground,)
            for argument in record.arguments:
                key = (event_type, normalize(argument.role), normalize(argument.mention.text))
                yield "argument", key, (argument.mention.ground,)
        else:
            raise TypeError(f"not an IE record (Entity, Relation or Event): {record!r:.80}")


class GroundOverlap:
    """IoU between two grounds of one sample; masks are rasterised once per ground."""

    def __init__(self, image_size=None):
        self.image_size = image_size
        self._masks = {}

    def iou(self, a, b):
        if a.medium != b.medium:
            return 0.0
        if a.kind == b.kind == "box":
            return box_iou(a.value, b.value)
        if a.kind == b.kind == "span":
            return span_iou(a.value, b.value)
        first, second = self._mask(a), self._mask(b)
        union = np.count_nonzero(first | second)
        return float(np.count_nonzero(first & second) / union) if union else 0.0

    def _mask(self, ground):
        if ground not in self._masks:
            if self.image_size is None:
                raise ValueError("mask IoU needs the sample's image_size (original width, height)")
            width, height = self.image_size
            if ground.kind == "box":
                x0, y0, x1, y1 = ground.value
                polygons = [[x0, y0, x1, y0, x1, y1, x0, y1]]
            else:
                polygons = [list(p) for p in ground.value]
            self._masks[ground] = _codec.rasterize(polygons, width, height)
        return self._masks[ground]


def _pair(predicted_grounds, gold_grounds, overlap):
    """(grounded match?, IoUs of the gold-grounded mentions) for one predicted and one gold unit."""
    agree, ious = True, []
    for p, g in zip(predicted_grounds, gold_grounds):
        if g is None:
            agree = agree and p is None
            continue
        iou = overlap.iou(p, g) if p is not None else 0.0
        ious.append(iou)
        agree = agree and p is not None and iou >= IOU_THRESHOLD
    return agree, ious


@dataclass
class Counts:
    pred: int = 0
    gold: int = 0
    tp: int = 0
    grounded_tp: int = 0
    iou_sum: float = 0.0
    iou_count: int = 0

    def add(self, other):
        for name in ("pred", "gold", "tp", "grounded_tp", "iou_sum", "iou_count"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _match_group(predicted, gold, overlap):
    """Counts for the predicted and gold units sharing one key (lists of grounds tuples)."""
    counts = Counts(pred=len(predicted), gold=len(gold), tp=min(len(predicted), len(gold)))
    if not predicted or not gold:
        return counts
    pairs = [[_pair(p, g, overlap) for g in gold] for p in predicted]
    # Text matching: among duplicates, the pairing with the most IoU (for mean_iou).
    if any(g is not None for grounds in gold for g in grounds):
        iou_sums = np.array([[sum(ious) for _, ious in row] for row in pairs])
        rows, cols = linear_sum_assignment(iou_sums, maximize=True)
        for r, c in zip(rows, cols):
            ious = pairs[r][c][1]
            counts.iou_sum += sum(ious)
            counts.iou_count += len(ious)
    # Grounded matching: a maximum matching over the pairs whose grounds agree.
    agrees = np.array([[1.0 if agree else 0.0 for agree, _ in row] for row in pairs])
    rows, cols = linear_sum_assignment(agrees, maximize=True)
    counts.grounded_tp = int(agrees[rows, cols].sum())
    return counts


def sample_counts(sample):
    """{kind: Counts} of one sample."""
    overlap = GroundOverlap(sample.image_size)
    units = {"pred": defaultdict(list), "gold": defaultdict(list)}
    for side, records in (("pred", sample.predicted), ("gold", sample.gold)):
        for kind, key, grounds in scored_units(records):
            units[side][kind, key].append(grounds)
    counts = {kind: Counts() for kind in KINDS}
    for kind, key in set(units["pred"]) | set(units["gold"]):
        counts[kind].add(_match_group(units["pred"].get((kind, key), []), units["gold"].get((kind, key), []), overlap))
    return counts


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else 0.0


def _f1(precision, recall):
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _rates(counts, prefix):
    scores = {}
    for kind in KINDS:
        c = counts[kind]
        if c.pred or c.gold:
            for name, tp in (("", c.tp), ("grounded_", c.grounded_tp)):
                precision, recall = _ratio(tp, c.pred), _ratio(tp, c.gold)
                scores[f"{prefix}{kind}/{name}precision"] = precision
                scores[f"{prefix}{kind}/{name}recall"] = recall
                scores[f"{prefix}{kind}/{name}f1"] = _f1(precision, recall)
        if c.iou_count:
            scores[f"{prefix}{kind}/mean_iou"] = c.iou_sum / c.iou_count
    iou_count = sum(counts[kind].iou_count for kind in KINDS)
    if iou_count:
        scores[f"{prefix}mean_iou"] = sum(counts[kind].iou_sum for kind in KINDS) / iou_count
    return scores


def summed_counts(scores):
    """The counts of ``ie_scores``'s result that add up over disjoint sets of samples: per kind
    ``<kind>/pred``, ``/gold``, ``/tp``, ``/grounded_tp``, and ``malformed``."""
    counts = {f"{kind}/{name}": scores[f"{kind}/{name}"] for kind in KINDS for name in COUNTED}
    counts["malformed"] = scores["malformed"]
    return counts


def rates_of_counts(counts):
    """P/R/F1 and their grounded forms per kind, named as ``ie_scores`` names them, from counts
    (``summed_counts``) added up over sets of samples."""
    return _rates({kind: Counts(**{name: counts[f"{kind}/{name}"] for name in COUNTED}) for kind in KINDS}, "")


def annotation_records(annotation):
    """Every record of an annotation object (the generic layout's JSON cell, or a prediction written
    like one): its entities, relations and events, each parsed by ie.records.parse_records (an
    AnnotationError if malformed). Empty boxes and spans are read, as a model may output them."""
    return [record for subtask, key in SUBTASK_KEYS.items() if key in annotation
            for record in parse_records(annotation, subtask, strict=False)]


def _as_sample(sample):
    if isinstance(sample, IESample):
        return sample
    if isinstance(sample, dict):
        return IESample(**sample)
    if isinstance(sample, (tuple, list)):
        return IESample(*sample)
    raise TypeError(f"a sample is an IESample, a dict of its fields or a tuple (predicted, gold, mix, "
                    f"image_size, malformed, dataset), got {type(sample).__name__}")


def ie_scores(samples):
    """MUIE metrics over samples (IESample, a dict of its fields, or a tuple in its field order), as
    one flat dict.

    Always: ``samples``, ``malformed`` (total), and per kind (entity, relation, trigger, argument)
    the counts ``<kind>/pred``, ``<kind>/gold``, ``<kind>/tp``, ``<kind>/grounded_tp``. For a kind
    with any gold or predicted unit: ``<kind>/precision``, ``/recall``, ``/f1`` and
    ``<kind>/grounded_precision``, ``/grounded_recall``, ``/grounded_f1``. Where some matched pair
    has a grounded gold mention: ``<kind>/mean_iou`` and ``mean_iou`` (over all kinds). The same
    rates and ``samples``/``malformed`` per modality mix under ``mix/<mix>/`` (e.g.
    ``mix/T+I/entity/f1``) for the mixes present, then per source dataset under ``dataset/<name>/``
    (e.g. ``dataset/twitter2015/entity/f1``) for the samples that name one.
    """
    counts = defaultdict(lambda: {kind: Counts() for kind in KINDS})
    sample_count, malformed = Counter(), Counter()
    for raw in samples:
        sample = _as_sample(raw)
        if isinstance(sample.malformed, bool) or not isinstance(sample.malformed, int) or sample.malformed < 0:
            raise ValueError(f"malformed must be a count (int >= 0), got {sample.malformed!r}")
        unit_counts = sample_counts(sample)
        for group in _groups_of(sample):
            for kind in KINDS:
                counts[group][kind].add(unit_counts[kind])
            sample_count[group] += 1
            malformed[group] += sample.malformed
    scores = {"samples": sample_count[""], "malformed": malformed[""]}
    for kind in KINDS:
        for name in COUNTED:
            scores[f"{kind}/{name}"] = getattr(counts[""][kind], name)
    scores.update(_rates(counts[""], ""))
    for group in sorted((g for g in counts if g), key=_group_order):
        scores[f"{group}samples"] = sample_count[group]
        scores[f"{group}malformed"] = malformed[group]
        scores.update(_rates(counts[group], group))
    return scores


def _groups_of(sample):
    """The key prefixes a sample counts under: the total (""), its mix, and its dataset if it names one."""
    groups = ["", f"mix/{canonical_mix(sample.mix)}/"]
    if sample.dataset is not None:
        if not isinstance(sample.dataset, str) or not sample.dataset.strip() or "/" in sample.dataset:
            raise ValueError(f"dataset must be a non-empty name without '/', got {sample.dataset!r}")
        groups.append(f"dataset/{sample.dataset}/")
    return groups


def _group_order(group):
    """Mixes first, fewest modalities first, in T, I, V, A order; then datasets by name."""
    axis, name, _ = group.split("/", 2)
    if axis == "mix":
        return 0, len(name.split("+")), [MODALITIES.index(m) for m in name.split("+")], ""
    return 1, 0, [], name
