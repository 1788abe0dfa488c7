"""OFA's encoder-decoder (OFA-Sys/OFA ``models/ofa``), so its released checkpoints run here unchanged.

The model is built from a checkpoint's own options (``cfg['model']``, an
``argparse.Namespace``) and holds OFA's parameter names. OFA's quirks, each
needed for identical outputs:

- positions never enter the encoder's residual stream; they act as attention
  biases: ``pos_q(P) . pos_k(P)`` scaled like the scores, plus per-layer
  bucketed relative biases (text x text and image x image blocks);
- the encoder reads ``[image patches ; text]``, each with a type embedding
  and its own embedding LayerNorm; text pads are zeroed before layer 0;
- the decoder adds its position embedding to the tokens only without
  ``disable_entangle`` (OFA tests ``entangle_position_embedding is not None``);
- scores use ``1/sqrt(head_dim * attn_scale_factor)``, for the position biases too.

Image-code generation (``code_masks``) is not supported; the decoder's
image-position parameters exist only so that checkpoints load strictly.
"""
import copy
import logging
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from fairseq.models import (FairseqEncoder, FairseqEncoderDecoderModel, FairseqIncrementalDecoder,
                            register_model, register_model_architecture)
from fairseq.modules.transformer_sentence_encoder import init_bert_params
from torch import nn

from models.image_encoder import model_pixels
from models.ofa_layers import OFADecoderLayer, OFAEncoderLayer
from models.ofa_resnet import STAGE_BLOCKS, OFAResNet
from models.transformer import reorder_decoder_caches, reorder_memory
from models.unify import bf16_autocast, set_sizes
from utils.checkpoint import load_state

logger = logging.getLogger(__name__)
TOKEN_BUCKET_POSITIONS = 1024  # OFA builds its token bucket table for 1024 positions whatever the options
PATCH_STRIDE = 16
EMBEDDING_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.output_projection.weight")
INDEX_BUFFERS = ("encoder.token_rp_bucket", "encoder.image_rp_bucket", "decoder.token_rp_bucket",
                 "decoder.image_rp_bucket", "decoder.image_position_idx")


class UnsupportedOFAOption(ValueError):
    pass


class OFACheckpointError(ValueError):
    pass


class Patches(NamedTuple):
    """A medium's patch tokens before the type embedding: B x N x C projected features, their N position ids
    (into the relative-position buckets), their 1 x N x C (or B x N x C) position embeddings, their type id."""
    tokens: torch.Tensor
    ids: torch.Tensor
    positions: torch.Tensor
    type_id: int


def scatter_present(values, present):
    """UniGround's layout (rows only for the samples that have the medium) -> one row per sample, zeros elsewhere."""
    full = values.new_zeros(len(present), *values.shape[1:])
    full[present] = values
    return full


def token_buckets(bucket_size, positions=TOKEN_BUCKET_POSITIONS):
    """positions x positions bucket ids of the offsets i - j: exact up to bucket_size/2, log-spaced beyond."""
    offset = torch.arange(positions)[:, None] - torch.arange(positions)[None, :]
    half = bucket_size // 2
    distance = torch.where(offset.abs() < half, torch.full_like(offset, half - 1), offset.abs())
    log_bucket = (torch.ceil(torch.log(distance / half) / math.log((positions - 1) / half) * (half - 1))
                  + half).int()
    bucket = torch.where(distance.le(half), offset, log_bucket * torch.sign(offset)).long()
    return bucket + bucket_size - 1


def image_buckets(grid):
    """Relative-offset ids between the cells of a grid x grid image, with row/column 0 for a (never used) CLS."""
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    span = 2 * grid - 1
    relative = (rows[:, None] - rows[None, :] + grid - 1) * span + (cols[:, None] - cols[None, :] + grid - 1)
    count = span * span + 3
    buckets = torch.zeros(grid * grid + 1, grid * grid + 1, dtype=torch.long)
    buckets[1:, 1:] = relative
    buckets[0, :] = count - 3
    buckets[:, 0] = count - 2
    buckets[0, 0] = count - 1
    return buckets


def image_position_ids(rows, cols, grid):
    """Ids into ``embed_image_positions`` of a rows x cols patch grid, row-major: 1 + grid*row + col."""
    return (torch.arange(rows)[:, None] * grid + torch.arange(cols)[None, :] + 1).flatten()


def code_position_ids(code_image_size, grid):
    """OFA's decoder ``image_position_idx``: a CLS, the code grid, then 769 entries of 1024."""
    side = code_image_size // 8
    return torch.cat([torch.tensor([0]), image_position_ids(side, side, grid), torch.full((769,), 1024)])


def position_heads(linear, positions, heads):
    """B x T x C position embeddings projected by ``linear`` and split into B x H x T x C/H heads."""
    x = linear(positions)
    return x.view(x.size(0), x.size(1), heads, -1).transpose(1, 2)


def position_bias(q_linear, k_linear, queries, keys, heads, scaling):
    """B x H x T x S attention bias of position embeddings, scaled like the attention scores."""
    return position_scores(position_heads(q_linear, queries, heads), position_heads(k_linear, keys, heads), scaling)


def position_scores(query_heads, key_heads, scaling):
    """The bias of queries' and keys' ``position_heads``."""
    return torch.matmul(query_heads * scaling, key_heads.transpose(2, 3))


def masked(bias, mask):
    """``bias`` with -inf where ``mask`` (broadcastable) is True."""
    return bias.masked_fill(mask, float("-inf"))


def relative_bias(table, buckets):
    """H x T x S (or B x H x T x S) bias from a T x S (or B x T x S) bucket-id matrix."""
    return F.embedding(buckets, table.weight).movedim(-1, -3)


def rel_pos_tables(count, size, heads):
    return nn.ModuleList(nn.Embedding(size, heads) for _ in range(count))


def drop_path_rates(rate, layers):
    return torch.linspace(0, rate, layers).tolist()


def image_bucket_count(grid):
    return (2 * grid - 1) ** 2 + 3


class OFAEncoder(FairseqEncoder):
    def __init__(self, args, dictionary, embed_tokens):
        super().__init__(dictionary)
        self.register_buffer("version", torch.Tensor([3]))
        dim, heads = args.encoder_embed_dim, args.encoder_attention_heads
        self.args, self.heads = args, heads
        self.padding_idx = embed_tokens.padding_idx
        self.embed_tokens = embed_tokens
        self.embed_scale = 1.0 if args.no_scale_embedding else math.sqrt(dim)
        self.layernorm_embedding = nn.LayerNorm(dim) if args.layernorm_embedding else None
        self.type_embedding = nn.Embedding(2, dim) if args.add_type_embedding else None
        # channels-last, as UniGround's own image encoder (models/image_encoder.py): the layout oneDNN and cuDNN
        # convolutions run in
        self.embed_images = self.image_backbone(args).to(memory_format=torch.channels_last)
        self.image_proj = nn.Linear(self.embed_images.out_channels, dim)
        self.patch_layernorm_embedding = nn.LayerNorm(dim) if args.patch_layernorm_embedding else None
        self.embed_positions = nn.Embedding(args.max_source_positions + 2, dim)
        self.embed_image_positions = nn.Embedding(args.image_bucket_size ** 2 + 1, dim)
        self.pos_ln, self.image_pos_ln = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.pos_scaling = (dim / heads * args.attn_scale_factor) ** -0.5
        self.pos_q_linear, self.pos_k_linear = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.dropout = nn.Dropout(args.dropout)
        self.layers = nn.ModuleList(OFAEncoderLayer(args, rate)
                                    for rate in drop_path_rates(args.encoder_drop_path_rate, args.encoder_layers))
        self.layer_norm = nn.LayerNorm(dim) if args.encoder_normalize_before else None
        self.token_rel_pos_table_list = rel_pos_tables(args.encoder_layers, 2 * args.token_bucket_size - 1, heads)
        self.image_rel_pos_table_list = rel_pos_tables(args.encoder_layers,
                                                       image_bucket_count(args.image_bucket_size), heads)
        self.register_buffer("token_rp_bucket", token_buckets(args.token_bucket_size), persistent=False)
        self.register_buffer("image_rp_bucket", image_buckets(args.image_bucket_size), persistent=False)

    @staticmethod
    def image_backbone(args, stages=3):
        return OFAResNet(args.resnet_type, args.resnet_drop_path_rate, stages=stages, **backbone_norm(args))

    def image_positions(self, rows, cols, device):
        """Position ids and embeddings of a rows x cols patch grid (interpolated beyond the trained grid when
        ``interpolate_position`` is set)."""
        grid = self.args.image_bucket_size
        ids = image_position_ids(rows, cols, grid).to(device)
        trained = self.args.orig_patch_image_size // PATCH_STRIDE
        if getattr(self.args, "interpolate_position", False) and rows * cols > trained ** 2:
            table = self.embed_image_positions(image_position_ids(trained, trained, grid).to(device))
            table = table.reshape(1, trained, trained, -1).permute(0, 3, 1, 2)
            return ids, F.interpolate(table, size=(rows, cols), mode="bilinear").permute(0, 2, 3, 1).flatten(1, 2)
        return ids, self.embed_image_positions(ids)[None]

    def embed(self, features, layer_norm, type_id, entangled_positions):
        x = self.embed_scale * features
        if self.args.entangle_position_embedding:
            x = x + entangled_positions
        if self.type_embedding is not None:
            x = x + self.type_embedding.weight[type_id]
        return self.dropout(x if layer_norm is None else layer_norm(x))

    def forward(self, src_tokens, src_lengths=None, **inputs):
        with bf16_autocast(getattr(self.args, "bf16_autocast", False), src_tokens.device):
            return self.encode_inputs(src_tokens, **inputs)

    def encode_inputs(self, src_tokens, patch_images=None, patch_masks=None, image=None, image_present=None,
                      **media):
        """Images as OFA passes them (``patch_images`` for every sample, ``patch_masks``) or as UniGround's
        batches hold them (``image`` for the samples that have one, ``image_present``)."""
        refuse_image_lists(media)
        if image is not None:
            patch_images, patch_masks = scatter_present(model_pixels(image), image_present), image_present
        for medium in ("video", "audio"):
            if media.get(medium) is not None:
                raise ValueError(f"OFA models read images and text only: {medium} input is not supported")
        patches = None if patch_images is None else self.image_patches(patch_images)
        return self.encode(src_tokens, patches, patch_masks)

    def image_patches(self, patch_images):
        features = self.embed_images(patch_images.contiguous(memory_format=torch.channels_last))
        ids, positions = self.image_positions(*features.shape[-2:], patch_images.device)
        return Patches(self.image_proj(features.permute(0, 2, 3, 1).flatten(1, 2)), ids, positions, 1)

    def encode(self, src_tokens, patches=None, patch_masks=None):
        """The encoder over ``[patches ; text]``; ``patch_masks`` (B) False marks a sample whose patches are padding."""
        batch, length = src_tokens.shape
        positions = self.embed_positions(torch.arange(length, device=src_tokens.device))[None]
        x = self.embed(self.embed_tokens(src_tokens), self.layernorm_embedding, 0, positions)
        padding = src_tokens.eq(self.padding_idx)
        position_embeddings = self.pos_ln(positions)  # 1 x T x C: one row serves the batch while it can
        image_ids = None
        if patches is not None:
            image_ids = patches.ids
            image_x = self.embed(patches.tokens, self.patch_layernorm_embedding, patches.type_id, patches.positions)
            x = torch.cat([image_x, x], dim=1)
            image_padding = padding.new_zeros(batch, image_ids.size(-1))
            if patch_masks is not None:
                image_padding[~patch_masks] = True
            padding = torch.cat([image_padding, padding], dim=1)
            image_positions = self.image_pos_ln(patches.positions)  # 1 or B rows
            position_embeddings = torch.cat([image_positions,
                                             position_embeddings.expand(image_positions.size(0), -1, -1)], dim=1)
        if padding.any():
            x = x * (1 - padding[..., None].type_as(x))
        bias = position_bias(self.pos_q_linear, self.pos_k_linear, position_embeddings, position_embeddings,
                             self.heads, self.pos_scaling)
        for index, layer in enumerate(self.layers):
            x = layer(x, self.layer_bias(bias, index, length, image_ids, padding))
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return {
            "encoder_out": [x.transpose(0, 1)],  # T x B x C, as fairseq's encoders
            "encoder_padding_mask": [padding],
            "position_embeddings": [position_embeddings.expand(batch, -1, -1)],
            # which sample each row stands for after beam search reorders them (UniGround's constraints read it)
            "sample_index": torch.arange(batch, device=src_tokens.device),
        }

    def layer_bias(self, bias, index, text_length, image_ids, padding):
        """The absolute bias (1 or B rows) plus this layer's relative biases on the text and image blocks,
        -inf at the padded keys: built as one B x H x T x S tensor, the only one of that size."""
        bias = torch.where(padding[:, None, None, :], float("-inf"), bias)
        text = self.token_rp_bucket[:text_length, :text_length]
        bias[:, :, -text_length:, -text_length:] += relative_bias(self.token_rel_pos_table_list[index], text)
        if image_ids is not None:  # N ids, or B x N when each sample keeps its own patches
            count = image_ids.size(-1)
            image = self.image_rp_bucket[image_ids[..., :, None], image_ids[..., None, :]]
            bias[:, :, :count, :count] += relative_bias(self.image_rel_pos_table_list[index], image)
        return bias

    def reorder_encoder_out(self, encoder_out, new_order):
        """The hypotheses of ``new_order`` share their sample's row of the encoder output, as in unify's
        encoder: ``memory_index`` maps each to its row; rows no hypothesis uses any more are dropped."""
        memory = encoder_out["encoder_out"][0]  # T x B x C
        rows, index = reorder_memory(encoder_out.get("memory_index"), new_order, memory.size(1))

        def kept(value, dim=0):
            return [value if rows is None else value.index_select(dim, rows)]
        return {
            "encoder_out": kept(memory, 1),
            "encoder_padding_mask": kept(encoder_out["encoder_padding_mask"][0]),
            "position_embeddings": kept(encoder_out["position_embeddings"][0]),
            "sample_index": encoder_out["sample_index"].index_select(0, new_order),
            "memory_index": index,
        }

    def max_positions(self):
        return self.args.max_source_positions


def refuse_image_lists(media):
    """OFA and UnIVAL read one image a row: a batch of image lists (``image_counts``) is refused."""
    if media.get("image_counts") is not None:
        raise ValueError("OFA and UnIVAL models read one image a row; rows of several images (an image list "
                         "in the cell) need a unify model")


class OFADecoder(FairseqIncrementalDecoder):
    def __init__(self, args, dictionary, embed_tokens, output_weight):
        super().__init__(dictionary)
        self.register_buffer("version", torch.Tensor([3]))
        dim, heads = args.decoder_embed_dim, args.decoder_attention_heads
        self.args, self.heads = args, heads
        self.padding_idx = embed_tokens.padding_idx
        self.embed_tokens = embed_tokens
        self.embed_scale = 1.0 if args.no_scale_embedding else math.sqrt(dim)
        self.layernorm_embedding = nn.LayerNorm(dim) if args.layernorm_embedding else None
        self.embed_positions = nn.Embedding(args.max_target_positions + 2, dim)
        self.pos_ln = nn.LayerNorm(dim)
        self.pos_scaling = (dim / heads * args.attn_scale_factor) ** -0.5
        self.self_pos_q_linear, self.self_pos_k_linear = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.cross_pos_q_linear, self.cross_pos_k_linear = nn.Linear(dim, dim), nn.Linear(dim, dim)
        # Used by OFA only for image-code generation (not supported here); kept so that checkpoints load.
        self.embed_image_positions = nn.Embedding(args.image_bucket_size ** 2 + 1, dim)
        self.image_pos_ln = nn.LayerNorm(dim)
        self.code_layernorm_embedding = nn.LayerNorm(dim) if args.code_layernorm_embedding else None
        self.image_rel_pos_table_list = rel_pos_tables(args.decoder_layers,
                                                       image_bucket_count(args.image_bucket_size), heads)
        self.dropout = nn.Dropout(args.dropout)
        self.layers = nn.ModuleList(OFADecoderLayer(args, rate)
                                    for rate in drop_path_rates(args.decoder_drop_path_rate, args.decoder_layers))
        self.layer_norm = nn.LayerNorm(dim) if args.decoder_normalize_before else None
        self.output_projection = nn.Linear(dim, output_weight.size(0), bias=False)
        self.output_projection.weight = output_weight
        self.token_rel_pos_table_list = rel_pos_tables(args.decoder_layers, 2 * args.token_bucket_size - 1, heads)
        self.register_buffer("token_rp_bucket", token_buckets(args.token_bucket_size), persistent=False)
        self.register_buffer("image_rp_bucket", image_buckets(args.image_bucket_size), persistent=False)
        self.register_buffer("image_position_idx", code_position_ids(args.code_image_size, args.image_bucket_size),
                             persistent=False)

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, features_only=False,
                **unused):
        with bf16_autocast(getattr(self.args, "bf16_autocast", False), prev_output_tokens.device):
            x = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
            x = x if features_only else self.output_projection(x)
        return x.float(), {"attn": [None]}  # the loss and beam scores in fp32 whatever the autocast

    def extract_features(self, prev_output_tokens, encoder_out, incremental_state=None, **unused):
        caches, position_cache, length = None, None, prev_output_tokens.size(1)
        new = slice(0, length)
        if incremental_state is not None:
            caches = self.get_incremental_state(incremental_state, "layers") or [{} for _ in self.layers]
            position_cache = self.get_incremental_state(incremental_state, "positions") or {}
            new = slice(length - 1, length)
        device = prev_output_tokens.device
        positions = self.pos_ln(self.embed_positions(torch.arange(length, device=device)))[None]
        query_positions = positions[:, new]
        self_bias = position_bias(self.self_pos_q_linear, self.self_pos_k_linear, query_positions, positions,
                                  self.heads, self.pos_scaling)
        cross_bias = masked(
            position_scores(position_heads(self.cross_pos_q_linear, query_positions, self.heads),
                            self.cross_position_keys(encoder_out, position_cache), self.pos_scaling),
            encoder_out["encoder_padding_mask"][0][:, None, None, :])
        memory_index = encoder_out.get("memory_index")
        keys_masked = prev_output_tokens.eq(self.padding_idx)[:, None, None, :]
        if incremental_state is None:
            keys_masked = keys_masked | torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
        x = self.embed_scale * self.embed_tokens(prev_output_tokens[:, new])
        if not self.args.disable_entangle:
            x = x + self.embed_positions(torch.arange(length, device=device))[None, new]
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = self.dropout(x)
        memory = encoder_out["encoder_out"][0].transpose(0, 1)
        buckets = self.token_rp_bucket[new, :length]
        for index, layer in enumerate(self.layers):
            bias = masked(self_bias + relative_bias(self.token_rel_pos_table_list[index], buckets), keys_masked)
            x = layer(x, memory, bias, cross_bias, None if caches is None else caches[index], memory_index)
        if caches is not None:
            self.set_incremental_state(incremental_state, "layers", caches)
            self.set_incremental_state(incremental_state, "positions", position_cache)
            if memory_index is not None:
                self.set_incremental_state(incremental_state, "memory_index", memory_index)
        return x if self.layer_norm is None else self.layer_norm(x)

    def cross_position_keys(self, encoder_out, cache):
        """The heads of the encoder positions' cross-attention keys, one row per memory row: computed once
        when decoding step by step (``cache``), as the cross-attention keys are, not at every step."""
        if cache is not None and "cross_position_k" in cache:
            return cache["cross_position_k"]
        keys = position_heads(self.cross_pos_k_linear, encoder_out["position_embeddings"][0], self.heads)
        if cache is not None:
            cache["cross_position_k"] = keys
        return keys

    def output_layer(self, features):
        return self.output_projection(features)

    def reorder_incremental_state(self, incremental_state, new_order):
        caches = self.get_incremental_state(incremental_state, "layers")
        if caches is not None:
            reorder_decoder_caches(self, incremental_state, new_order,
                                   caches + [self.get_incremental_state(incremental_state, "positions")])

    def max_positions(self):
        return self.args.max_target_positions


@register_model("ofa")
class OFAModel(FairseqEncoderDecoderModel):
    family = "OFA"  # named in errors
    encoder_class = OFAEncoder

    def __init__(self, args, encoder, decoder):
        super().__init__(encoder, decoder)
        self.args = args
        self.apply(init_bert_params)  # a fresh model starts as OFA's does

    @classmethod
    def add_args(cls, parser):
        """OFA's model options that this implementation computes, named as OFA names them (``--scale-attn``,
        ...); an option left out takes the architecture's default."""
        for name, default in cls.option_defaults().items():
            flag = "--" + name.replace("_", "-")
            if isinstance(default, bool):
                parser.add_argument(flag, action="store_true")
            elif default is not None:
                parser.add_argument(flag, type=type(default))
        parser.add_argument("--bf16-autocast", action="store_true",
                            help="run the encoder and decoder under bf16 autocast, as unify's option does")

    @staticmethod
    def option_defaults():
        return {**SIZE_DEFAULTS, **COMMON_DEFAULTS}

    @staticmethod
    def architectures():
        return OFA_ARCHITECTURES

    @classmethod
    def check_supported(cls, args):
        check_supported(args, cls.family)

    @classmethod
    def build_model(cls, args, task):
        return cls.from_args(args, len(task.source_dictionary), task.source_dictionary.pad(),
                             task.source_dictionary)

    @classmethod
    def from_args(cls, args, vocab_size, padding_idx, dictionary=None):
        """The model that ``args`` (a checkpoint's ``cfg['model']``) describes; refuses options it cannot honour."""
        architectures = cls.architectures()
        if getattr(args, "arch", None) not in architectures:
            raise UnsupportedOFAOption(f"unknown {cls.family} architecture {getattr(args, 'arch', None)!r} "
                                       f"(known: {', '.join(architectures)})")
        architectures[args.arch](args)
        cls.check_supported(args)
        encoder_embed = nn.Embedding(vocab_size, args.encoder_embed_dim, padding_idx=padding_idx)
        decoder_embed = encoder_embed if args.share_all_embeddings else nn.Embedding(
            vocab_size, args.decoder_embed_dim, padding_idx=padding_idx)
        output_weight = decoder_embed.weight if (args.share_all_embeddings or args.share_decoder_input_output_embed) \
            else nn.Parameter(torch.empty(vocab_size, args.decoder_embed_dim))
        encoder = cls.encoder_class(args, dictionary, encoder_embed)
        decoder = OFADecoder(args, dictionary, decoder_embed, output_weight)
        return cls(args, encoder, decoder)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, **images):
        return self.decoder(prev_output_tokens, encoder_out=self.encoder(src_tokens, src_lengths, **images))

    def upgrade_state_dict_named(self, state_dict, name):
        """Drop OFA's index buffers, which released checkpoints carry, after checking them against ours;
        extend the token embeddings to a dictionary that appends tokens to the checkpoint's."""
        prefix = f"{name}." if name else ""
        ours = {f"encoder.{key}": value for key, value in self.encoder.named_buffers()}
        ours.update({f"decoder.{key}": value for key, value in self.decoder.named_buffers()})
        for key in INDEX_BUFFERS:
            theirs = state_dict.pop(prefix + key, None)
            if theirs is not None and not torch.equal(theirs.to(ours[key].device), ours[key]):
                raise OFACheckpointError(f"{prefix + key} differs from the one its options give "
                                         f"({tuple(theirs.shape)} vs {tuple(ours[key].shape)})")
        self.append_new_token_rows(state_dict, prefix)
        self.drop_frozen_norm_counters(state_dict, prefix)
        super().upgrade_state_dict_named(state_dict, name)

    def drop_frozen_norm_counters(self, state_dict, prefix):
        """A checkpoint whose ResNet trained its BatchNorm (``num_batches_tracked``, a counter that computes
        nothing) loads into one built with ``freeze_resnet``, which keeps no counter."""
        ours = self.state_dict()
        for key in [key for key in state_dict if key.endswith(".num_batches_tracked")]:
            module = key[len(prefix):-len("num_batches_tracked")]
            if module + "running_mean" in ours and key[len(prefix):] not in ours:
                del state_dict[key]

    def append_new_token_rows(self, state_dict, prefix):
        """Rows for tokens the dictionary adds after the checkpoint's (fine-tuning on new tasks) start as this
        model's own freshly initialised ones; the checkpoint's rows are kept as they are."""
        current = self.state_dict()
        for key in EMBEDDING_KEYS:
            theirs, fresh = state_dict.get(prefix + key), current[key]
            if theirs is None or theirs.size(0) == fresh.size(0):
                continue
            if theirs.size(0) > fresh.size(0):
                raise OFACheckpointError(f"{prefix + key} has {theirs.size(0)} rows but the dictionary has only "
                                         f"{fresh.size(0)} entries")
            logger.info("%s: %d rows for new tokens", prefix + key, fresh.size(0) - theirs.size(0))
            state_dict[prefix + key] = torch.cat([theirs, fresh[theirs.size(0):].to(theirs)])

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        """fairseq's loading (evaluation, ``--finetune-from-model``), with missing and unexpected keys
        listed in one error: OFA's own loader would quietly fill missing keys with fresh values."""
        if strict:
            self.upgrade_state_dict(state_dict)
            expected = set(self.state_dict())
            missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
            if missing or unexpected:
                raise OFACheckpointError(
                    f"keys do not match the model its options describe; missing: {', '.join(missing) or 'none'}; "
                    f"unexpected: {', '.join(unexpected) or 'none'}")
        return super().load_state_dict(state_dict, strict, model_cfg, args)


def backbone_norm(args):
    """The ResNet's BatchNorm as OFA builds it: synchronised, with eps 1e-3, under ``sync_bn`` (one process's
    statistics here), else frozen under ``freeze_resnet``."""
    return {"batch_norm_eps": 1e-3 if args.sync_bn else 1e-5,
            "frozen_norm": args.freeze_resnet and not args.sync_bn}


UNSUPPORTED_WHEN_SET = ("encoder_prompt", "decoder_prompt", "adapter", "quant_noise_pq", "cross_self_attention",
                        "no_cross_attention", "adaptive_softmax_cutoff", "adaptive_input", "tie_adaptive_weights",
                        "base_layers", "encoder_layerdrop", "decoder_layerdrop",
                        "encoder_layers_to_keep", "decoder_layers_to_keep", "encoder_embed_path",
                        "decoder_embed_path")


def check_supported(args, family="OFA", unsupported_when_set=UNSUPPORTED_WHEN_SET):
    """Raise naming the first option whose value this implementation does not compute as ``family`` does."""
    for name in unsupported_when_set:
        if getattr(args, name, None):
            raise UnsupportedOFAOption(f"{family} option {name}={getattr(args, name)!r} is not supported")
    if args.resnet_type not in STAGE_BLOCKS:
        raise UnsupportedOFAOption(f"{family} option resnet_type={args.resnet_type!r} is not supported "
                                   f"(supported: {', '.join(STAGE_BLOCKS)})")
    for name in ("decoder_embed_dim", "decoder_output_dim", "decoder_input_dim"):
        if getattr(args, name) != args.encoder_embed_dim:
            raise UnsupportedOFAOption(f"{family} option {name}={getattr(args, name)} differs from "
                                       f"encoder_embed_dim={args.encoder_embed_dim}; not supported")
    for prefix in ("encoder", "decoder"):
        dim, heads = getattr(args, f"{prefix}_embed_dim"), getattr(args, f"{prefix}_attention_heads")
        if dim % heads:
            raise UnsupportedOFAOption(f"{family} option {prefix}_embed_dim={dim} is not divisible by "
                                       f"{prefix}_attention_heads={heads}")


COMMON_DEFAULTS = dict(
    encoder_normalize_before=True, decoder_normalize_before=True, attention_dropout=0.0, relu_dropout=0.0,
    activation_dropout=0.0, dropout=0.0, max_target_positions=1024, max_source_positions=1024,
    adaptive_softmax_cutoff=None, share_decoder_input_output_embed=True, share_all_embeddings=True,
    no_scale_embedding=True, layernorm_embedding=True, activation_fn="gelu", resnet_drop_path_rate=0.0,
    encoder_drop_path_rate=0.0, decoder_drop_path_rate=0.0, token_bucket_size=256, image_bucket_size=42,
    add_type_embedding=True, attn_scale_factor=2, code_image_size=128, patch_layernorm_embedding=True,
    code_layernorm_embedding=True, entangle_position_embedding=False, disable_entangle=False, sync_bn=False,
    freeze_resnet=False,
    scale_attn=False, scale_fc=False, scale_heads=False, scale_resids=False, orig_patch_image_size=256,
    interpolate_position=False)


SIZE_DEFAULTS = dict(  # ofa_tiny's, for the options' types
    encoder_embed_dim=256, encoder_ffn_embed_dim=1024, encoder_layers=4, encoder_attention_heads=4,
    decoder_embed_dim=256, decoder_ffn_embed_dim=1024, decoder_layers=4, decoder_attention_heads=4,
    resnet_type="resnet50")


def ofa_sizes(dim, layers, heads, decoder_layers, resnet_type):
    def architecture(args):
        set_sizes(args, encoder_embed_dim=dim, encoder_ffn_embed_dim=4 * dim, encoder_layers=layers,
                  encoder_attention_heads=heads, decoder_layers=decoder_layers, decoder_attention_heads=heads,
                  resnet_type=resnet_type)
        set_sizes(args, decoder_embed_dim=args.encoder_embed_dim, decoder_ffn_embed_dim=args.encoder_ffn_embed_dim)
        set_sizes(args, decoder_output_dim=args.decoder_embed_dim, decoder_input_dim=args.decoder_embed_dim,
                  **COMMON_DEFAULTS)
    return architecture


OFA_ARCHITECTURES = {
    "ofa_tiny": ofa_sizes(256, 4, 4, 4, "resnet50"),
    "ofa_medium": ofa_sizes(512, 4, 8, 4, "resnet101"),
    "ofa_base": ofa_sizes(768, 6, 12, 6, "resnet101"),
    "ofa_large": ofa_sizes(1024, 12, 16, 12, "resnet152"),
    "ofa_huge": ofa_sizes(1280, 24, 16, 12, "resnet152"),
}
for _name, _architecture in OFA_ARCHITECTURES.items():
    register_model_architecture("ofa", _name)(_architecture)


def checkpoint_options(state, path, model_class=OFAModel):
    args = (state.get("cfg") or {}).get("model") or state.get("args")
    architectures = model_class.architectures()
    if args is None or getattr(args, "arch", None) not in architectures:
        raise OFACheckpointError(f"{path}: not an {model_class.family} checkpoint (architecture "
                                 f"{getattr(args, 'arch', None)!r}; known: {', '.join(architectures)})")
    return copy.copy(args)


def load_ofa_model(path, trust_pickle=False):
    """An OFA checkpoint's model in eval mode, built from its own options, every key accounted for.

    Unlike OFA's loader, which quietly fills missing keys with fresh values, a
    missing or unexpected key is an error naming it.
    """
    return ofa_model_from_state(load_state(path, trust_pickle), path)


def ofa_model_from_state(state, path, model_class=OFAModel):
    args = checkpoint_options(state, path, model_class)
    weights = dict(state["model"])
    rows = weights["encoder.embed_tokens.weight"].size(0)
    if getattr(args, "vocab_size", rows) != rows:
        raise OFACheckpointError(f"{path}: options give vocab_size {args.vocab_size} but the embeddings have "
                                 f"{rows} rows")
    model = model_class.from_args(args, rows, getattr(args, "pad", 1))
    load_weights(model, weights, path)
    return model.eval()


def load_weights(model, weights, path):
    try:
        model.load_state_dict(weights)
    except (OFACheckpointError, RuntimeError) as error:  # keys, or shapes that differ
        raise OFACheckpointError(f"{path}: {error}") from None
