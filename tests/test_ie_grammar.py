"""The IE grammar constraint: hand-checked masks, random walks and untrained beam search that always parse,
training masks that allow every gold token, and the per-batch binding through the base task."""
import random
from argparse import Namespace

import pytest
import torch
from fairseq.data import data_utils
from fairseq.sequence_generator import SequenceGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import build_model, build_task
from tasks.base import collate_media
from geometry.codec import LocationCodec
from decoding.constraints import ConstrainedEnsemble, Constraint, FixedLengthRange
from ie.records import Argument, Entity, Event, Ground, Mention, Relation, mentions_of
from ie.grammar import IEGrammar, grammar_context
from ie.tokens import Frame, label_ids, parse, serialise
from data.vocab import Vocabulary

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

MAX_VERTICES = 6
SCHEMA = {"entity": ["person", "animal", "location"], "relation": ["rides", "located in"],
          "event": ["movement", "attack"], "role": ["agent", "place", "vehicle"]}


@pytest.fixture(scope="module")
def vocab(vocab_dir):
    return Vocabulary(str(vocab_dir))


@pytest.fixture(scope="module")
def codec():
    return LocationCodec(max_poly_vertices=MAX_VERTICES)


def ids_of(mask):
    return set(mask.nonzero().flatten().tolist())


def pieces(vocab, text):
    return [t for t in vocab.encode_text(text) if not vocab.is_blank(t)]


# ---- an independent check of a generated target ----------------------------------------------------


def mention_runs(vocab, tokens):
    """The text runs that follow <is>, <head>, <tail> and <trg>: the mentions."""
    openers = {vocab.ie(n) for n in ("is", "head", "tail", "trg")}
    runs, current = [], None
    for t in tokens:
        if vocab.is_text(t) and current is not None:
            current.append(t)
            continue
        if current:
            runs.append(current)
        current = [] if t in openers else None
    if current:
        runs.append(current)
    return runs


def polygon_lengths(vocab, tokens):
    """Bins after each <poly>, up to the next token that is not a bin."""
    lengths, current = [], None
    for t in tokens:
        if t == vocab.poly:
            if current is not None:
                lengths.append(current)
            current = 0
        elif vocab.to_bin(t) is not None and current is not None:
            current += 1
        elif current is not None:
            lengths.append(current)
            current = None
    return lengths + ([current] if current is not None else [])


def check_target(tokens, vocab, codec, schema, source, image, clip, max_length):
    """Everything the grammar promises of one generated target (no EOS)."""
    assert len(tokens) <= max_length
    frame = Frame((640, 480) if image else None, 30.0 if clip else None)
    records, malformed = parse(tokens, vocab, codec, frame)
    assert malformed == 0, vocab.dictionary.string(torch.tensor(tokens))
    for record in records:
        label = record.label if isinstance(record, Relation) else record.type
        kind = {Entity: "entity", Relation: "relation", Event: "event"}[type(record)]
        assert label in schema.get(kind, []), (kind, label)
        if isinstance(record, Event):
            assert all(a.role in schema.get("role", []) for a in record.arguments)
        mentions = {Entity: lambda r: [r.mention], Relation: lambda r: [r.head, r.tail],
                    Event: lambda r: [r.trigger] + [a.mention for a in r.arguments]}[type(record)](record)
        for mention in mentions:
            assert mention.text
            if mention.ground is not None:
                assert mention.ground.kind in (["box", "polygons"] if image else []) + (["span"] if clip else [])
    runs = mention_runs(vocab, tokens)
    assert len(runs) == sum(t in {vocab.ie(n) for n in ("is", "head", "tail", "trg")} for t in tokens)
    for run in runs:
        assert not vocab.is_blank(run[0])
        assert "\ufffd" not in vocab.decode_text(run)  # whole characters: no byte piece cut off
        if source:
            assert any(source[i:i + len(run)] == run for i in range(len(source))), run
    assert all(2 * 3 <= n <= 2 * MAX_VERTICES and n % 2 == 0 for n in polygon_lengths(vocab, tokens))
    return records


# ---- hand-checked masks ----------------------------------------------------------------------------


def test_masks_follow_the_grammar_step_by_step(vocab):
    ie = vocab.ie_ids()
    eos = vocab.dictionary.eos()
    text = pieces(vocab, "a man rides a horse")
    context = grammar_context(vocab, {"entity": ["person"], "event": ["movement"], "role": ["agent"]},
                              source_ids=text, has_image=True)
    grammar = IEGrammar(vocab, max_length=None, max_vertices=MAX_VERTICES).for_batch([{"ie_context": context}])

    def allowed(prefix):
        return ids_of(grammar.allowed(torch.tensor([prefix], dtype=torch.long).view(1, len(prefix)),
                                      torch.tensor([0]))[0])

    bins = set(range(vocab.first_bin, vocab.first_bin + vocab.num_bins))
    assert allowed([]) == {eos, ie["ent"], ie["evt"]}  # no relation labels offered
    person, movement = pieces(vocab, "person"), pieces(vocab, "movement")
    assert allowed([ie["ent"]]) == {person[0]}
    assert allowed([ie["ent"]] + person) == {ie["is"]}
    mention_start = allowed([ie["ent"]] + person + [ie["is"]])
    assert mention_start == set(text)  # the source's pieces, none blank
    after_word = allowed([ie["ent"]] + person + [ie["is"], text[0]])
    following = {text[i + 1] for i in range(len(text) - 1) if text[i] == text[0]}
    assert after_word == following | bins | {vocab.poly, eos, ie["ent"], ie["evt"]}  # no clip: no time tokens
    box = [ie["ent"]] + person + [ie["is"], text[0]] + vocab.bin_ids([40, 30])
    assert allowed(box) == set(vocab.bin_ids(range(40, 1000)))  # x1 >= x0
    assert allowed(box + vocab.bin_ids([50])) == set(vocab.bin_ids(range(30, 1000)))  # y1 >= y0
    assert allowed(box + vocab.bin_ids([50, 60])) == {eos, ie["ent"], ie["evt"]}
    event = [ie["evt"]] + movement + [ie["trg"], text[2]]
    assert ie["arg"] in allowed(event) and ie["arg"] not in allowed(box + vocab.bin_ids([50, 60]))
    polygon = event + [vocab.poly] + vocab.bin_ids([1, 2, 3, 4, 5])
    assert allowed(polygon) == bins
    closed = allowed(polygon + vocab.bin_ids([6]))
    assert closed == bins | {vocab.poly, eos, ie["ent"], ie["evt"], ie["arg"]}
    full = polygon + vocab.bin_ids([6] + [7] * (2 * MAX_VERTICES - 6))
    assert allowed(full) == {vocab.poly, eos, ie["ent"], ie["evt"], ie["arg"]}  # the vertex budget is spent
    assert allowed([ie["rel"]]) == {eos}  # off the grammar (a relation is not offered): EOS only


def test_mentions_start_and_end_on_whole_characters(vocab):
    """Characters outside the vocabulary are byte pieces: "ë" is <0xC3> <0xAB>, "中" three bytes."""
    ie = vocab.ie_ids()
    eos = vocab.dictionary.eos()
    source = vocab.encode_text(" Zoë ate 中")
    lead, continuation = vocab.dictionary.index("<0xC3>"), vocab.dictionary.index("<0xAB>")
    assert lead in source and continuation in source
    cut = source[:-1]  # the text cut inside its last character (a prompt cut at --max-src-length)
    context = grammar_context(vocab, {"entity": ["person"]}, cut)
    grammar = IEGrammar(vocab, max_length=None, max_vertices=MAX_VERTICES).for_batch([context])
    entity = [ie["ent"]] + label_ids("person", vocab) + [ie["is"]]

    def allowed(prefix):
        return ids_of(grammar.allowed(torch.tensor([prefix]), torch.tensor([0]))[0])

    starts = allowed(entity)
    assert lead in starts and continuation not in starts  # never from inside a character
    assert not {t for t in cut[-3:] if vocab.byte_value(t) is not None and vocab.byte_value(t) >= 0xE0} & starts
    assert allowed(entity + [lead]) == {continuation}  # "ë" must be finished before anything else
    after = allowed(entity + [lead, continuation])
    assert eos in after and ie["ent"] in after
    # free text: the same rules over the whole vocabulary
    free = IEGrammar(vocab, max_length=None, max_vertices=MAX_VERTICES).for_batch(
        [grammar_context(vocab, {"entity": ["person"]}, None)])
    first = ids_of(free.allowed(torch.tensor([entity]), torch.tensor([0]))[0])
    assert lead in first and continuation not in first
    continuations = {i for i in range(len(vocab.dictionary))
                     if vocab.byte_value(i) is not None and 0x80 <= vocab.byte_value(i) < 0xC0}
    assert ids_of(free.allowed(torch.tensor([entity + [lead]]), torch.tensor([0]))[0]) == continuations
    # written from the source, "Zoë" parses back whole
    tokens = serialise([Entity("person", Mention("Zoë"))], vocab, LocationCodec(), Frame(), source_ids=source)
    masks = IEGrammar(vocab, 30, MAX_VERTICES).for_batch([grammar_context(vocab, {"entity": ["person"]}, source)]
                                                          ).training_masks(torch.tensor([tokens + [eos]]))
    assert masks[0].gather(1, torch.tensor(tokens + [eos])[:, None]).all() and not masks[0].all(1).any()
    assert parse(tokens, vocab, LocationCodec(), Frame())[0] == [Entity("person", Mention("Zoë"))]


def test_context_options_narrow_the_grammar(vocab):
    from ie.records import Schema
    ie = vocab.ie_ids()
    eos = vocab.dictionary.eos()
    text = vocab.encode_text(" a man rides a horse")
    schema = {"entity": ["person"], "relation": [], "event": ["movement"], "role": []}

    def mask(context, prefix):
        grammar = IEGrammar(vocab, 40, MAX_VERTICES).for_batch([context])
        return ids_of(grammar.allowed(torch.tensor([prefix], dtype=torch.long).view(1, len(prefix)),
                                      torch.tensor([0]))[0])

    entity = [ie["ent"]] + label_ids("person", vocab) + [ie["is"], text[-1]]
    as_dict = grammar_context(vocab, schema, text, has_image=True, has_clip=True)
    as_schema = grammar_context(vocab, Schema(**schema), text, has_image=True, has_clip=True)
    assert mask(as_dict, entity) == mask(as_schema, entity)
    assert {vocab.poly, vocab.first_bin, vocab.first_time} <= mask(as_dict, entity)
    boxes_only = mask(grammar_context(vocab, schema, text, True, True, grounds=("box",)), entity)
    assert vocab.first_bin in boxes_only and vocab.poly not in boxes_only and vocab.first_time not in boxes_only
    assert mask(as_dict, []) == {eos, ie["ent"], ie["evt"]}  # an empty kind is not offered
    # text with no piece to copy: no records at all; no text at all: free mentions
    assert mask(grammar_context(vocab, schema, [vocab.dictionary.unk(), text[0]] if vocab.is_blank(text[0])
                                else [vocab.dictionary.unk()]), []) == {eos}
    free = mask(grammar_context(vocab, schema, []), entity[:-1])
    assert len(free) > 100 and all(vocab.is_text(t) and not vocab.is_blank(t) for t in free)


def test_length_budget_keeps_eos_reachable(vocab):
    ie = vocab.ie_ids()
    eos = vocab.dictionary.eos()
    person, located = label_ids("person", vocab), label_ids("located in", vocab)
    assert len(located) > len(person)
    context = grammar_context(vocab, {"entity": ["person"], "relation": ["located in"]}, None, has_image=True,
                              has_clip=True)
    need_entity = 1 + len(person) + 1 + 1  # <ent> person <is> one piece
    need_relation = 1 + len(located) + 1 + 1 + 1 + 1  # <rel> located in <head> M <tail> M

    def allowed(prefix, max_length):
        grammar = IEGrammar(vocab, max_length=max_length, max_vertices=MAX_VERTICES).for_batch([context])
        return ids_of(grammar.allowed(torch.tensor([prefix], dtype=torch.long).view(1, len(prefix)),
                                      torch.tensor([0]))[0])

    assert allowed([], need_entity - 1) == {eos}
    assert allowed([], need_entity) == {eos, ie["ent"]}
    assert allowed([], need_relation) == {eos, ie["ent"], ie["rel"]}
    entity = [ie["ent"]] + person + [ie["is"]]
    word = pieces(vocab, "horse")[0]
    # a mention piece, then: a box needs 4 tokens, a span 2, a mask 7
    after = allowed(entity + [word], len(entity) + 1 + 2)
    assert {vocab.first_time, eos} <= after and vocab.first_bin not in after and vocab.poly not in after
    after = allowed(entity + [word], len(entity) + 1 + 4)
    assert vocab.first_bin in after and vocab.poly not in after
    assert allowed(entity + [word], len(entity) + 1) == {eos}
    relation_head = [ie["rel"]] + located + [ie["head"], word]
    assert allowed(relation_head, len(relation_head) + 2) == {ie["tail"]}  # the tail still needs <tail> M
    assert allowed(relation_head, len(relation_head) + 1) == {eos}  # cannot be: the budget never lets it start


# ---- random walks ----------------------------------------------------------------------------------

contexts = st.fixed_dictionaries({
    "schema": st.fixed_dictionaries({k: st.lists(st.sampled_from(v), unique=True, max_size=3)
                                     for k, v in SCHEMA.items()}),
    "text": st.sampled_from([None, "a man rides a horse near the river", "Zoë attacked 3 guards at the gate",
                             "the cat"]),
    "image": st.booleans(), "clip": st.booleans(), "max_length": st.integers(0, 60)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=contexts, seed=st.integers(0, 2 ** 31))
def test_random_walks_through_the_masks_always_parse(vocab, codec, case, seed):
    rng = random.Random(seed)
    source = pieces(vocab, case["text"]) if case["text"] else None
    context = grammar_context(vocab, case["schema"], source, case["image"], case["clip"])
    grammar = IEGrammar(vocab, case["max_length"], MAX_VERTICES).for_batch([context])
    eos = vocab.dictionary.eos()
    tokens = []
    while True:
        mask = grammar.allowed(torch.tensor([tokens], dtype=torch.long).view(1, len(tokens)), torch.tensor([0]))[0]
        choices = sorted(ids_of(mask))
        assert choices, tokens
        # favour structure: pick EOS rarely, so walks get long
        token = rng.choice([c for c in choices if c != eos] or [eos]) if rng.random() < 0.95 else rng.choice(choices)
        if token == eos:
            break
        tokens.append(token)
        assert len(tokens) <= case["max_length"]
    check_target(tokens, vocab, codec, case["schema"], source, case["image"], case["clip"], case["max_length"])


def test_a_mention_of_a_unicode_space_written_in_bytes_parses(vocab, codec):
    """The grammar lets a mention start with lead byte 0xC2 then 0x85, U+0085, which str.split() takes for
    whitespace (a random walk found it): the parser keeps it rather than counting a malformed record."""
    space = [vocab.dictionary.index(p) for p in ("<0xC2>", "<0x85>")]
    tokens = [vocab.ie("ent"), *pieces(vocab, "person"), vocab.ie("is"), *space]
    records, malformed = parse(tokens, vocab, codec, Frame(None, None))
    assert malformed == 0 and [r.mention.text for r in records] == ["\x85"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), case=contexts)
def test_any_prefix_gets_a_non_empty_mask_and_any_target_finite_training_masks(vocab, data, case):
    """Beam search carries hypotheses pushed off the grammar (score -inf) with arbitrary tokens."""
    ie = list(vocab.ie_ids().values())
    pool = st.sampled_from(list(range(vocab.dictionary.nspecial)) + ie * 3 + [vocab.poly] * 3
                           + vocab.bin_ids([0, 7, 999]) * 2 + vocab.time_ids([0, 5, 99])
                           + pieces(vocab, "a man rides a horse near the river person"))
    prefixes = data.draw(st.lists(st.lists(pool, min_size=6, max_size=6), min_size=1, max_size=4))
    source = pieces(vocab, case["text"]) if case["text"] else None
    context = grammar_context(vocab, case["schema"], source, case["image"], case["clip"])
    other = grammar_context(vocab, SCHEMA, None, True, True)
    grammar = IEGrammar(vocab, case["max_length"], MAX_VERTICES).for_batch([context, other] * 2)
    rows = torch.arange(len(prefixes))
    for t in range(7):  # step by step, so the memoised states are used too
        masks = grammar.allowed(torch.tensor(prefixes)[:, :t], rows)
        assert masks.shape == (len(prefixes), len(vocab.dictionary)) and masks.any(1).all()
    target = torch.tensor(prefixes)
    masks = grammar.for_batch(([context, other] * 2)[:len(prefixes)]).training_masks(target)
    assert masks.gather(2, target[:, :, None]).all()


# ---- training masks --------------------------------------------------------------------------------


def example_records():
    frame = Frame((64, 64), 12.0)
    records = [
        Entity("person", Mention("man", Ground("box", (4.0, 5.0, 30.0, 60.0)))),
        Relation("rides", Mention("man"), Mention("a horse", Ground("span", (1.0, 7.5)))),
        Event("movement", Mention("rides", Ground("polygons", ((2.0, 2.0, 40.0, 3.0, 30.0, 50.0),))),
              (Argument("agent", Mention("man")), Argument("vehicle", Mention("horse", Ground("box", (1, 1, 9, 9)))))),
        Entity("location", Mention("river")),
    ]
    return records, frame, "a man rides a horse near the river"


def test_training_masks_allow_every_gold_token_even_at_the_exact_length_budget(vocab, codec):
    records, frame, text = example_records()
    source = vocab.encode_text(" extract: " + text)
    target = serialise(records, vocab, codec, frame, source_ids=source) + [vocab.dictionary.eos()]
    context = grammar_context(vocab, SCHEMA, source, has_image=True, has_clip=True)
    free = grammar_context(vocab, SCHEMA, None, has_image=True, has_clip=True)
    grammar = IEGrammar(vocab, max_length=len(target) - 1, max_vertices=MAX_VERTICES)
    pad = vocab.dictionary.pad()
    short = serialise(records[:1], vocab, codec, frame, source_ids=source) + [vocab.dictionary.eos()]
    batch = torch.tensor([target, short + [pad] * (len(target) - len(short)), target])
    masks = grammar.for_batch([{"ie_context": context}, {"ie_context": context}, {"ie_context": free}]).training_masks(
        batch)
    assert masks.shape == (3, len(target), len(vocab.dictionary))
    assert masks.gather(2, batch[:, :, None]).all()
    # constrained, not the fallback: every position of the gold targets allows less than the vocabulary
    assert (masks[0].sum(1) < len(vocab.dictionary)).all() and (masks[2].sum(1) < len(vocab.dictionary)).all()
    assert masks[0, 0].sum() == 4  # EOS and the three record kinds
    # the same masks as asking allowed() for each gold prefix
    bound = grammar.for_batch([context, context, free])
    stepwise = Constraint.training_masks(bound, batch)
    assert torch.equal(masks[:, :, :][batch.ne(pad)], stepwise[batch.ne(pad)])


def test_training_masks_fall_back_where_the_gold_leaves_the_grammar_and_keep_it_after(vocab, codec):
    ie = vocab.ie_ids()
    records = [Entity("person", Mention("Berlin")), Entity("animal", Mention("horse"))]
    source = pieces(vocab, "a man rides a horse")
    target = serialise(records, vocab, codec, Frame(), source_ids=source) + [vocab.dictionary.eos()]
    context = grammar_context(vocab, {"entity": ["person", "animal"]}, source)
    masks = IEGrammar(vocab, 40, MAX_VERTICES).for_batch([context]).training_masks(torch.tensor([target]))[0]
    berlin = target.index(ie["is"]) + 1
    assert masks[berlin].all()  # "Berlin" is not in the source: every token, so the loss stays finite
    second = target.index(ie["ent"], 1)
    # the next record is constrained again: its type from the schema
    assert ids_of(masks[second + 1]) == {pieces(vocab, "person")[0], pieces(vocab, "animal")[0]}
    assert masks.gather(1, torch.tensor(target)[:, None]).all()


def test_a_bound_grammar_and_its_contexts_survive_pickling(vocab, codec):
    """DataLoader workers collate: the grammar and the metas' contexts cross processes."""
    import pickle
    records, frame, text = example_records()
    source = vocab.encode_text(text)
    target = torch.tensor([serialise(records, vocab, codec, frame, source_ids=source) + [vocab.dictionary.eos()]])
    context = grammar_context(vocab, SCHEMA, source, True, True)
    grammar = IEGrammar(vocab, 60, MAX_VERTICES)
    expected = grammar.for_batch([{"ie_context": context}]).training_masks(target)
    copied, meta = pickle.loads(pickle.dumps((grammar, {"ie_context": context})))
    assert torch.equal(copied.for_batch([meta]).training_masks(target), expected)


def test_memoised_states_equal_fresh_walks_under_beam_reordering(vocab):
    rng = random.Random(1)
    source = pieces(vocab, "a man rides a horse near the river")
    context = grammar_context(vocab, SCHEMA, source, True, True)
    other = grammar_context(vocab, {"entity": ["animal"]}, None, False, True)
    grammar = IEGrammar(vocab, 50, MAX_VERTICES).for_batch([context, other])
    fresh = IEGrammar(vocab, 50, MAX_VERTICES).for_batch([context, other])
    rows = torch.tensor([0, 0, 0, 1, 1, 1])
    prefix = torch.zeros(6, 0, dtype=torch.long)
    for step in range(30):
        masks = grammar.allowed(prefix, rows)
        assert torch.equal(masks, torch.cat([fresh.masks([fresh.walk(p.tolist(), fresh.contexts[r])], [r],
                                                         [50 - step], "cpu") for p, r in zip(prefix, rows.tolist())]))
        # beams reorder within their sentence, then each takes an allowed token
        order = torch.tensor([rng.choice([0, 1, 2]) for _ in range(3)] + [rng.choice([3, 4, 5]) for _ in range(3)])
        prefix, masks = prefix[order], masks[order]
        nxt = torch.tensor([rng.choice(sorted(ids_of(m))) for m in masks])
        prefix = torch.cat([prefix, nxt[:, None]], 1)


# ---- beam search with an untrained model -----------------------------------------------------------


def ie_samples(vocab, codec):
    """Four samples: text only, an image alone, text with a video, text with an image and audio."""
    torch.manual_seed(0)
    records, frame, text = example_records()
    specs = [
        ("text", "a man rides a horse near the river", False, False, SCHEMA),
        ("image", None, True, False, {"entity": ["person", "animal"], "relation": ["rides"]}),
        ("video", "Zoë attacked 3 guards at the gate", False, True, {"event": ["attack"], "role": ["agent", "place"]}),
        ("image+audio", "the cat sat on the mat", True, True, SCHEMA),
    ]
    samples = []
    for i, (name, sentence, image, clip, schema) in enumerate(specs):
        prompt = vocab.encode_text(" extract: " + ", ".join(l for ls in schema.values() for l in ls))
        text_ids = vocab.encode_text(" " + sentence) if sentence else []
        source = torch.tensor(prompt + text_ids + [vocab.dictionary.eos()])
        context = grammar_context(vocab, schema, text_ids or None, has_image=image, has_clip=clip)
        gold = [r for r in records if isinstance(r, Entity) and r.type in schema.get("entity", [])
                and (sentence is None or r.mention.text in sentence)
                and (r.mention.ground is None or image or r.mention.ground.kind == "span" and clip)]
        target = serialise(gold, vocab, codec, Frame((64, 64) if image else None, 12.0 if clip else None),
                           source_ids=text_ids or None)
        sample = {"id": i, "source": source, "target": torch.tensor(target + [vocab.dictionary.eos()]),
                  "meta": {"uniq_id": name, "references": ["x"], "ie_context": context,
                           "check": (schema, text_ids, image, clip)}}
        if image:
            sample["image"] = torch.randn(3, 64, 64)
        if name == "video":
            sample["video"], sample["video_times"] = torch.randn(4, 3, 32, 32), torch.linspace(0.1, 0.9, 4)
        if name == "image+audio":
            sample["audio"] = torch.randn(120, 64)
        samples.append(sample)
    return samples


def net_input(samples, vocab):
    pad, eos = vocab.dictionary.pad(), vocab.dictionary.eos()
    sources = [s["source"] for s in samples]
    return {"id": torch.tensor([s["id"] for s in samples]), "meta": [s["meta"] for s in samples],
            "net_input": {"src_tokens": data_utils.collate_tokens(sources, pad, eos),
                          "src_lengths": torch.tensor([len(s) for s in sources]), **collate_media(samples)}}


@pytest.fixture(scope="module")
def caption_task(demo_dir, vocab_dir):
    return build_task("caption", f"{demo_dir}/caption_valid.tsv", vocab_dir)


@pytest.fixture(scope="module")
def model(caption_task):
    torch.manual_seed(0)
    return build_model(caption_task).eval()


def check_hypotheses(hypotheses, samples, vocab, codec, beam, max_length):
    eos = vocab.dictionary.eos()
    kinds = set()
    for hyps, sample in zip(hypotheses, samples):
        assert len(hyps) == beam
        schema, text_ids, image, clip = sample["meta"]["check"]
        for hyp in hyps:
            tokens = hyp["tokens"].tolist()
            assert tokens[-1] == eos and eos not in tokens[:-1]
            records = check_target(tokens[:-1], vocab, codec, schema, text_ids, image, clip, max_length)
            kinds.update(type(r) for r in records)
            kinds.update(m.ground.kind for r in records for m in mentions_of(r) if m.ground is not None)
    return kinds


def test_beam_search_from_an_untrained_model_gives_only_targets_that_parse(vocab, codec, model):
    samples = ie_samples(vocab, codec)
    batch = net_input(samples, vocab)
    ensemble = ConstrainedEnsemble([model], IEGrammar(vocab, max_length=40, max_vertices=MAX_VERTICES))
    ensemble.bind(batch["meta"])
    generator = SequenceGenerator(ensemble, vocab.dictionary, beam_size=5, max_len_b=40)
    with torch.no_grad():
        hypotheses = generator.generate([model], batch)
    kinds = check_hypotheses(hypotheses, samples, vocab, codec, 5, 40)
    assert kinds & {Entity, Relation, Event}  # the untrained model does write records, not just EOS
    # unconstrained, the same model writes targets that do not parse
    plain = SequenceGenerator([model], vocab.dictionary, beam_size=5, max_len_b=40)
    with torch.no_grad():
        unconstrained = plain.generate([model], batch)
    assert any(parse(h[0]["tokens"][:-1].tolist(), vocab, codec, Frame((64, 64), 1.0))[1] or
               h[0]["tokens"][0] not in vocab.ie_ids().values() for h in unconstrained)


def test_the_base_task_binds_each_batch_for_training_masks_and_generation(vocab, codec, caption_task, model,
                                                                          monkeypatch):
    """Any UniGround task whose constraint reads per-sample contexts: the caption task stands in for one."""
    task = caption_task
    monkeypatch.setattr(task, "build_constraint",
                        lambda: IEGrammar(vocab, max_length=task.cfg.max_tgt_length - 1, max_vertices=MAX_VERTICES))
    task.forget_constraint()
    try:
        samples = ie_samples(vocab, codec)
        batch = task.collate(samples)
        masks = batch["constraint_masks"]
        assert masks.shape == (*batch["target"].shape, len(vocab.dictionary))
        keep = batch["target"].ne(vocab.dictionary.pad())
        assert masks.gather(2, batch["target"][:, :, None]).squeeze(2)[keep].all()
        assert (masks.sum(2)[keep] < len(vocab.dictionary)).all()  # the grammar, not the fallback
        generator = task.build_generator([model], Namespace(beam=5, max_len_b=task.cfg.max_tgt_length - 1))
        for order in ([0, 1, 2, 3], [3, 2, 1, 0]):  # the same generator, batches of other samples
            subset = [samples[i] for i in order]
            hypotheses = task.inference_step(generator, [model], task.collate(subset))
            check_hypotheses(hypotheses, subset, vocab, codec, 5, task.cfg.max_tgt_length - 1)
    finally:
        monkeypatch.undo()
        task.forget_constraint()  # the caption task's own again


def test_for_batch_is_the_identity_for_other_constraints_and_ie_needs_contexts(vocab):
    plain = FixedLengthRange(vocab.first_time, vocab.num_time_bins, 2, vocab.dictionary.eos(), len(vocab.dictionary))
    assert plain.for_batch([{"uniq_id": 1}]) is plain
    ensemble = ConstrainedEnsemble([torch.nn.Linear(1, 1)], plain)
    ensemble.bind([{}])
    assert ensemble.constraint is plain
    grammar = IEGrammar(vocab, 10)
    with pytest.raises(RuntimeError, match="for_batch"):
        grammar.allowed(torch.zeros(1, 0, dtype=torch.long), torch.tensor([0]))
    with pytest.raises(ValueError, match="sample 1 of the batch has no \"ie_context\""):
        grammar.for_batch([{"ie_context": grammar_context(vocab, SCHEMA)}, {"uniq_id": "x"}])
    with pytest.raises(ValueError, match="schema kinds must be among"):
        grammar_context(vocab, {"entities": ["person"]})
