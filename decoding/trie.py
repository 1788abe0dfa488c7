"""A trie of token sequences as an output constraint: answers, labels, entity names.

The trie is built once, with numpy, from up to millions of token sequences
(each ending in EOS) and kept as two flat arrays:

- ``keys``: one int64 per edge, ``parent * V + token``, sorted. Edge ``k``
  leads to node ``k + 1`` (nodes are numbered breadth first, the root is 0),
  so finding a child is one ``searchsorted``;
- ``offsets``: CSR row pointers, the children of node ``n`` are the edges
  ``offsets[n]:offsets[n + 1]`` (their tokens are ``keys % V``).

``allowed(prefix, rows)`` is a pure function of the prefix, so fairseq's beam
reordering cannot desynchronise it: the prefixes of all hypotheses are walked
together, one ``searchsorted`` per position. With ``memoise`` (the default),
the nodes of the previous call's prefixes are kept, and from the fourth step
on a prefix that extends one of them (matched through a row hash, then
compared token by token, so a hash collision can never give a wrong node)
advances by its last token only: a step then costs the same at any depth.
A prefix that has left the trie, or has ended, allows only EOS.
"""
import itertools

import numpy as np
import torch

from decoding.constraints import Constraint

_HASH_SEED = 20240531
_MEMOISE_FROM = 4  # shorter prefixes are walked as fast as they are matched (benchmarks/trie.py)


class TokenTrie(Constraint):
    def __init__(self, sequences, eos, vocab_size, memoise=True):
        """``sequences``: token id sequences, each ending in ``eos`` and holding it nowhere else.
        Identical sequences share one path; ``lookup`` gives the first of them."""
        self.eos, self.vocab_size, self.memoise = int(eos), int(vocab_size), memoise
        keys, offsets, end_nodes, self.max_length = _build(sequences, self.eos, self.vocab_size)
        order = np.argsort(end_nodes, kind="stable")  # equal nodes: the first sequence first
        self.num_sequences = len(end_nodes)
        self.num_distinct = len(np.unique(end_nodes))  # identical sequences share their end node
        self.num_nodes = len(offsets) - 1
        self._host = {
            "keys": torch.from_numpy(keys),
            "offsets": torch.from_numpy(offsets),
        }
        self._end_nodes = end_nodes[order]
        self._end_sequences = order
        self._keys_np = keys
        self._on_device = {}
        self._cache = None
        self._hash_weights = _hash_weights(self.max_length + 1)

    def nbytes(self):
        """Memory held by the trie's arrays (host copies)."""
        return sum(t.numel() * t.element_size() for t in self._host.values()) + \
            self._end_nodes.nbytes + self._end_sequences.nbytes + self._hash_weights.numel() * 8

    # ---- the constraint ---------------------------------------------------------------------

    def allowed(self, prefix, rows):
        return self.node_masks(self.walk(prefix, memoise=self.memoise))

    def training_masks(self, target):
        """B x T x V masks: position t allows the children of the gold prefix ``target[:, :t]``.

        One walk along the targets instead of one per position. Where the gold token is not
        allowed (a target outside the trie, e.g. a validation answer missing from the candidate
        list), the position falls back to the full vocabulary, so its loss stays finite; targets
        inside the trie get exactly ``allowed``'s masks.
        """
        arrays = self._arrays(target.device)
        nodes = torch.zeros(target.size(0), dtype=torch.long, device=target.device)
        before = []
        for t in range(target.size(1)):
            before.append(nodes)
            nodes = self._advance(nodes, target[:, t], arrays)
        batch, length = target.shape
        if length == 0:
            return torch.zeros(batch, 0, self.vocab_size, dtype=torch.bool, device=target.device)
        masks = self.node_masks(torch.stack(before, dim=1).reshape(-1)).view(batch, length, -1)
        gold_allowed = masks.gather(2, target.unsqueeze(2)).squeeze(2)
        masks[~gold_allowed] = True
        return masks

    # ---- walking and masks ------------------------------------------------------------------

    def walk(self, prefix, memoise=False):
        """N x t prefixes -> the N trie nodes they reach (-1: the prefix left the trie)."""
        arrays = self._arrays(prefix.device)
        n, t = prefix.shape
        if memoise and t >= _MEMOISE_FROM:
            nodes = self._walk_from_cache(prefix, arrays)
        else:
            nodes = self._walk_from_root(prefix, arrays)
        if memoise:
            # a copy: fairseq rewrites its token buffer, of which ``prefix`` is a view, in place
            self._cache = (prefix.clone(), nodes, self._row_hashes(prefix))
        return nodes

    def _walk_from_root(self, prefix, arrays):
        nodes = torch.zeros(prefix.size(0), dtype=torch.long, device=prefix.device)
        for j in range(prefix.size(1)):
            nodes = self._advance(nodes, prefix[:, j], arrays)
        return nodes

    def _walk_from_cache(self, prefix, arrays):
        cache = self._cache
        t = prefix.size(1)
        if cache is None or cache[0].size(1) != t - 1 or cache[0].device != prefix.device or cache[0].size(0) == 0:
            return self._walk_from_root(prefix, arrays)
        old_prefix, old_nodes, old_hashes = cache
        head = prefix[:, :-1]
        sorted_hashes, order = old_hashes.sort()
        position = torch.searchsorted(sorted_hashes, self._row_hashes(head)).clamp_(max=len(order) - 1)
        match = order[position]
        found = (old_prefix[match] == head).all(1)
        nodes = self._advance(old_nodes[match], prefix[:, -1], arrays)
        if not bool(found.all()):
            missing = (~found).nonzero().squeeze(1)
            nodes[missing] = self._walk_from_root(prefix[missing], arrays)
        return nodes

    def _row_hashes(self, prefix):
        if prefix.size(1) > len(self._hash_weights):  # hypotheses may run on past the trie (EOS only)
            self._hash_weights = _hash_weights(2 * prefix.size(1))
        weights = self._hash_weights[: prefix.size(1)].to(prefix.device)
        return (prefix * weights).sum(1)  # int64 arithmetic wraps: a hash, verified before use

    def _advance(self, nodes, tokens, arrays):
        keys = arrays["keys"]
        key = nodes * self.vocab_size + tokens
        edge = torch.searchsorted(keys, key).clamp_(max=len(keys) - 1)
        return torch.where((keys[edge] == key) & (nodes >= 0), edge + 1, torch.full_like(edge, -1))

    def node_masks(self, nodes):
        """N nodes -> N x V masks of their children's tokens; EOS alone for a leaf or -1."""
        arrays = self._arrays(nodes.device)
        keys, offsets = arrays["keys"], arrays["offsets"]
        unique, inverse = torch.unique(nodes, return_inverse=True)
        inside = unique.clamp(min=0)
        starts = offsets[inside]
        counts = torch.where(unique >= 0, offsets[inside + 1] - starts, torch.zeros_like(starts))
        masks = torch.zeros(len(unique), self.vocab_size, dtype=torch.bool, device=nodes.device)
        total = int(counts.sum())
        if total:
            row = torch.repeat_interleave(torch.arange(len(unique), device=nodes.device), counts, output_size=total)
            first = torch.repeat_interleave(starts - (counts.cumsum(0) - counts), counts, output_size=total)
            edges = first + torch.arange(total, device=nodes.device)
            masks[row, keys[edges] % self.vocab_size] = True
        masks[counts == 0, self.eos] = True
        return masks[inverse]

    def _arrays(self, device):
        if device.type == "cpu":
            return self._host
        if device not in self._on_device:
            self._on_device[device] = {k: v.to(device) for k, v in self._host.items()}
        return self._on_device[device]

    # ---- lookups ----------------------------------------------------------------------------

    def lookup(self, tokens):
        """The index of the first sequence equal to ``tokens`` (EOS appended if missing), else None."""
        tokens = [int(t) for t in tokens]
        if not tokens or tokens[-1] != self.eos:
            tokens.append(self.eos)
        node = 0
        for token in tokens:
            if not 0 <= token < self.vocab_size:
                return None
            key = node * self.vocab_size + token
            edge = int(np.searchsorted(self._keys_np, key))
            if edge >= len(self._keys_np) or self._keys_np[edge] != key:
                return None
            node = edge + 1
        at = int(np.searchsorted(self._end_nodes, node))
        if at < len(self._end_nodes) and self._end_nodes[at] == node:
            return int(self._end_sequences[at])
        return None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_on_device={}, _cache=None)
        return state


def _hash_weights(length):
    return torch.from_numpy(np.random.default_rng(_HASH_SEED).integers(1, 2 ** 62, size=length, dtype=np.int64))


def _build(sequences, eos, vocab_size):
    """Flat trie arrays from token sequences: (keys, offsets, end node of each sequence, longest)."""
    sequences = [s.tolist() if hasattr(s, "tolist") else s for s in sequences]
    if not sequences:
        raise ValueError("a token trie needs at least one sequence")
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    if lengths.min() < 1:
        raise ValueError(f"sequence {int(np.argmin(lengths))} is empty; each must end in EOS ({eos})")
    n, width = len(sequences), int(lengths.max())
    flat = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum()))
    ends = np.cumsum(lengths) - 1
    bad = np.flatnonzero(flat[ends] != eos)
    if len(bad):
        raise ValueError(f"sequence {int(bad[0])} does not end in EOS ({eos}): {sequences[bad[0]]}")
    if np.count_nonzero(flat == eos) != n:
        inner = np.flatnonzero((flat == eos) & ~np.isin(np.arange(len(flat)), ends))[0]
        row = int(np.searchsorted(ends, inner))
        raise ValueError(f"sequence {row} holds EOS ({eos}) before its end: {sequences[row]}")
    out_of_range = np.flatnonzero((flat < 0) | (flat >= vocab_size))
    if len(out_of_range):
        row = int(np.searchsorted(ends, out_of_range[0]))
        raise ValueError(f"sequence {row} holds token {int(flat[out_of_range[0]])} outside [0, {vocab_size})")

    token_type = np.int32 if vocab_size < 2 ** 31 else np.int64
    matrix = np.full((n, width), -1, dtype=token_type)  # one row a sequence, -1 after its EOS
    rows = np.repeat(np.arange(n), lengths)
    matrix[rows, np.arange(len(flat)) - np.repeat(ends + 1 - lengths, lengths)] = flat
    del rows, flat
    order = np.lexsort(matrix.T[::-1])  # lexicographic: rows sharing a prefix are contiguous
    matrix = matrix[order]

    parents, tokens = [], []
    node = np.zeros(n, dtype=np.int64)  # each sorted row's node at the current depth (the root first)
    end_node = np.empty(n, dtype=np.int64)
    changed = np.zeros(n, dtype=bool)
    changed[0] = True
    next_id = 1
    for depth in range(width):
        column = matrix[:, depth]
        valid = column >= 0
        changed[1:] |= column[1:] != column[:-1]
        new = valid & changed
        count = int(np.count_nonzero(new))
        ids = next_id + np.cumsum(new) - 1
        parents.append(node[new])
        tokens.append(column[new])
        node = np.where(valid, ids, node)
        finished = valid & (column == eos)
        end_node[finished] = node[finished]
        next_id += count
    parents, tokens = np.concatenate(parents), np.concatenate(tokens)
    keys = parents * vocab_size + tokens.astype(np.int64)
    offsets = np.searchsorted(parents, np.arange(next_id + 1)).astype(np.int64)
    end_nodes = np.empty(n, dtype=np.int64)
    end_nodes[order] = end_node
    return keys, offsets, end_nodes, width
