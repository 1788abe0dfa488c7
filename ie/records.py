"""Grounded information extraction records (DESIGN.md section 5) and their annotation JSON.

A record is an entity, a relation or an event; every mention has its text and,
where it lives in a medium, a grounding there: a box or a mask on the image (pixels
of the original image) or a time span (seconds) on the sample's clip. A sample has
one timeline: its video's when it has a video, else its audio's, so a span needs
no medium of its own.

The annotation JSON of the generic layout holds them as

    {"entities":  [{"type": T, "mention": M, "ground": G?}],
     "relations": [{"label": L, "head": {"mention": M, "ground": G?}, "tail": {...}}],
     "events":    [{"type": T, "trigger": {"mention": M, "ground": G?},
                    "arguments": [{"role": R, "mention": M, "ground": G?}]}],
     "schema":    {"entity": [T, ...], "relation": [L, ...], "event": [T, ...], "role": [R, ...]}}

with a ground ``{"box": [x0, y0, x1, y1]}``, ``{"polygons": [[x0, y0, x1, y1, ...], ...]}`` or
``{"span": [start, end]}``. ``schema`` (or a dataset-level schema file of the same shape) is
the label set the prompt offers.
"""
import json
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from geometry.codec import outside_image

GROUND_KINDS = ("box", "polygons", "span")
SUBTASK_KEYS = {"ner": "entities", "re": "relations", "ee": "events"}
SCHEMA_KEYS = ("entity", "relation", "event", "role")


class AnnotationError(ValueError):
    """A malformed IE annotation; the message says which record and field."""


@dataclass(frozen=True)
class Ground:
    """Where a mention lives: ``kind`` "box" (x0, y0, x1, y1 pixels), "polygons" (flat pixel
    polygons) or "span" (start, end seconds)."""

    kind: str
    value: tuple

    @property
    def medium(self):
        return "clip" if self.kind == "span" else "image"


@dataclass(frozen=True)
class Mention:
    text: str
    ground: Optional[Ground] = None


@dataclass(frozen=True)
class Entity:
    type: str
    mention: Mention


@dataclass(frozen=True)
class Relation:
    label: str
    head: Mention
    tail: Mention


@dataclass(frozen=True)
class Argument:
    role: str
    mention: Mention


@dataclass(frozen=True)
class Event:
    type: str
    trigger: Mention
    arguments: tuple = ()


@dataclass
class Schema:
    """The labels a prompt offers, per kind."""

    entity: list = field(default_factory=list)
    relation: list = field(default_factory=list)
    event: list = field(default_factory=list)
    role: list = field(default_factory=list)


def parse_schema(value, where="schema"):
    if not isinstance(value, dict) or set(value) - set(SCHEMA_KEYS):
        raise AnnotationError(f"{where} must be an object with keys among {', '.join(SCHEMA_KEYS)}, got {value!r:.80}")
    lists = {}
    for key in SCHEMA_KEYS:
        labels = value.get(key, [])
        if not isinstance(labels, list) or not all(isinstance(x, str) and x.strip() for x in labels):
            raise AnnotationError(f"{where}.{key} must be a list of non-empty labels")
        if len(set(labels)) != len(labels):
            raise AnnotationError(f"{where}.{key} repeats a label")
        lists[key] = [x.strip() for x in labels]
    return Schema(**lists)


def parse_ground(value, where, strict=True):
    """A checked Ground. ``strict`` (annotations) refuses empty boxes and spans; model outputs may
    have them (a box's corners or a span's ends in one bin), so scoring reads them with it off."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in GROUND_KINDS:
        raise AnnotationError(f"{where}: a ground is one of {{\"box\": ...}}, {{\"polygons\": ...}}, "
                              f"{{\"span\": ...}}, got {value!r:.80}")
    kind, raw = next(iter(value.items()))
    if kind == "polygons":
        if not isinstance(raw, list) or not raw:
            raise AnnotationError(f"{where}: polygons must be a non-empty list of [x, y, ...] lists")
        polygons = tuple(numbers(p, f"{where} polygon", minimum=6, even=True) for p in raw)
        return Ground(kind, polygons)
    values = numbers(raw, f"{where} {kind}", exactly=4 if kind == "box" else 2)
    if kind == "box" and not (values[0] < values[2] and values[1] < values[3]
                              or not strict and values[0] <= values[2] and values[1] <= values[3]):
        raise AnnotationError(f"{where}: empty box {list(values)}: need x0 < x1 and y0 < y1")
    if kind == "span" and not (0 <= values[0] < values[1] or not strict and 0 <= values[0] <= values[1]):
        raise AnnotationError(f"{where}: span {list(values)} must start at 0 s or later and before its end")
    return Ground(kind, values)


def numbers(raw, where, exactly=None, minimum=None, even=False):
    if not isinstance(raw, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
        raise AnnotationError(f"{where}: expected a list of numbers, got {raw!r:.80}")
    if exactly is not None and len(raw) != exactly:
        raise AnnotationError(f"{where}: expected {exactly} numbers, got {len(raw)}")
    if minimum is not None and len(raw) < minimum or even and len(raw) % 2:
        raise AnnotationError(f"{where}: expected an even count of at least {minimum} numbers, got {len(raw)}")
    if not all(math.isfinite(v) for v in raw):
        raise AnnotationError(f"{where}: numbers must be finite")
    return tuple(float(v) for v in raw)


def parse_mention(value, where, strict=True):
    if not isinstance(value, dict) or not isinstance(value.get("mention"), str) or not value["mention"].strip():
        raise AnnotationError(f"{where}: needs a non-empty \"mention\" text")
    ground = parse_ground(value["ground"], f"{where}.ground", strict) if value.get("ground") is not None else None
    return Mention(" ".join(value["mention"].split()), ground)


def label(value, key, where):
    text = value.get(key) if isinstance(value, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise AnnotationError(f"{where}: needs a non-empty \"{key}\"")
    return text.strip()


def parse_records(annotation, subtask, strict=True):
    """The records of ``subtask`` ("ner", "re" or "ee") in an annotation object, in the file's order;
    ``strict``: see ``parse_ground``."""
    key = SUBTASK_KEYS[subtask]
    items = annotation.get(key, [])
    if not isinstance(items, list):
        raise AnnotationError(f"{key} must be a list")
    records = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        if subtask == "ner":
            records.append(Entity(label(item, "type", where), parse_mention(item, where, strict)))
        elif subtask == "re":
            head = parse_mention(item.get("head") if isinstance(item, dict) else None, f"{where}.head", strict)
            tail = parse_mention(item.get("tail") if isinstance(item, dict) else None, f"{where}.tail", strict)
            records.append(Relation(label(item, "label", where), head, tail))
        else:
            trigger = parse_mention(item.get("trigger") if isinstance(item, dict) else None, f"{where}.trigger",
                                    strict)
            arguments = item.get("arguments", [])
            if not isinstance(arguments, list):
                raise AnnotationError(f"{where}.arguments must be a list")
            records.append(Event(label(item, "type", where), trigger, tuple(
                Argument(label(a, "role", f"{where}.arguments[{j}]"),
                         parse_mention(a, f"{where}.arguments[{j}]", strict))
                for j, a in enumerate(arguments))))
    return records


def record_labels(record):
    """(schema kind, label) pairs of a record."""
    kind = type(record).__name__.lower()
    if kind == "entity":
        return [("entity", record.type)]
    if kind == "relation":
        return [("relation", record.label)]
    return [("event", record.type)] + [("role", a.role) for a in record.arguments]


def mentions_of(record):
    """Every mention of a record, in its grammar order."""
    if isinstance(record, Entity):
        return [record.mention]
    if isinstance(record, Relation):
        return [record.head, record.tail]
    return [record.trigger] + [a.mention for a in record.arguments]


def appearance_key(record, text):
    """Records are ordered by first appearance: the earliest mention found in the text, then (for
    mentions that live only in a medium) image before clip, then the start of the ground (box x0
    in pixels, span start in seconds: never compared with each other)."""
    offsets = [text.find(m.text) for m in mentions_of(record)]
    offsets = [o for o in offsets if o >= 0]
    grounds = [(m.ground.medium != "image", ground_start(m.ground)) for m in mentions_of(record)
               if m.ground is not None]
    return (min(offsets) if offsets else math.inf, min(grounds) if grounds else (True, math.inf))


def ground_start(ground):
    if ground.kind == "polygons":
        return min(min(p[0::2]) for p in ground.value)
    return ground.value[0]


def in_order(records, text):
    """Records sorted by first appearance (stable for ties)."""
    return sorted(records, key=lambda record: appearance_key(record, text))


def map_grounds(records, move):
    """The records with every ground replaced by ``move(ground)`` (a Ground, or None to drop it)."""
    def mention(m):
        return Mention(m.text, move(m.ground) if m.ground is not None else None)

    moved = []
    for record in records:
        if isinstance(record, Entity):
            moved.append(Entity(record.type, mention(record.mention)))
        elif isinstance(record, Relation):
            moved.append(Relation(record.label, mention(record.head), mention(record.tail)))
        else:
            moved.append(Event(record.type, mention(record.trigger),
                               tuple(Argument(a.role, mention(a.mention)) for a in record.arguments)))
    return moved


def compact_number(value):
    """Whole numbers as ints, so written annotations stay short (12, not 12.0)."""
    value = float(value)
    return int(value) if value.is_integer() else value


def ground_json(ground):
    if ground.kind == "polygons":
        return {"polygons": [[compact_number(v) for v in polygon] for polygon in ground.value]}
    return {ground.kind: [compact_number(v) for v in ground.value]}


def mention_json(mention):
    value = {"mention": mention.text}
    if mention.ground is not None:
        value["ground"] = ground_json(mention.ground)
    return value


def record_json(record):
    if isinstance(record, Entity):
        return {"type": record.type, **mention_json(record.mention)}
    if isinstance(record, Relation):
        return {"label": record.label, "head": mention_json(record.head), "tail": mention_json(record.tail)}
    if isinstance(record, Event):
        return {"type": record.type, "trigger": mention_json(record.trigger),
                "arguments": [{"role": a.role, **mention_json(a.mention)} for a in record.arguments]}
    raise TypeError(f"not an IE record: {record!r:.80}")


RECORD_KEYS = {Entity: "entities", Relation: "relations", Event: "events"}


def to_annotation(records, keys=()):
    """Records as the annotation JSON they were read from (``parse_records`` reads it back); ``keys``
    (of "entities", "relations", "events") are written even when empty."""
    annotation = {key: [] for key in keys}
    for record in records:
        annotation.setdefault(RECORD_KEYS[type(record)], []).append(record_json(record))
    return annotation


def schema_json(schema):
    return {key: list(getattr(schema, key)) for key in SCHEMA_KEYS if getattr(schema, key)}


def read_schema_file(path):
    with open(path, encoding="utf-8") as f:
        try:
            return parse_schema(json.load(f), where=path)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{error.lineno}: column {error.colno}: not valid JSON: {error.msg}") from None


def moved_grounds(records, boxes, polygons, clip_start):
    """Records in the frame a target is written in: their box and mask grounds replaced, in order, by
    ``boxes`` and ``polygons`` (moved with the image transform), their spans made relative to the clip
    window starting at ``clip_start`` seconds."""
    boxes = iter([] if boxes is None else np.asarray(boxes).tolist())
    polygons = iter([] if polygons is None else polygons)

    def move(ground):
        if ground.kind == "box":
            return Ground("box", tuple(next(boxes)))
        if ground.kind == "polygons":
            return Ground("polygons", tuple(tuple(np.asarray(p, dtype=float).ravel().tolist()) for p in next(polygons)))
        return Ground("span", tuple(t - clip_start for t in ground.value))

    return map_grounds(records, move)


def ground_outside_image(grounds, size):
    """The first box or mask ground that lies outside a ``size`` = (width, height) image, or None."""
    width, height = size
    for ground in grounds:
        if ground.kind == "box":
            xs, ys = ground.value[0::2], ground.value[1::2]
        elif ground.kind == "polygons":
            xs = [v for p in ground.value for v in p[0::2]]
            ys = [v for p in ground.value for v in p[1::2]]
        else:
            continue
        if outside_image(xs, ys, width, height):
            return ground
    return None
