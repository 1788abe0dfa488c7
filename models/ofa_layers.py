"""OFA's transformer layers, with its parameter names, on ``F.scaled_dot_product_attention``.

What sets them apart from ordinary layers: attention scores are scaled by
``1/sqrt(head_dim * attn_scale_factor)`` and receive an additive bias (the
positions, which never enter the residual stream); NormFormer's optional parts
(``c_attn`` per-head gains, a LayerNorm after each attention output and inside
the feed-forward, ``w_resid`` residual gains); stochastic depth per sample.
Tensors are B x T x C; keys and values B x H x S x head_dim.
"""
import functools

import torch
import torch.nn.functional as F
from fairseq import utils as fairseq_utils
from torch import nn

from models.ofa_resnet import drop_path
from models.transformer import shared_rows_attention


def plain_attention(q, k, v, bias, scale, dropout_p=0.0):
    """OFA's own computation of ``scaled_dot_product_attention(q, k, v, bias, scale=scale)``: explicit
    matrix products, the bias added to the scaled scores, a softmax in fp32."""
    scores = torch.matmul(q * scale, k.transpose(-2, -1)) + bias
    probs = F.dropout(F.softmax(scores.float(), dim=-1).to(q.dtype), dropout_p)
    return torch.matmul(probs, v)


def use_fused_attention(model, fused):
    """Every OFA attention of ``model`` on SDPA's fused kernels (``fused``) or on ``plain_attention``,
    which benchmarks compare."""
    for module in model.modules():
        if isinstance(module, OFAAttention):
            module.fused = fused


class OFAAttention(nn.Module):
    def __init__(self, dim, heads, scale_factor, scale_heads, dropout):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.fused = True
        self.scaling = (self.head_dim * scale_factor) ** -0.5
        self.c_attn = nn.Parameter(torch.ones(heads)) if scale_heads else None
        self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.q_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def split_heads(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def keys_values(self, x):
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def forward(self, query, keys, values, bias):
        """``bias``: B x H x T x S (or broadcastable), the position biases with -inf where masked."""
        q = self.split_heads(self.q_proj(query))
        # A float attn_mask runs on the fused kernels that take one (CPU flash, CUDA memory-efficient).
        attend = F.scaled_dot_product_attention if self.fused else plain_attention
        y = attend(q, keys, values, bias.to(q.dtype), scale=self.scaling,
                   dropout_p=self.dropout if self.training else 0.0)
        if self.c_attn is not None:
            y = y * self.c_attn[:, None, None]
        return self.out_proj(y.transpose(1, 2).flatten(2))


class OFALayer(nn.Module):
    """What encoder and decoder layers share: the feed-forward block and the residual wiring."""

    def __init__(self, args, dim, ffn_dim, drop_path_rate):
        super().__init__()
        self.normalize_before = None  # set by the subclass
        self.dropout = nn.Dropout(args.dropout)
        self.activation_dropout = nn.Dropout(float(getattr(args, "activation_dropout", 0)
                                                   or getattr(args, "relu_dropout", 0) or 0))
        self.activation_fn = fairseq_utils.get_activation_fn(args.activation_fn)
        self.fc1, self.fc2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.ffn_layernorm = nn.LayerNorm(ffn_dim) if args.scale_fc else None
        self.w_resid = nn.Parameter(torch.ones(dim)) if args.scale_resids else None
        self.final_layer_norm = nn.LayerNorm(dim)
        self.drop_path_rate = drop_path_rate

    def residual(self, x, norm, block, residual_gain=None):
        """``x + block(x)`` with pre- or post-LayerNorm ``norm``, dropout and stochastic depth."""
        h = block(norm(x) if self.normalize_before else x)
        if residual_gain is not None:
            x = residual_gain * x
        x = x + drop_path(self.dropout(h), self.drop_path_rate, self.training)
        return x if self.normalize_before else norm(x)

    def attention_output(self, attention, attention_ln, *inputs):
        y = attention(*inputs)
        return y if attention_ln is None else attention_ln(y)

    def feed_forward(self, x):
        h = self.activation_dropout(self.activation_fn(self.fc1(x)))
        if self.ffn_layernorm is not None:
            h = self.ffn_layernorm(h)
        return self.fc2(h)

    def feed_forward_block(self, x):
        return self.residual(x, self.final_layer_norm, self.feed_forward, self.w_resid)


def build_attention(args, dim, heads):
    return OFAAttention(dim, heads, args.attn_scale_factor, args.scale_heads, args.attention_dropout)


def layer_norm_if(flag, dim):
    return nn.LayerNorm(dim) if flag else None


class OFAEncoderLayer(OFALayer):
    def __init__(self, args, drop_path_rate=0.0):
        dim = args.encoder_embed_dim
        super().__init__(args, dim, args.encoder_ffn_embed_dim, drop_path_rate)
        self.normalize_before = args.encoder_normalize_before
        self.self_attn = build_attention(args, dim, args.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.attn_ln = layer_norm_if(args.scale_attn, dim)

    def forward(self, x, bias):
        def attend(h):
            return self.attention_output(self.self_attn, self.attn_ln, h, *self.self_attn.keys_values(h), bias)
        x = self.residual(x, self.self_attn_layer_norm, attend)
        return self.feed_forward_block(x)


class OFADecoderLayer(OFALayer):
    def __init__(self, args, drop_path_rate=0.0):
        dim = args.decoder_embed_dim
        super().__init__(args, dim, args.decoder_ffn_embed_dim, drop_path_rate)
        self.normalize_before = args.decoder_normalize_before
        heads = args.decoder_attention_heads
        self.self_attn = build_attention(args, dim, heads)
        self.self_attn_ln = layer_norm_if(args.scale_attn, dim)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.encoder_attn = build_attention(args, dim, heads)
        self.cross_attn_ln = layer_norm_if(args.scale_attn, dim)
        self.encoder_attn_layer_norm = nn.LayerNorm(dim)

    def forward(self, x, memory, self_bias, cross_bias, cache=None, memory_index=None):
        """``cache``: this layer's keys and values across decoding steps (x then holds the newest step);
        ``memory`` (M rows) and ``cross_bias`` are those of the rows ``memory_index`` gives each row of ``x``
        (None: a row each), as in ``models.transformer.DecoderLayer``."""
        def attend_self(h):
            k, v = self.self_attn.keys_values(h)
            if cache is not None and "self_k" in cache:
                k, v = torch.cat([cache["self_k"], k], dim=2), torch.cat([cache["self_v"], v], dim=2)
            if cache is not None:
                cache["self_k"], cache["self_v"] = k, v
            return self.attention_output(self.self_attn, self.self_attn_ln, h, k, v, self_bias)

        def attend_memory(h):
            if cache is not None and "cross_k" in cache:
                k, v = cache["cross_k"], cache["cross_v"]
            else:
                k, v = self.encoder_attn.keys_values(memory)
                if cache is not None:
                    cache["cross_k"], cache["cross_v"] = k, v
            return self.attention_output(functools.partial(shared_rows_attention, self.encoder_attn),
                                         self.cross_attn_ln, h, k, v, cross_bias, memory_index)

        x = self.residual(x, self.self_attn_layer_norm, attend_self)
        x = self.residual(x, self.encoder_attn_layer_norm, attend_memory)
        return self.feed_forward_block(x)
