"""IE records <-> target tokens (DESIGN.md section 5): ``serialise`` writes them, ``parse`` reads them back.

    target   := record*
    entity   := <ent> TYPE <is> MENTION ground?
    relation := <rel> LABEL <head> MENTION ground? <tail> MENTION ground?
    event    := <evt> TYPE <trg> MENTION ground? (<arg> ROLE <is> MENTION ground?)*
    ground   := box (4 bins x0 y0 x1 y1) | mask (<poly> and >= 3 (x, y) bin pairs, one or more) | span (2 times s <= e)

TYPE, LABEL, ROLE and MENTION are SentencePiece text pieces; none starts with a blank piece
(a bare "\u2581" or a whitespace byte), so every one decodes to non-empty text. A mention ends where a
ground starts, a structure token comes, or the target ends.

Grounds are written in a ``Frame``: the image size the pixel values refer to and the length of
the clip window the seconds are relative to. ``serialise`` takes them in the frame the model sees
(after image transforms; spans minus the window start); ``parse`` decodes into whatever frame it is
given, so the original image size gives original pixels (the task adds the window start back).

``serialise`` raises ``IETargetError`` on a record it cannot write (a ground outside its medium, a
label or mention without text); ``parse`` never raises: a record that does not parse is dropped and
counted, and parsing goes on at the next record token.
"""
from dataclasses import dataclass
from typing import Optional

from decoding.polygon import MalformedPolygons, polygon_tokens, read_polygons
from geometry.codec import CodecError
from ie.records import Argument, Entity, Event, Ground, Mention, Relation, map_grounds, mentions_of


class IETargetError(ValueError):
    """A record that cannot be written as tokens; the message names the record and field."""


@dataclass(frozen=True)
class Frame:
    """The coordinate frame of grounds: ``image_size`` (width, height) in pixels for boxes and
    polygons, ``clip_length`` in seconds for spans (relative to the window the model sees); None
    where the sample has no such medium."""

    image_size: Optional[tuple] = None
    clip_length: Optional[float] = None


# ---- writing -------------------------------------------------------------------------------------


def serialise(records, vocab, codec, frame, source_ids=None):
    """Records (ie.records dataclasses, in target order: ``ie.records.in_order``) -> token ids, no EOS.

    ``source_ids``: the prompt's ids of the sample's text; a mention spelled by a run of them is
    written with exactly those ids, so it can be copied from the source (``ie.grammar``)."""
    return [t for i, record in enumerate(records)
            for t in record_tokens(record, vocab, codec, frame, source_ids, where=f"record {i}")]


def target_length(records, vocab, max_vertices, source_ids=None):
    """How many tokens ``serialise`` writes for ``records``, whatever the frame: exact for text, boxes
    and spans; a mask counts each polygon's vertices up to ``max_vertices`` (the codec's budget) as if
    none merged in quantisation, so the count is at least what is written."""
    text_only = serialise(map_grounds(records, lambda ground: None), vocab, None, Frame(), source_ids)
    return len(text_only) + sum(ground_length(m.ground, max_vertices)
                                for record in records for m in mentions_of(record) if m.ground is not None)


def ground_length(ground, max_vertices):
    """The most tokens a ground takes: 4 for a box, 2 for a span, ``<poly>`` and 2 a vertex per polygon."""
    if ground.kind == "box":
        return 4
    if ground.kind == "span":
        return 2
    return sum(1 + 2 * min(len(polygon) // 2, max_vertices) for polygon in ground.value)


def record_tokens(record, vocab, codec, frame, source_ids=None, where="record"):
    """The token ids of one record."""
    if isinstance(record, Entity):
        return ([vocab.ie("ent")] + label_ids(record.type, vocab, f"{where} type") + [vocab.ie("is")]
                + mention_tokens(record.mention, vocab, codec, frame, source_ids, f"{where} mention"))
    if isinstance(record, Relation):
        return ([vocab.ie("rel")] + label_ids(record.label, vocab, f"{where} label") + [vocab.ie("head")]
                + mention_tokens(record.head, vocab, codec, frame, source_ids, f"{where} head")
                + [vocab.ie("tail")] + mention_tokens(record.tail, vocab, codec, frame, source_ids, f"{where} tail"))
    if isinstance(record, Event):
        ids = ([vocab.ie("evt")] + label_ids(record.type, vocab, f"{where} type") + [vocab.ie("trg")]
               + mention_tokens(record.trigger, vocab, codec, frame, source_ids, f"{where} trigger"))
        for j, argument in enumerate(record.arguments):
            ids += ([vocab.ie("arg")] + label_ids(argument.role, vocab, f"{where} argument {j} role") + [vocab.ie("is")]
                    + mention_tokens(argument.mention, vocab, codec, frame, source_ids, f"{where} argument {j}"))
        return ids
    raise IETargetError(f"{where}: not an Entity, Relation or Event: {record!r:.80}")


def label_ids(label, vocab, where="label"):
    """The ids of a type, label or role: its text encoded alone, leading blank pieces dropped."""
    ids = strip_blank(vocab.encode_text(label), vocab)
    if not ids:
        raise IETargetError(f"{where}: {label!r} has no text")
    return ids


def mention_tokens(mention, vocab, codec, frame, source_ids=None, where="mention"):
    return (mention_ids(mention.text, vocab, source_ids, where)
            + ground_tokens(mention.ground, vocab, codec, frame, where))


def mention_ids(text, vocab, source_ids=None, where="mention"):
    """A mention's ids: a run of ``source_ids`` that decodes to ``text`` if there is one (the same
    ids as the text encoded alone where possible), else the text encoded alone; leading blank
    pieces dropped."""
    own = strip_blank(vocab.encode_text(text), vocab)
    if not own:
        raise IETargetError(f"{where}: {text!r} has no text")
    if source_ids:
        source = [int(i) for i in source_ids]
        run = find_run(source, own)
        if run is not None:
            return own
        run = find_text_run(source, " ".join(text.split()), vocab)
        if run is not None:
            return run
    return own


def find_run(source, ids):
    """The start of the first occurrence of ``ids`` as a contiguous run of ``source``, or None."""
    n = len(ids)
    first = ids[0]
    for start in range(len(source) - n + 1):
        if source[start] == first and source[start:start + n] == ids:
            return start
    return None


def find_text_run(source, text, vocab, slack=4):
    """The shortest run of ``source`` text ids, not starting blank, that decodes to ``text``, or None."""
    for start, first in enumerate(source):
        if not vocab.is_text(first) or vocab.is_blank(first):
            continue
        for end in range(start + 1, len(source) + 1):
            if not vocab.is_text(source[end - 1]):
                break
            decoded = vocab.decode_text(source[start:end])
            if decoded == text:
                return source[start:end]
            if end == start + 1 and "\ufffd" not in decoded and not text.startswith(decoded):
                break
            if len(decoded) > len(text) + slack:
                break
    return None


def strip_blank(ids, vocab):
    start = 0
    while start < len(ids) and vocab.is_blank(ids[start]):
        start += 1
    return list(ids[start:])


def ground_tokens(ground, vocab, codec, frame, where="mention"):
    """The ids of a ground in ``frame`` (no ground: none)."""
    if ground is None:
        return []
    try:
        if ground.kind == "span":
            if frame.clip_length is None:
                raise IETargetError(f"{where}: a span ground but the sample has no clip")
            return vocab.time_ids(codec.encode_span(*ground.value, frame.clip_length))
        if frame.image_size is None:
            raise IETargetError(f"{where}: a {ground.kind} ground but the sample has no image")
        width, height = frame.image_size
        if ground.kind == "box":
            return vocab.bin_ids(codec.encode_box(ground.value, width, height))
        if ground.kind == "polygons":
            return polygon_tokens(codec.encode_polygons(ground.value, width, height), vocab)
    except CodecError as error:
        raise IETargetError(f"{where}: {ground.kind} ground does not encode: {error}") from None
    raise IETargetError(f"{where}: unknown ground kind {ground.kind!r}")


# ---- reading -------------------------------------------------------------------------------------


class _Malformed(Exception):
    pass


def parse(tokens, vocab, codec, frame):
    """Token ids (no EOS) -> (records, malformed): the records that parse, grounds decoded into
    ``frame``, and the count of pieces that did not (a record that breaks the grammar, tokens
    before the first record token). Never raises on a sequence of integers."""
    frame = frame or Frame()
    ids = [int(t) for t in tokens]
    starts = {vocab.ie("ent"), vocab.ie("rel"), vocab.ie("evt")}
    bounds = [i for i, t in enumerate(ids) if t in starts] + [len(ids)]
    records, malformed = [], 0
    if bounds[0] > 0:
        malformed += 1  # tokens before the first record
    reader = _Reader(vocab, codec, frame)
    for begin, end in zip(bounds, bounds[1:]):
        try:
            records.append(reader.record(ids[begin:end]))
        except _Malformed:
            malformed += 1
    return records, malformed


class _Reader:
    def __init__(self, vocab, codec, frame):
        self.vocab, self.codec, self.frame = vocab, codec, frame
        self.ie = vocab.ie_ids()

    def record(self, seg):
        ie = self.ie
        kind = seg[0]
        if kind == ie["ent"]:
            label, k = self.label(seg, 1, ie["is"])
            mention, k = self.mention(seg, k)
            self.expect_end(seg, k)
            return Entity(label, mention)
        if kind == ie["rel"]:
            label, k = self.label(seg, 1, ie["head"])
            head, k = self.mention(seg, k)
            if k >= len(seg) or seg[k] != ie["tail"]:
                raise _Malformed
            tail, k = self.mention(seg, k + 1)
            self.expect_end(seg, k)
            return Relation(label, head, tail)
        label, k = self.label(seg, 1, ie["trg"])
        trigger, k = self.mention(seg, k)
        arguments = []
        while k < len(seg):
            if seg[k] != ie["arg"]:
                raise _Malformed
            role, k = self.label(seg, k + 1, ie["is"])
            mention, k = self.mention(seg, k)
            arguments.append(Argument(role, mention))
        return Event(label, trigger, tuple(arguments))

    @staticmethod
    def expect_end(seg, k):
        if k != len(seg):
            raise _Malformed

    def text(self, seg, k):
        """Text pieces from ``k`` on -> (normalised text, next index); at least one, not blank."""
        end = k
        while end < len(seg) and self.vocab.is_text(seg[end]):
            end += 1
        text = " ".join(self.vocab.decode_text(seg[k:end]).split()) if end > k else ""
        if not text and end > k:
            # a character the grammar lets start a mention from its bytes may still be Unicode whitespace
            # (<0xC2><0x85> is U+0085): kept as written rather than normalised away into a malformed record
            values = [self.vocab.byte_value(i) for i in seg[k:end] if not self.vocab.is_blank(i)]
            text = bytes(values).decode("utf-8", "replace") if values and None not in values else ""
        if not text:
            raise _Malformed
        return text, end

    def label(self, seg, k, terminator):
        text, k = self.text(seg, k)
        if k >= len(seg) or seg[k] != terminator:
            raise _Malformed
        return text, k + 1

    def mention(self, seg, k):
        text, k = self.text(seg, k)
        ground, k = self.ground(seg, k)
        return Mention(text, ground), k

    def ground(self, seg, k):
        vocab, frame = self.vocab, self.frame
        if k >= len(seg):
            return None, k
        try:
            if vocab.to_bin(seg[k]) is not None:
                bins = [vocab.to_bin(t) for t in seg[k:k + 4]]
                if len(bins) < 4 or None in bins or bins[2] < bins[0] or bins[3] < bins[1] \
                        or frame.image_size is None:
                    raise _Malformed
                return Ground("box", self.codec.decode_box(bins, *frame.image_size)), k + 4
            if seg[k] == vocab.poly:
                try:
                    polygons, k = read_polygons(seg, k, vocab)
                except MalformedPolygons:
                    raise _Malformed from None
                if frame.image_size is None:
                    raise _Malformed
                decoded = self.codec.decode_polygons(polygons, *frame.image_size)
                return Ground("polygons", tuple(tuple(p) for p in decoded)), k
            if vocab.to_time_bin(seg[k]) is not None:
                times = [vocab.to_time_bin(t) for t in seg[k:k + 2]]
                if len(times) < 2 or None in times or times[1] < times[0] or frame.clip_length is None:
                    raise _Malformed
                return Ground("span", self.codec.decode_span(times, frame.clip_length)), k + 2
        except CodecError:  # a frame size the codec refuses (zero, not finite)
            raise _Malformed from None
        return None, k
