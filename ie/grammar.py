"""The IE target grammar as an output constraint: every sequence it lets through parses.

``IEGrammar`` is a ``Constraint`` (decoding/constraints.py): the grammar of ie/tokens.py, plus
what each sample offers, from its ``IEContext`` (``grammar_context``), bound per batch with
``for_batch(metas)`` (each meta's ``"ie_context"``):

- structure tokens only where the grammar has them, record kinds only those the schema offers;
- types, labels and roles only from the sample's schema: one small token trie per kind and schema,
  each label ending in the structure token that follows it (``<is>``, ``<head>``, ``<trg>``),
  shared by every sample that offers the same labels;
- mentions of at least one piece, none starting blank, starting and ending on whole characters
  (SentencePiece's byte pieces spell a character in 2 to 4 UTF-8 bytes): copied from the sample's
  source text (a contiguous run of its ids) when it has text, any text pieces when it has none;
- grounds only of the kinds the sample's media allow: a box (4 bins, x1 >= x0, y1 >= y0) or a mask
  (``<poly>`` groups of 3 to ``max_vertices`` (x, y) pairs) with an image, a span (2 time tokens,
  end >= start) with a clip;
- a length budget: with ``max_length`` (the most tokens before EOS; the generator's limit must be
  no smaller) a token is allowed only if the shortest way from it to a complete target fits, so
  EOS is always reachable in time and fairseq never stops a hypothesis inside a record.

The state of a hypothesis (where it is in the grammar, which source positions its mention can
continue from) is a pure function of its prefix. It is kept per row between calls: fairseq
reorders beams every step, so a row is matched to the previous call's rows by a hash of its prefix
(verified token by token, so a collision can never give a wrong state) and advanced by its last
token; a row without a match is walked from the start. The masks of a state are cached per batch.
"""
import copy
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import torch

from decoding.constraints import Constraint
from decoding.polygon import polygon_closable, polygon_moves
from geometry.codec import MIN_VERTICES
from ie.records import SCHEMA_KEYS
from ie.tokens import label_ids

GROUND_KINDS = ("box", "polygons", "span")

# label kinds, in ie.records.SCHEMA_KEYS order
ENTITY_KIND, RELATION_KIND, EVENT_KIND, ROLE_KIND = range(4)
# mention slots
ENTITY, HEAD, TAIL, TRIGGER, ARGUMENT = range(5)
SLOT_OF_KIND = (ENTITY, HEAD, TRIGGER, ARGUMENT)
TERMINATOR_OF_KIND = ("is", "head", "trg", "is")
AFTER_SLOT = (0, 2, 0, 0, 0)  # fewest tokens after a complete mention of a slot: a relation still needs <tail> M
# grammar phases; a state is a tuple starting with its phase
FOLLOW, LABEL, MENTION, BOX, POLY, SPAN, DEAD = range(7)
DEAD_STATE = (DEAD,)
START_STATE = (FOLLOW, ENTITY)  # a record boundary: the same choices as after an entity
END = -2  # the label trie's node after the terminator
_HASH_SEED = 20240607
# UTF-8 roles of byte pieces (other text pieces are whole characters, 0): a lead byte is
# ``owed * 8 + range``, owing 1-3 continuation bytes, the first of them in CONTINUATION_RANGES[range]
# (which rules out overlong forms and surrogates); a mention's ``pending`` has the same form
CONTINUATION, INVALID_BYTE = -1, -2
CONTINUATION_RANGES = ((0x80, 0xBF), (0xA0, 0xBF), (0x80, 0x9F), (0x90, 0xBF), (0x80, 0x8F))
NEVER = 1 << 20  # tokens to a character's end where it never ends
# free-text modes of a mention's next piece (rows of IEGrammar's text masks); the continuation
# bytes of each range follow CONTINUATION_TEXT
NO_TEXT, START_TEXT, START_TEXT_SHORT, MORE_TEXT, MORE_TEXT_SHORT, CONTINUATION_TEXT = range(6)


# ---- per-sample context --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LabelTable:
    """A token trie of one kind's labels, each followed by its terminator token.

    ``children[node]``: {token: child node} (``END`` after the terminator); ``rest[node]``: the
    fewest tokens from ``node`` through the terminator; ``options[node]``: ((token, rest of the
    child), ...) for the masks."""

    labels: tuple
    terminator: int
    children: tuple
    rest: tuple
    options: tuple


@lru_cache(maxsize=1024)
def label_table(vocab, labels, terminator):
    """The ``LabelTable`` of ``labels`` (each encoded as ``ie.tokens.label_ids`` writes it),
    cached: samples offering the same labels share one."""
    children = [{}]
    for label in labels:
        node = 0
        for token in label_ids(label, vocab, f"schema label {label!r}"):
            child = children[node].get(token)
            if child is None:
                child = children[node][token] = len(children)
                children.append({})
            node = child
        children[node][terminator] = END
    rest = [0] * len(children)
    for node in reversed(range(len(children))):  # children are numbered after their parents
        rest[node] = 1 + min(0 if child == END else rest[child] for child in children[node].values())
    options = tuple(tuple((token, 0 if child == END else rest[child]) for token, child in c.items())
                    for c in children)
    return LabelTable(tuple(labels), terminator, tuple(children), tuple(rest), options)


@lru_cache(maxsize=8)
def utf8_roles(vocab):
    """{id: role} of the vocabulary's byte pieces: 0 a whole (ASCII) character, a lead byte
    (``owed * 8 + range``), ``CONTINUATION``, or ``INVALID_BYTE`` (never in UTF-8)."""
    roles = {}
    for index in range(vocab.dictionary.nspecial, vocab.first_bin):
        byte = vocab.byte_value(index)
        if byte is not None:
            roles[index] = _byte_role(byte)
    return roles


def _byte_role(byte):
    if byte < 0x80:
        return 0
    if byte < 0xC0:
        return CONTINUATION
    if 0xC2 <= byte < 0xE0:
        return 8
    if 0xE0 <= byte < 0xF0:
        return 16 + {0xE0: 1, 0xED: 2}.get(byte, 0)
    if 0xF0 <= byte < 0xF5:
        return 24 + {0xF0: 3, 0xF4: 4}.get(byte, 0)
    return INVALID_BYTE


def _owed(roles, pending, token):
    """What a mention owes after ``token`` when it owed ``pending`` before it (0: a whole character)."""
    role = roles.get(token, 0)
    if role == CONTINUATION:
        owed = pending // 8 - 1
        return owed * 8 if owed > 0 else 0
    return role if role > 0 else 0


@dataclass(frozen=True, eq=False)
class IEContext:
    """What one sample offers the grammar. ``tables``: a ``LabelTable`` or None per kind (entity,
    relation, event, role); ``source``: the text ids mentions are copied from, or None for free
    text; ``to_end``: per source position, the pieces after it to the end of its character (0 where
    it ends one, ``NEVER`` for a character the text cuts off); ``occurrences``: {id: positions in
    source} where a mention may start (not blank, not inside a character); ``start_need``: {id: the
    fewest pieces after it to a character's end}; ``grounds``: the ground kinds allowed;
    ``can_mention``: False where the text has no piece a mention could start with; ``left_cap``: a
    length budget past every threshold of the masks."""

    tables: tuple
    source: Optional[tuple]
    to_end: tuple
    occurrences: dict
    start_need: dict
    grounds: frozenset
    can_mention: bool
    left_cap: int


def grammar_context(vocab, schema_labels, source_ids=None, has_image=False, has_clip=False, grounds=None):
    """The ``IEContext`` of one sample, to put in its meta as ``"ie_context"``.

    ``schema_labels``: the labels the prompt offers, {kind: [label, ...]} with kinds among
    "entity", "relation", "event", "role" (or a ``ie.records.Schema``); a kind left out or empty
    is not generated. ``source_ids``: the ids of the sample's text as they stand in the prompt
    (the text alone, not the instruction or the schema): mentions are copied from them; None or
    empty for a sample without text (mentions are then free text). ``has_image`` allows box and
    mask grounds, ``has_clip`` span grounds; ``grounds`` (a subset of "box", "polygons", "span")
    narrows that further."""
    if not isinstance(schema_labels, dict):
        schema_labels = {key: getattr(schema_labels, key) for key in SCHEMA_KEYS}
    unknown = set(schema_labels) - set(SCHEMA_KEYS)
    if unknown:
        raise ValueError(f"schema kinds must be among {', '.join(SCHEMA_KEYS)}, got {sorted(unknown)}")
    tables = []
    for kind, key in enumerate(SCHEMA_KEYS):
        labels = tuple(dict.fromkeys(schema_labels.get(key) or ()))
        tables.append(label_table(vocab, labels, vocab.ie(TERMINATOR_OF_KIND[kind])) if labels else None)
    allowed = set()
    if has_image:
        allowed |= {"box", "polygons"}
    if has_clip:
        allowed.add("span")
    if grounds is not None:
        if set(grounds) - set(GROUND_KINDS):
            raise ValueError(f"ground kinds must be among {', '.join(GROUND_KINDS)}, got {sorted(grounds)}")
        allowed &= set(grounds)
    source, to_end, occurrences, start_need, can_mention = None, (), {}, {}, True
    if source_ids is not None and len(source_ids):
        source = tuple(int(i) for i in source_ids)
        to_end = character_ends(source, vocab)
        roles = utf8_roles(vocab)
        for position, token in enumerate(source):
            if (vocab.is_text(token) and not vocab.is_blank(token) and roles.get(token, 0) != CONTINUATION
                    and to_end[position] < NEVER):
                occurrences.setdefault(token, []).append(position)
                start_need[token] = min(start_need.get(token, NEVER), to_end[position])
        occurrences = {token: tuple(p) for token, p in occurrences.items()}
        can_mention = bool(occurrences)
    rests = [max(table.rest) for table in tables if table is not None] or [0]
    left_cap = max(max(rests) + 4, 2 * MIN_VERTICES + 3)  # past every threshold of IEGrammar.spec
    return IEContext(tuple(tables), source, to_end, occurrences, start_need, frozenset(allowed), can_mention,
                     left_cap)


def character_ends(source, vocab):
    """Per position of ``source``: how many pieces after it its character ends (0: it ends one;
    ``NEVER``: not a text piece, or a character the source breaks or cuts off)."""
    roles = utf8_roles(vocab)
    whole = []
    pending, broken = 0, False
    for token in source:
        if not vocab.is_text(token):
            pending, broken = 0, False
            whole.append(False)
            continue
        role = roles.get(token, 0)
        if role == CONTINUATION:
            broken = broken or pending == 0  # a stray continuation byte
            pending = max(pending - 1, 0)
            whole.append(pending == 0 and not broken)  # (a valid source: it came from valid text)
        elif role == INVALID_BYTE:
            pending, broken = 0, True
            whole.append(False)
        else:
            pending, broken = role // 8, False
            whole.append(role == 0)
    to_end = [NEVER] * len(source)
    for q in reversed(range(len(source))):
        if whole[q]:
            to_end[q] = 0
        elif q + 1 < len(source) and roles.get(source[q + 1]) == CONTINUATION and to_end[q + 1] < NEVER:
            to_end[q] = 1 + to_end[q + 1]
    return tuple(to_end)


# ---- the constraint ------------------------------------------------------------------------------


class IEGrammar(Constraint):
    """The grammar over ``vocab``: ``max_length`` the most tokens before EOS (None: no budget; give
    the generator's limit where it is shorter, ``with_max_length``), ``max_vertices`` per polygon (the
    codec's ``max_poly_vertices``), ``memoise`` the states between steps. ``for_batch(metas)`` binds
    it to a batch; unbound it has no contexts and ``allowed`` refuses."""

    def __init__(self, vocab, max_length=None, max_vertices=32, memoise=True):
        if max_vertices < MIN_VERTICES:
            raise ValueError(f"a polygon needs at least {MIN_VERTICES} vertices, got max_vertices {max_vertices}")
        d = vocab.dictionary
        self.vocab_size, self.eos = len(d), d.eos()
        self.max_length, self.max_vertices, self.memoise = max_length, max_vertices, memoise
        self.ie = vocab.ie_ids()
        self.starts = {self.ie["ent"]: ENTITY_KIND, self.ie["rel"]: RELATION_KIND, self.ie["evt"]: EVENT_KIND}
        self.first_text, self.first_bin, self.num_bins = d.nspecial, vocab.first_bin, vocab.num_bins
        self.first_time, self.num_time_bins, self.poly = vocab.first_time, vocab.num_time_bins, vocab.poly
        self.roles = utf8_roles(vocab)
        self._text_masks = {torch.device("cpu"): self._free_text_masks(vocab)}
        self.contexts = None
        self._memo = None
        self._specs = {}
        self._hash_weights = None

    def _free_text_masks(self, vocab):
        """The text pieces a free-text mention may take next, one row per mode: none; its first piece
        (not blank, not inside a character), with or without lead bytes (which need room for their
        continuations); a later piece (any whole character or lead byte), with or without lead
        bytes; the continuation bytes a character still owes."""
        ids = range(self.first_text, self.first_bin)
        role = torch.tensor([self.roles.get(i, 0) for i in ids])
        byte = torch.tensor([-1 if vocab.byte_value(i) is None else vocab.byte_value(i) for i in ids])
        blank = torch.tensor([vocab.is_blank(i) for i in ids], dtype=torch.bool)
        whole, lead = role == 0, role > 0
        masks = torch.zeros(CONTINUATION_TEXT + len(CONTINUATION_RANGES), len(ids), dtype=torch.bool)
        masks[START_TEXT] = (whole | lead) & ~blank
        masks[START_TEXT_SHORT] = whole & ~blank
        masks[MORE_TEXT] = whole | lead
        masks[MORE_TEXT_SHORT] = whole
        for i, (low, high) in enumerate(CONTINUATION_RANGES):
            masks[CONTINUATION_TEXT + i] = (byte >= low) & (byte <= high)
        return masks

    def with_max_length(self, max_length):
        """The same grammar with another length budget (a generator's shorter limit)."""
        other = copy.copy(self)
        other.max_length, other._memo, other._specs = max_length, None, {}
        return other

    def for_batch(self, contexts):
        """The grammar bound to a batch: ``contexts`` are the samples' metas (their ``"ie_context"``)
        or ``IEContext`` objects, in batch order."""
        bound = copy.copy(self)
        bound.contexts = [c if isinstance(c, IEContext) else _context_of(c, i) for i, c in enumerate(contexts)]
        bound._memo, bound._specs = None, {}
        return bound

    # ---- the grammar, one token at a time ---------------------------------------------------------

    def is_text(self, token):
        return self.first_text <= token < self.first_bin

    def advance(self, state, token, context):
        """The state after ``token``. Purely syntactic (and the copy positions): what a sample does
        not allow is left to the masks, so a gold target outside them keeps its place in training."""
        phase = state[0]
        if phase == FOLLOW:
            slot = state[1]
            if slot == HEAD:
                return (MENTION, TAIL, False, (), 0) if token == self.ie["tail"] else DEAD_STATE
            kind = self.starts.get(token)
            if kind is not None:
                return (LABEL, kind, 0)
            if token == self.ie["arg"] and slot in (TRIGGER, ARGUMENT):
                return (LABEL, ROLE_KIND, 0)
            return DEAD_STATE
        if phase == LABEL:
            kind, node = state[1], state[2]
            table = context.tables[kind]
            terminator = self.ie[TERMINATOR_OF_KIND[kind]]
            if token == terminator:
                return (MENTION, SLOT_OF_KIND[kind], False, (), 0) if node != 0 else DEAD_STATE
            if not self.is_text(token):
                return DEAD_STATE
            child = table.children[node].get(token) if table is not None and node >= 0 else None
            return (LABEL, kind, -1 if child is None or child == END else child)  # -1: a label off the schema
        if phase == MENTION:
            slot, started, positions, pending = state[1:]
            if self.is_text(token):
                owed = _owed(self.roles, pending, token)
                if context.source is None:
                    return (MENTION, slot, True, None, owed)
                if not started:
                    return (MENTION, slot, True, context.occurrences.get(token, ()), owed)
                source = context.source
                return (MENTION, slot, True,
                        tuple(p + 1 for p in positions if p + 1 < len(source) and source[p + 1] == token), owed)
            if not started or pending:
                return DEAD_STATE
            return self._ground_or_follow(slot, token, context)
        if phase == BOX:
            slot, count, x0, y0 = state[1:]
            b = token - self.first_bin
            if not 0 <= b < self.num_bins:
                return DEAD_STATE
            if count == 3:
                return (FOLLOW, slot)
            return (BOX, slot, count + 1, b if count == 0 else x0, b if count == 1 else y0)
        if phase == POLY:
            slot, coords = state[1], state[2]
            if 0 <= token - self.first_bin < self.num_bins:
                return (POLY, slot, coords + 1)
            if not polygon_closable(coords):
                return DEAD_STATE
            if token == self.poly:
                return (POLY, slot, 0)
            return self.advance((FOLLOW, slot), token, context)
        if phase == SPAN:
            return (FOLLOW, state[1]) if 0 <= token - self.first_time < self.num_time_bins else DEAD_STATE
        return DEAD_STATE

    def _ground_or_follow(self, slot, token, context):
        b = token - self.first_bin
        if 0 <= b < self.num_bins:
            return (BOX, slot, 1, b, 0)
        if token == self.poly:
            return (POLY, slot, 0)
        t = token - self.first_time
        if 0 <= t < self.num_time_bins:
            return (SPAN, slot, t)
        return self.advance((FOLLOW, slot), token, context)

    def spec(self, state, context, left):
        """What may follow ``state`` with ``left`` tokens (this one included) before EOS:
        (explicit ids, lowest bin allowed, lowest time allowed, free-text mode: a row of the text masks);
        a bin or time bound past the range allows none."""
        phase = state[0]
        no_bins, no_times = self.num_bins, self.num_time_bins
        if phase == DEAD:  # after EOS, or off the grammar
            return [self.eos], no_bins, no_times, 0
        if phase == FOLLOW:
            return self._follow(state[1], context, left), no_bins, no_times, 0
        if phase == LABEL:
            kind, node = state[1], state[2]
            after = 1 + AFTER_SLOT[SLOT_OF_KIND[kind]]  # a mention piece, then what its slot needs
            table = context.tables[kind]
            if table is None:  # a kind the sample does not offer
                ids = []
            elif node == -1:
                ids = [self.ie[TERMINATOR_OF_KIND[kind]]] if 1 + after <= left else []
            else:
                ids = [token for token, rest in table.options[node] if 1 + rest + after <= left]
            return ids, no_bins, no_times, 0
        after = AFTER_SLOT[state[1]]
        if phase == MENTION:
            slot, started, positions, pending = state[1:]
            ids, text_mode = [], NO_TEXT
            if context.source is None:
                if pending:
                    text_mode = CONTINUATION_TEXT + pending % 8  # the entry budget left room for them
                elif 1 + 3 + after <= left:  # room for a lead byte's continuations
                    text_mode = MORE_TEXT if started else START_TEXT
                elif 1 + after <= left:
                    text_mode = MORE_TEXT_SHORT if started else START_TEXT_SHORT
            elif not started:
                ids = [token for token, need in context.start_need.items() if 1 + need + after <= left]
            else:
                source, to_end = context.source, context.to_end
                ids = list({source[p + 1] for p in positions
                            if p + 1 < len(source) and 1 + to_end[p + 1] + after <= left})
            if not started or pending:
                return ids, no_bins, no_times, text_mode
            bins = times = None
            if "box" in context.grounds and 4 + after <= left:
                bins = 0
            if "polygons" in context.grounds and 1 + 2 * MIN_VERTICES + after <= left:
                ids.append(self.poly)
            if "span" in context.grounds and 2 + after <= left:
                times = 0
            ids += self._follow(slot, context, left)
            return ids, no_bins if bins is None else bins, no_times if times is None else times, text_mode
        if phase == BOX:
            count, x0, y0 = state[2:]
            lowest = (0, 0, x0, y0)[count]
            return [], lowest if 1 + (3 - count) + after <= left else no_bins, no_times, 0
        if phase == POLY:
            can_bin, can_end, can_open = polygon_moves(state[2], left, self.max_vertices, owed=after)
            ids = []
            if can_end:
                ids = ([self.poly] if can_open else []) + self._follow(state[1], context, left)
            return ids, 0 if can_bin else no_bins, no_times, 0
        return [], no_bins, state[2] if 1 + after <= left else no_times, 0  # SPAN

    def _follow(self, slot, context, left):
        """Tokens after a complete mention (and its ground) of ``slot``; at the start, ``ENTITY``."""
        if slot == HEAD:
            return [self.ie["tail"]] if 2 <= left else []
        ids = [self.eos]
        if not context.can_mention:
            return ids
        tables = context.tables
        for token, kind in self.starts.items():
            table = tables[kind]
            if table is not None and 1 + table.rest[0] + 1 + AFTER_SLOT[SLOT_OF_KIND[kind]] <= left:
                ids.append(token)
        if slot in (TRIGGER, ARGUMENT) and tables[ROLE_KIND] is not None and 1 + tables[ROLE_KIND].rest[0] + 1 <= left:
            ids.append(self.ie["arg"])
        return ids

    # ---- states of many prefixes -------------------------------------------------------------------

    def walk(self, tokens, context):
        state = START_STATE
        for token in tokens:
            state = self.advance(state, token, context)
        return state

    def states(self, prefix, rows):
        """The grammar states of N prefixes of batch rows ``rows``, from the previous call's where
        a prefix extends one of them."""
        contexts = self._bound()
        n, t = prefix.shape
        host, host_rows = prefix.cpu(), rows.cpu()
        rows_list = host_rows.tolist()
        head_hashes = self._row_hashes(host[:, :t - 1], host_rows) if t else None
        memo = self._memo
        if self.memoise and memo is not None and memo[0].size(1) == t - 1 and t > 0:
            old_prefix, old_rows, old_states, old_index = memo
            match = [old_index.get(h, -1) for h in head_hashes.tolist()]
            found = torch.tensor(match) >= 0
            if bool(found.any()):
                picked = torch.tensor([m if m >= 0 else 0 for m in match])
                found &= (old_prefix[picked] == host[:, :-1]).all(1) & (old_rows[picked] == host_rows)
            last, found = host[:, -1].tolist(), found.tolist()
            states = [self.advance(old_states[m], last[i], contexts[rows_list[i]]) if found[i]
                      else self.walk(host[i].tolist(), contexts[rows_list[i]]) for i, m in enumerate(match)]
        else:
            lists = host.tolist()
            states = [self.walk(lists[i], contexts[rows_list[i]]) for i in range(n)]
        if self.memoise:
            hashes = self._row_hashes(host, host_rows) if head_hashes is None else \
                head_hashes + host[:, -1].long() * self._hash_weights[t]
            self._memo = (host.clone(), host_rows.clone(), states, {h: i for i, h in enumerate(hashes.tolist())})
        return states

    def _row_hashes(self, prefix, rows):
        """Hashes of (row, prefix) pairs; row i's hash extends to one more token by adding
        ``token * weights[t + 1]``. int64 arithmetic wraps: a hash, verified before use."""
        t = prefix.size(1)
        if self._hash_weights is None or len(self._hash_weights) < t + 2:
            rng = np.random.default_rng(_HASH_SEED)
            self._hash_weights = torch.from_numpy(rng.integers(1, 2 ** 62, size=2 * t + 16, dtype=np.int64))
        weights = self._hash_weights
        return (prefix.long() * weights[1:t + 1]).sum(1) + rows.long() * weights[0]

    # ---- masks ---------------------------------------------------------------------------------------

    def allowed(self, prefix, rows):
        states = self.states(prefix, rows)
        left = None if self.max_length is None else self.max_length - prefix.size(1)
        return self.masks(states, rows.tolist(), [left] * len(states), prefix.device)

    def training_masks(self, target):
        """B x T x V masks: position t allows what may follow the gold prefix target[:, :t]. Where the
        gold token is not allowed (a target cut by --max-tgt-length, a mention not in the source, a
        label off the schema), that position allows every token, so its loss stays finite; the walk
        goes on through the gold token and the positions after it keep their grammar."""
        contexts = self._bound()
        batch, length = target.shape
        if batch != len(contexts):
            raise ValueError(f"IEGrammar bound to {len(contexts)} samples got training targets of {batch}")
        if length == 0:
            return torch.zeros(batch, 0, self.vocab_size, dtype=torch.bool, device=target.device)
        tokens = target.tolist()
        states, rows, lefts = [], [], []
        for b in range(batch):
            state = START_STATE
            for t in range(length):
                states.append(state)
                rows.append(b)
                lefts.append(None if self.max_length is None else self.max_length - t)
                state = self.advance(state, tokens[b][t], contexts[b])
        masks = self.masks(states, rows, lefts, target.device).view(batch, length, -1)
        gold = masks.gather(2, target.unsqueeze(2)).squeeze(2)
        masks[~gold] = True
        return masks

    def masks(self, states, rows, lefts, device):
        """N x V masks of N states (of samples ``rows``, with ``lefts`` tokens left, None: no budget)."""
        contexts = self._bound()
        device = torch.device(device)
        n = len(states)
        r_idx, c_idx = [], []
        bins, times, texts = [0] * n, [0] * n, [0] * n
        specs = self._specs
        for i, (state, row, left) in enumerate(zip(states, rows, lefts)):
            context = contexts[row]
            left = context.left_cap if left is None else min(left, context.left_cap)
            key = (row, state, left)
            spec = specs.get(key)
            if spec is None:
                spec = specs[key] = self.spec(state, context, left)
            ids, bins[i], times[i], texts[i] = spec
            if not ids and bins[i] == self.num_bins and times[i] == self.num_time_bins and not texts[i]:
                ids = (self.eos,)  # never an empty row: a hypothesis off the grammar gets EOS alone
            r_idx.extend([i] * len(ids))
            c_idx.extend(ids)
        mask = torch.zeros(n, self.vocab_size, dtype=torch.bool, device=device)
        if not n:
            return mask
        if min(bins) < self.num_bins:
            lowest = torch.tensor(bins, device=device)
            mask[:, self.first_bin:self.first_bin + self.num_bins] = \
                torch.arange(self.num_bins, device=device)[None, :] >= lowest[:, None]
        if min(times) < self.num_time_bins:
            lowest = torch.tensor(times, device=device)
            mask[:, self.first_time:self.first_time + self.num_time_bins] = \
                torch.arange(self.num_time_bins, device=device)[None, :] >= lowest[:, None]
        if max(texts):
            text = self._text_masks.get(device)
            if text is None:
                text = self._text_masks[device] = self._text_masks[torch.device("cpu")].to(device)
            mask[:, self.first_text:self.first_bin] = text[torch.tensor(texts, device=device)]
        if r_idx:  # after the ranges, which are assigned whole
            mask[torch.tensor(r_idx, device=device), torch.tensor(c_idx, device=device)] = True
        return mask

    def _bound(self):
        if self.contexts is None:
            raise RuntimeError("IEGrammar has no per-sample contexts: bind a batch with for_batch(metas)")
        return self.contexts

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_memo=None, _specs={}, _text_masks={torch.device("cpu"): self._text_masks[torch.device("cpu")]})
        return state


def _context_of(meta, index):
    context = meta.get("ie_context") if isinstance(meta, dict) else None
    if not isinstance(context, IEContext):
        raise ValueError(f"sample {index} of the batch has no \"ie_context\" in its meta "
                         f"(ie.grammar.grammar_context builds one)")
    return context
