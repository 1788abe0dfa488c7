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
    def __init__(self, dim, heads, dropout=0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model width {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def split_heads(self, x):  # B x T x C -> B x H x T x C/H
        b, t, c = x.shape
        return x.view(b, t, self.heads, c // self.heads).transpose(1, 2)

    def keys_values(self, x):
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def forward(self, x, k, v, mask=None, is_causal=False):
        q = self.split_heads(self.q(x))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).flatten(2))


class FeedForward(nn.Sequential):
    def __init__(self, dim, hidden, dropout):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class EncoderLayer(nn.Module):
    def __init__(self, dim, heads, ffn_dim, dropout=0.0, attention_dropout=0.0):
        super().__init__()
        self.attn_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, attention_dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, attend_mask):
        """x: B x T x C; attend_mask: B x 1 x 1 x T, True where a key may be attended."""
        h = self.attn_norm(x)
        x = x + self.dropout(self.attn(h, *self.attn.keys_values(h), mask=attend_mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class DecoderLayer(nn.Module):
    def __init__(self, dim, heads, ffn_dim, dropout=0.0, attention_dropout=0.0):
        super().__init__()
        self.self_norm, self.cross_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, attention_dropout)
        self.cross_attn = Attention(dim, heads, attention_dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, memory, memory_mask, cache=None):
        """x: B x T x C (T = 1 when decoding step by step with ``cache``).

        ``cache`` is this layer's dict of tensors across decoding steps: the
        self-attention keys/values so far and the cross-attention keys/values,
        computed once from the encoder output.
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
            ck, cv = self.cross_attn.keys_values(memory)
            if cache is not None:
                cache["cross_k"], cache["cross_v"] = ck, cv
        x = x + self.dropout(self.cross_attn(self.cross_norm(x), ck, cv, mask=memory_mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


def reorder_layer_caches(caches, new_order):
    """Move each decoder layer's cached keys and values (``self_k``, ``cross_v``, ...) to the hypotheses
    of ``new_order``. Beam search reorders hypotheses within each sample, and all of a sample's
    hypotheses share its cross-attention keys and values: those move only when finished samples leave
    the batch (as in fairseq's own attention). Copying them every step dominated beam search."""
    for cache in caches:
        for key, value in cache.items():
            if key.startswith("cross_") and value.size(0) == new_order.size(0):
                continue
            cache[key] = value.index_select(0, new_order)
