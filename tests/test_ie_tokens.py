"""IE targets as tokens: hand-checked serialisations, round trips of random records, a parser that never raises."""
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from preprocess import build_vocab
from test_ie_grammar import mention_runs
from geometry.codec import LocationCodec
from ie.records import Argument, Entity, Event, Ground, Mention, Relation, mentions_of
from ie.tokens import (Frame, IETargetError, mention_ids, parse, record_tokens, serialise, strip_blank,
                             target_length)
from data.vocab import Vocabulary

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PROPERTY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SENTENCES = [
    "Barack Obama visited Paris with his wife in 2015 .",
    "a man rides a horse in the park while a dog barks",
    "The company Acme Corp. hired Jane Doe as chief engineer .",
    "two people are arguing about the attack near the old bridge",
    "Über-cool café owner Zoë met 3 friends at 10 o'clock",
]
NUM_BINS, NUM_TIME_BINS, MAX_VERTICES = 1000, 100, 12


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    """A small SentencePiece vocabulary (byte fallback: any text encodes) with the IE tokens."""
    folder = tmp_path_factory.mktemp("ie_vocab")
    tsv = folder / "text.tsv"
    tsv.write_text("".join(f"{i}\t{s}\n" for i, s in enumerate(SENTENCES * 3)), encoding="utf-8")
    build_vocab.build([(str(tsv), [1])], str(folder), 400, NUM_BINS, NUM_TIME_BINS)
    return Vocabulary(str(folder), NUM_BINS, NUM_TIME_BINS)


@pytest.fixture(scope="module")
def codec():
    return LocationCodec(NUM_BINS, NUM_TIME_BINS, MAX_VERTICES)


def names(vocab, ids):
    return [vocab.dictionary[i] for i in ids]


def text_of(vocab, ids):
    return vocab.decode_text(ids)


# ---- hand-checked -------------------------------------------------------------------------------


def test_entity_relation_and_event_tokens_follow_the_grammar(vocab, codec):
    frame = Frame((100, 50), 20.0)
    entity = Entity("person", Mention("Jane Doe", Ground("box", (10.0, 5.0, 60.0, 45.0))))
    ids = serialise([entity], vocab, codec, frame)
    assert ids[0] == vocab.ie("ent")
    at = ids.index(vocab.ie("is"))
    assert text_of(vocab, ids[1:at]) == "person"
    assert text_of(vocab, ids[at + 1:-4]) == "Jane Doe"
    # x: round(10 / 100 * 999) = 100, round(60 / 100 * 999) = 599; y: round(5 / 50 * 999) = 100, 899
    assert ids[-4:] == vocab.bin_ids([100, 100, 599, 899])

    relation = Relation("works for", Mention("Jane Doe"), Mention("Acme Corp.", Ground("span", (2.0, 20.0))))
    ids = serialise([relation], vocab, codec, frame)
    head, tail = ids.index(vocab.ie("head")), ids.index(vocab.ie("tail"))
    assert ids[0] == vocab.ie("rel") and text_of(vocab, ids[1:head]) == "works for"
    assert text_of(vocab, ids[head + 1:tail]) == "Jane Doe"
    assert ids[-2:] == vocab.time_ids([10, 99])  # round(2 / 20 * 99) = 10 (9.9), 99
    assert text_of(vocab, ids[tail + 1:-2]) == "Acme Corp."

    square = (10.0, 10.0, 90.0, 10.0, 90.0, 40.0, 10.0, 40.0)
    event = Event("attack", Mention("attack", Ground("polygons", (square, square[:6]))),
                  (Argument("place", Mention("bridge")), Argument("attacker", Mention("people"))))
    ids = serialise([event], vocab, codec, frame)
    kinds = [t for t in ids if t in vocab.ie_ids().values() or t == vocab.poly]
    ie = vocab.ie_ids()
    assert kinds == [ie["evt"], ie["trg"], vocab.poly, vocab.poly, ie["arg"], ie["is"], ie["arg"], ie["is"]]
    first = ids.index(vocab.poly)
    assert ids[first:first + 9] == [vocab.poly] + vocab.bin_ids([100, 200, 899, 200, 899, 799, 100, 799])

    records, malformed = parse(serialise([entity, relation, event], vocab, codec, frame), vocab, codec, frame)
    assert malformed == 0 and [type(r) for r in records] == [Entity, Relation, Event]
    assert records[1].tail.ground.value == pytest.approx((10 / 99 * 20, 20.0))
    assert [a.role for a in records[2].arguments] == ["place", "attacker"]
    assert len(records[2].trigger.ground.value) == 2 and len(records[2].trigger.ground.value[0]) == 8


def test_parse_decodes_into_the_frame_it_is_given(vocab, codec):
    """Written in the model's 64 x 64 frame, read at the original 640 x 320 pixels."""
    ids = serialise([Entity("dog", Mention("a dog", Ground("box", (0.0, 16.0, 32.0, 64.0))))], vocab, codec,
                    Frame((64, 64)))
    (entity,), malformed = parse(ids, vocab, codec, Frame((640, 320)))
    assert malformed == 0
    assert entity.mention.ground.value == pytest.approx((0.0, 80.0, 320.0, 320.0), abs=0.5 * 640 / 999)


def test_mentions_are_written_with_the_source_ids_where_the_source_spells_them(vocab):
    text = "Barack Obama visited Paris"
    source = vocab.encode_text(" extract entities: " + text)
    for mention in ("Obama", "Paris", "Barack Obama visited"):
        ids = mention_ids(mention, vocab, source)
        assert any(source[i:i + len(ids)] == ids for i in range(len(source))), mention
        assert text_of(vocab, ids) == mention
        assert not vocab.is_blank(ids[0])
    # part of a word: a run of the source where one spells it, else the mention alone; either decodes to it
    assert text_of(vocab, mention_ids("bama", vocab, source)) == "bama"
    # not in the source: the mention alone
    assert mention_ids("Berlin", vocab, source) == [t for t in vocab.encode_text("Berlin") if not vocab.is_blank(t)]


def test_mention_text_runs_are_found_when_tokenised_differently_in_context(vocab):
    """SentencePiece cuts "man" alone and inside "a man rides" differently here; the written ids are
    the source's, and decode to the mention."""
    source = vocab.encode_text("a man rides a horse")
    for mention in ("man", "man rides", "a horse", "rides a"):
        ids = mention_ids(mention, vocab, source)
        assert any(source[i:i + len(ids)] == ids for i in range(len(source))), (mention, names(vocab, ids))
        assert text_of(vocab, ids) == mention


def test_records_that_cannot_be_written_are_errors_naming_them(vocab, codec):
    frame = Frame(image_size=(64, 64))
    with pytest.raises(IETargetError, match="record 1 mention: a span ground but the sample has no clip"):
        serialise([Entity("a", Mention("b")), Entity("a", Mention("b", Ground("span", (0.0, 1.0))))],
                  vocab, codec, frame)
    with pytest.raises(IETargetError, match="record 0 head: a box ground but the sample has no image"):
        serialise([Relation("r", Mention("x", Ground("box", (0, 0, 1, 1))), Mention("y"))], vocab, codec, Frame())
    with pytest.raises(IETargetError, match="record 0 tail: box ground does not encode"):
        serialise([Relation("r", Mention("x"), Mention("y", Ground("box", (70, 70, 80, 80))))], vocab, codec, frame)
    with pytest.raises(IETargetError, match="record 0 type: ' ' has no text"):
        record_tokens(Entity(" ", Mention("x")), vocab, codec, frame, where="record 0")


def test_target_length_counts_what_serialise_writes_and_bounds_masks(vocab, codec):
    square = (10.0, 10.0, 50.0, 10.0, 50.0, 50.0, 10.0, 50.0)
    records = [Entity("person", Mention("Jane", Ground("box", (1, 2, 30, 40)))),
               Relation("knows", Mention("Jane"), Mention("Zoë", Ground("span", (0.5, 1.5)))),
               Event("meet", Mention("met", Ground("polygons", (square, square[:6]))),
                     (Argument("place", Mention("Acme")),))]
    frame = Frame(image_size=(64, 64), clip_length=2.0)
    written = serialise(records, vocab, codec, frame)
    assert target_length(records, vocab, codec.max_poly_vertices) == len(written)
    # half a pixel apart in a 4000-pixel image, two vertices share a bin: the count stays an upper bound
    text = len(serialise([Entity("p", Mention("x"))], vocab, codec, Frame()))
    close = [Entity("p", Mention("x", Ground("polygons", ((0.0, 0.0, 0.5, 0.0, 400.0, 0.0, 400.0, 400.0, 0.0, 400.0),))))]
    assert target_length(close, vocab, 32) == text + 1 + 2 * 5
    assert len(serialise(close, vocab, codec, Frame(image_size=(4000, 4000)))) == text + 1 + 2 * 4
    assert target_length(close, vocab, 3) == text + 1 + 2 * 3


def test_broken_records_are_dropped_and_counted_and_parsing_goes_on(vocab, codec):
    frame = Frame((100, 100), 10.0)
    ie = vocab.ie_ids()
    good = serialise([Entity("person", Mention("Jane"))], vocab, codec, frame)
    word = vocab.encode_text("Jane")[-1]
    broken = [
        [ie["ent"], ie["is"], word],                                 # no type
        [ie["ent"], word, ie["is"]],                                 # no mention
        [ie["ent"], word, ie["is"], word] + vocab.bin_ids([5, 5, 9]),  # a box of 3 bins
        [ie["ent"], word, ie["is"], word] + vocab.bin_ids([5, 5, 4, 9]),  # x1 < x0
        [ie["ent"], word, ie["is"], word, vocab.poly] + vocab.bin_ids([1, 2, 3, 4]),  # 2 vertices
        [ie["ent"], word, ie["is"], word] + vocab.time_ids([7, 3]),  # end before start
        [ie["rel"], word, ie["head"], word],                         # no tail
        [ie["evt"], word, ie["trg"], word, ie["arg"], word, ie["is"]],  # argument without mention
        [ie["ent"], word, ie["is"], word, ie["tail"], word],          # a tail in an entity
        [ie["ent"], word, ie["is"], word, vocab.dictionary.eos()],     # EOS inside
    ]
    for piece in broken:
        records, malformed = parse(piece + good, vocab, codec, frame)
        assert (len(records), malformed) == (1, 1), names(vocab, piece)
        assert records[0] == Entity("person", Mention("Jane"))
    records, malformed = parse([word, word] + good + good, vocab, codec, frame)  # junk before the first record
    assert (len(records), malformed) == (2, 1)
    # a ground needs its medium in the frame
    boxed = serialise([Entity("p", Mention("x", Ground("box", (1, 1, 5, 5))))], vocab, codec, frame)
    assert parse(boxed, vocab, codec, Frame(clip_length=3.0)) == ([], 1)
    assert parse([], vocab, codec, frame) == ([], 0)


# ---- properties ---------------------------------------------------------------------------------

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.,'éüÖß中", min_size=1,
                max_size=7)
phrases = st.lists(words, min_size=1, max_size=3).map(" ".join)
labels = st.sampled_from(["person", "location", "org", "works for", "attack", "place", "agent", "Vehicle-Type"])


@st.composite
def frames(draw):
    image = draw(st.none() | st.tuples(st.integers(8, 3000), st.integers(8, 3000)))
    clip = draw(st.none() | st.floats(0.5, 3600.0))
    return Frame(image, clip)


@st.composite
def grounds(draw, frame):
    kinds = (["box", "polygons"] if frame.image_size else []) + (["span"] if frame.clip_length else [])
    kind = draw(st.none() | st.sampled_from(kinds)) if kinds else None
    if kind is None:
        return None
    if kind == "span":
        length = frame.clip_length
        start = draw(st.floats(0.0, length * 0.99))
        return Ground("span", (start, draw(st.floats(start, length))))
    width, height = frame.image_size
    if kind == "box":
        x0, x1 = sorted(draw(st.lists(st.floats(0.0, float(width)), min_size=2, max_size=2, unique=True)))
        y0, y1 = sorted(draw(st.lists(st.floats(0.0, float(height)), min_size=2, max_size=2, unique=True)))
        return Ground("box", (x0, y0, x1, y1))
    polygons = []
    for _ in range(draw(st.integers(1, 3))):
        # distinct bins, consecutive ones different, not all on a line: the codec keeps every vertex
        count = draw(st.integers(3, MAX_VERTICES))
        bins = draw(st.lists(st.tuples(st.integers(0, NUM_BINS - 1), st.integers(0, NUM_BINS - 1)),
                             min_size=count, max_size=count, unique=True))
        (ax, ay), (bx, by) = bins[0], bins[1]
        assume(any((bx - ax) * (y - ay) != (by - ay) * (x - ax) for x, y in bins[2:]))
        jitter = draw(st.floats(-0.3, 0.3))
        polygons.append(tuple(v for x, y in bins for v in (
            min(max((x + jitter) / (NUM_BINS - 1) * width, 0.0), width),
            min(max((y - jitter) / (NUM_BINS - 1) * height, 0.0), height))))
    return Ground("polygons", tuple(polygons))


@st.composite
def mentions(draw, frame):
    return Mention(draw(phrases), draw(grounds(frame)))


@st.composite
def records_and_frame(draw):
    frame = draw(frames())
    kinds = draw(st.lists(st.sampled_from(["entity", "relation", "event"]), max_size=4))
    records = []
    for kind in kinds:
        if kind == "entity":
            records.append(Entity(draw(labels), draw(mentions(frame))))
        elif kind == "relation":
            records.append(Relation(draw(labels), draw(mentions(frame)), draw(mentions(frame))))
        else:
            arguments = tuple(Argument(draw(labels), draw(mentions(frame))) for _ in range(draw(st.integers(0, 3))))
            records.append(Event(draw(labels), draw(mentions(frame)), arguments))
    return records, frame


def close_grounds(a, b, frame):
    if (a is None) != (b is None):
        return False
    if a is None:
        return True
    if a.kind != b.kind:
        return False
    if a.kind == "span":
        tolerance = 0.5 * frame.clip_length / (NUM_TIME_BINS - 1) + 1e-9 * frame.clip_length
        return all(abs(x - y) <= tolerance for x, y in zip(a.value, b.value))
    width, height = frame.image_size
    tolerances = (0.5 * width / (NUM_BINS - 1) + 1e-9 * width, 0.5 * height / (NUM_BINS - 1) + 1e-9 * height)
    def close(p, q):
        return len(p) == len(q) and all(abs(x - y) <= tolerances[i % 2] for i, (x, y) in enumerate(zip(p, q)))
    if a.kind == "box":
        return close(a.value, b.value)
    # a mask is written canonically (decoding/polygon.py): each polygon's vertices may start elsewhere and
    # run the other way round, and the polygons come largest first
    return len(a.value) == len(b.value) and all(
        any(close(q, p) for p in outline_writings(polygon) for q in b.value) for polygon in a.value)


def outline_writings(polygon):
    """Every flat vertex list of the same outline: each starting vertex, either direction."""
    points = [tuple(polygon[i:i + 2]) for i in range(0, len(polygon), 2)]
    for ring in (points, points[::-1]):
        for start in range(len(ring)):
            yield [c for point in ring[start:] + ring[:start] for c in point]


def same_mention(a, b, frame):
    return a.text == b.text and close_grounds(a.ground, b.ground, frame)


def same_record(a, b, frame):
    if type(a) is not type(b):
        return False
    if isinstance(a, Entity):
        return a.type == b.type and same_mention(a.mention, b.mention, frame)
    if isinstance(a, Relation):
        return a.label == b.label and same_mention(a.head, b.head, frame) and same_mention(a.tail, b.tail, frame)
    return (a.type == b.type and same_mention(a.trigger, b.trigger, frame) and len(a.arguments) == len(b.arguments)
            and all(x.role == y.role and same_mention(x.mention, y.mention, frame)
                    for x, y in zip(a.arguments, b.arguments)))


@PROPERTY
@given(case=records_and_frame(), with_source=st.booleans())
def test_serialise_then_parse_gives_the_records_back(vocab, codec, case, with_source):
    records, frame = case
    source = None
    if with_source:  # the mentions inside a sentence, so that most are copied from it
        text = " and ".join(m.text for r in records for m in mentions_of(r)) + " happened"
        source = vocab.encode_text(text)
    tokens = serialise(records, vocab, codec, frame, source_ids=source)
    parsed, malformed = parse(tokens, vocab, codec, frame)
    assert malformed == 0
    assert len(parsed) == len(records)
    for a, b in zip(records, parsed):
        assert same_record(a, b, frame), (a, b)
    if source is not None:
        for run in mention_runs(vocab, tokens):
            assert any(source[i:i + len(run)] == run for i in range(len(source)))


@st.composite
def any_tokens(draw, vocab):
    """Sequences over every kind of id: fairseq's specials, IE tokens, <poly>, bins, times, text, out of range."""
    d = vocab.dictionary
    pool = st.sampled_from(
        list(range(d.nspecial)) + list(vocab.ie_ids().values()) * 4 + [vocab.poly] * 4
        + vocab.bin_ids([0, 1, 2, 500, 998, 999]) + vocab.time_ids([0, 1, 50, 99])
        + list(range(d.nspecial, d.nspecial + 40)) + [len(d), len(d) + 7, -1])
    return draw(st.lists(pool | st.integers(-3, len(d) + 3), max_size=60))


@PROPERTY
@given(data=st.data(), frame=frames() | st.sampled_from([Frame((0, 5), 0.0), Frame((math.inf, 5), math.nan)]))
def test_parse_never_raises_and_counts_what_it_drops(vocab, codec, data, frame):
    tokens = data.draw(any_tokens(vocab))
    records, malformed = parse(tokens, vocab, codec, frame)
    starts = sum(t in (vocab.ie("ent"), vocab.ie("rel"), vocab.ie("evt")) for t in tokens)
    junk = bool(tokens) and tokens[0] not in (vocab.ie("ent"), vocab.ie("rel"), vocab.ie("evt"))
    assert len(records) + malformed == starts + junk
    for record in records:
        assert isinstance(record, (Entity, Relation, Event))
        for mention in mentions_of(record):
            assert mention.text and mention.text == " ".join(mention.text.split())
            if mention.ground is not None:
                assert all(math.isfinite(v) for v in _flat(mention.ground.value))
    # what parses writes again to the same tokens (grounds are on bin centres, mentions alone)
    again = parse(serialise(records, vocab, codec, frame), vocab, codec, frame) if _writable(records, vocab) else None
    if again is not None:
        assert again[1] == 0 and len(again[0]) == len(records)


@settings(PROPERTY, max_examples=500)
@given(case=records_and_frame(), data=st.data())
def test_parse_of_edited_targets_never_raises_and_keeps_the_untouched_records(vocab, codec, case, data):
    """Near-misses: a valid target with tokens inserted, deleted or replaced."""
    records, frame = case
    tokens = serialise(records, vocab, codec, frame)
    edited = list(tokens)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(edited)))
        how = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        token = data.draw(any_tokens(vocab).filter(bool))[0]
        if how == "insert":
            edited.insert(at, token)
        elif at < len(edited):
            edited[at:at + 1] = [] if how == "delete" else [token]
    parsed, malformed = parse(edited, vocab, codec, frame)
    starts = {vocab.ie("ent"), vocab.ie("rel"), vocab.ie("evt")}
    assert len(parsed) + malformed == sum(t in starts for t in edited) + (bool(edited) and edited[0] not in starts)
    # records whose tokens were not touched come back
    untouched = [r for r in records if _segment(r, vocab, codec, frame) in _segments(edited, starts)]
    for record in untouched:
        assert any(same_record(record, p, frame) for p in parsed)


def _segment(record, vocab, codec, frame):
    return tuple(record_tokens(record, vocab, codec, frame))


def _segments(tokens, starts):
    bounds = [i for i, t in enumerate(tokens) if t in starts] + [len(tokens)]
    return {tuple(tokens[a:b]) for a, b in zip(bounds, bounds[1:])}


def _flat(value):
    return [v for item in value for v in (item if isinstance(item, tuple) else (item,))]


def _writable(records, vocab):
    """Parsed boxes may be empty (x0 == x1), which the codec refuses to write; a parsed text may be
    byte pieces that decode to control characters SentencePiece drops when encoding (generation
    copies or writes such pieces too, so they parse), which cannot be written again."""
    texts = [getattr(r, name) for r in records for name in ("type", "label") if hasattr(r, name)]
    texts += [a.role for r in records for a in getattr(r, "arguments", [])]
    texts += [m.text for r in records for m in mentions_of(r)]
    if any(not strip_blank(vocab.encode_text(text), vocab) for text in texts):
        return False
    for record in records:
        for mention in mentions_of(record):
            g = mention.ground
            if g is not None and g.kind == "box" and not (g.value[0] < g.value[2] and g.value[1] < g.value[3]):
                return False
            if g is not None and g.kind == "polygons":
                return False  # collinear polygons parse but the codec drops them
    return True
