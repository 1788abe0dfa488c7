"""Pre-norm transformer layers on ``F.scaled_dot_product_attention``.

Attention goes through PyTorch's fused kernels (flash / memory-efficient /
CPU flash) with no per-head Python loops; masks are boolean "may attend"
tensors or ``is_causal`` so the fast paths stay available. The decoder
layer keeps its key/value cache in a plain dict that the decoder stores in
fairseq's incremental state.
"""
import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim, heads, dropout=0.0, position_heads=0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model width {dim} is not divisible by {heads} heads")
        if not 0 <= position_heads <= heads:
            raise ValueError(f"{position_heads} position heads, but the attention has {heads} heads")
        self.heads, self.dropout = heads, dropout
        # the channels that positions reach: the first position_heads heads' (0: every head's)
        self.position_width = dim // heads * (position_heads or heads)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def split_heads(self, x):  # B x T x C -> B x H x T x C/H
        b, t, c = x.shape
        return x.view(b, t, self.heads, c // self.heads).transpose(1, 2)

    def keys_values(self, x, positions=None, position_values=False):
        """Keys and values of ``x``; ``positions`` (broadcastable to ``x``), when given, are added to
        the keys' input, ``W_k (x + positions)``, and with ``position_values`` to the values' too (in the
        position heads only)."""
        k, v = self.kv(x).chunk(2, dim=-1)
        if positions is not None:
            k = self.add_positions(k, positions, self.kv.weight[:k.size(-1)])
        if positions is not None and position_values:
            v = self.add_positions(v, positions, self.kv.weight[k.size(-1):])
        return self.split_heads(k), self.split_heads(v)

    def add_positions(self, projected, positions, weight):
        """``projected`` with ``weight @ positions`` added in the position heads' channels."""
        width = self.position_width
        if width == projected.size(-1):
            return projected + F.linear(positions, weight)
        moved = projected[..., :width] + F.linear(positions, weight[:width])
        return torch.cat([moved, projected[..., width:].expand(*moved.shape[:-1], -1)], dim=-1)

    def forward(self, x, k, v, mask=None, is_causal=False, positions=None):
        q = self.q(x)
        if positions is not None:
            q = self.add_positions(q, positions, self.q.weight)
        q = self.split_heads(q)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).flatten(2))


class FeedForward(nn.Sequential):
    def __init__(self, dim, hidden, dropout):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class EncoderLayer(nn.Module):
    def __init__(self, dim, heads, ffn_dim, dropout=0.0, attention_dropout=0.0, position_heads=0):
        super().__init__()
        self.attn_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, attention_dropout, position_heads)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, attend_mask, positions=None):
        """x: B x T x C; attend_mask: B x 1 x 1 x T, True where a key may be attended; positions
        (B or 1 x T x C, or None): added to the queries' and keys' inputs, not to the values."""
        h = self.attn_norm(x)
        x = x + self.dropout(self.attn(h, *self.attn.keys_values(h, positions), mask=attend_mask,
                                       positions=positions))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class DecoderLayer(nn.Module):
    def __init__(self, dim, heads, ffn_dim, dropout=0.0, attention_dropout=0.0, position_values=False,
                 position_heads=0):
        super().__init__()
        self.position_values = position_values
        self.self_norm, self.cross_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, attention_dropout)
        self.cross_attn = Attention(dim, heads, attention_dropout, position_heads)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, memory, memory_mask, cache=None, memory_index=None, memory_positions=None):
        """x: N x T x C (T = 1 when decoding step by step with ``cache``); ``memory``: M x S x C and
        ``memory_mask`` M x 1 x 1 x S, the encoder output of the rows ``memory_index`` (N) gives each of
        the N hypotheses (None: one row each, M = N); ``memory_positions`` (M or 1 x S x C, or None): added to
        the cross-attention keys' input, and to the values' too when the layer has ``position_values``.

        ``cache`` is this layer's dict of tensors across decoding steps: the self-attention keys and
        values so far (N rows) and the cross-attention keys and values, computed once from the memory
        (M rows).
        """
        h = self.self_norm(x)
        k, v = self.self_attn.keys_values(h)
        if cache is not None and "self_k" in cache:
            k, v = torch.cat([cache["self_k"], k], dim=2), torch.cat([cache["self_v"], v], dim=2)
        if cache is not None:
            cache["self_k"], cache["self_v"] = k, v
        # A single new query attends to the whole cache; otherwise mask the future.
        x = x + self.dropout(self.self_attn(h, k, v, is_causal=x.size(1) > 1))

        if cache is not None and "cross_k" in cache:
            ck, cv = cache["cross_k"], cache["cross_v"]
        else:
            ck, cv = self.cross_attn.keys_values(memory, memory_positions, self.position_values)
            if cache is not None:
                cache["cross_k"], cache["cross_v"] = ck, cv
        x = x + self.dropout(shared_rows_attention(self.cross_attn, self.cross_norm(x), ck, cv, memory_mask,
                                                   memory_index))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


def shared_rows_attention(attention, x, k, v, mask, memory_index):
    """``attention(x, k, v, mask)`` of the N rows of ``x`` over the rows ``memory_index`` of the M-row keys
    ``k``, values ``v`` and ``mask`` (M x 1 x 1 x S "may attend", or an M x H x T x S additive bias, or
    broadcastable to those). When each memory row serves the same number g of consecutive rows of ``x``
    (beam search: a sample's beams) and the mask is the same for every query, those are taken as one row
    of g times the queries: the keys and values are read once per sample, never copied per beam.
    Otherwise they are gathered."""
    if memory_index is None:
        return attention(x, k, v, mask)
    n, m = x.size(0), k.size(0)
    same_for_all_queries = mask is None or mask.size(-2) == 1
    if n % m == 0 and same_for_all_queries and torch.equal(
            memory_index, torch.arange(m, device=x.device).repeat_interleave(n // m)):
        return attention(x.reshape(m, -1, x.size(-1)), k, v, mask).view_as(x)
    return attention(x, k[memory_index], v[memory_index], None if mask is None else mask[memory_index])


def reorder_memory(memory_index, new_order, memory_size):
    """For the hypotheses of ``new_order``, the rows of a ``memory_size``-row memory they still use:
    (those rows, in order, or None when all are; the hypotheses' index into them). ``memory_index``: each
    hypothesis' row so far (None: the encoder's own output, a row per sample)."""
    if memory_index is None:
        memory_index = torch.arange(memory_size, device=new_order.device)
    rows, index = torch.unique(memory_index.index_select(0, new_order), sorted=True, return_inverse=True)
    return (None if rows.numel() == memory_size else rows), index


def reorder_layer_caches(caches, new_order, memory_rows=None, shared_memory=False):
    """Move each decoder layer's cached keys and values (``self_k``, ``cross_v``, ...) to the hypotheses
    of ``new_order``. Self-attention ones have a row per hypothesis. With ``shared_memory``, the
    cross-attention ones have a row per memory row, which hypotheses share (``shared_rows_attention``),
    and keep ``memory_rows`` (``reorder_memory``; None: all). Without, they have a row per hypothesis,
    but beam search reorders hypotheses within each sample, all of whose hypotheses hold the same rows:
    those move only when finished samples leave the batch (as in fairseq's own attention). Copying
    them every step dominated beam search."""
    for cache in caches:
        for key, value in cache.items():
            if not key.startswith("cross_"):
                cache[key] = value.index_select(0, new_order)
            elif shared_memory:
                if memory_rows is not None:
                    cache[key] = value.index_select(0, memory_rows)
            elif value.size(0) != new_order.size(0):
                cache[key] = value.index_select(0, new_order)


def reorder_decoder_caches(decoder, incremental_state, new_order, caches):
    """An incremental decoder's ``caches`` (``reorder_layer_caches``'s dicts) moved to the hypotheses of
    ``new_order``. When the decoder ran on a shared memory, it keeps the hypotheses' ``memory_index`` in
    ``incremental_state`` and the cross-attention entries follow the memory rows (the first dict's
    ``cross_k`` has one each)."""
    index = decoder.get_incremental_state(incremental_state, "memory_index")
    if index is None:  # the cross-attention caches hold a row per hypothesis
        reorder_layer_caches(caches, new_order)
        return
    rows, index = reorder_memory(index, new_order, caches[0]["cross_k"].size(0))
    reorder_layer_caches(caches, new_order, rows, shared_memory=True)
    decoder.set_incremental_state(incremental_state, "memory_index", index)
