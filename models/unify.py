"""The unified encoder-decoder: media tokens and text tokens in, text and location tokens out.

The encoder reads ``[media tokens ; text tokens]``; each modality has its own
encoder in ``media_encoders`` and a type embedding, so adding a modality means
adding one entry. A row of several images has each one's tokens marked by an
image-index embedding; images that an ``<image_k>`` marker in the text places
come right after their marker, the others first. The decoder is incremental for
fairseq's SequenceGenerator. Token embeddings are shared by encoder input,
decoder input and output.
"""
import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import (FairseqEncoder, FairseqEncoderDecoderModel, FairseqIncrementalDecoder,
                            register_model, register_model_architecture)
from omegaconf import II, OmegaConf, open_dict
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.checkpoint import checkpoint

from geometry.codec import IMAGE_TOKENS, MAX_IMAGES
from models.audio_encoder import AudioEncoder
from models.image_encoder import ImageEncoder
from models.positions import coordinate_codes
from models.transformer import DecoderLayer, EncoderLayer, reorder_decoder_caches, reorder_memory
from models.video_encoder import VideoEncoder

MODALITY_TYPES = ("text", "image", "video", "audio")  # rows of the type embedding
MEDIA_INPUTS = {  # net_input keys each media encoder reads, besides "<medium>_present" (and "image_counts")
    "image": ("image",),
    "video": ("video", "video_times"),
    "audio": ("audio", "audio_lengths"),
}


@dataclass
class UnifyConfig(FairseqDataclass):
    embed_dim: int = field(default=128, metadata={"help": "model width"})
    ffn_dim: int = field(default=512, metadata={"help": "feed-forward hidden width"})
    attention_heads: int = field(default=4, metadata={"help": "attention heads"})
    encoder_layers: int = field(default=3, metadata={"help": "encoder layers"})
    decoder_layers: int = field(default=3, metadata={"help": "decoder layers"})
    dropout: float = field(default=0.1, metadata={"help": "dropout"})
    attention_dropout: float = field(default=0.0, metadata={"help": "attention dropout"})
    image_backbone: str = field(default="test_resnet", metadata={"help": "timm model name (features_only)"})
    image_backbone_out_index: int = field(default=2, metadata={"help": "which timm feature level to use"})
    image_backbone_weights: Optional[str] = field(
        default=None, metadata={"help": "local .pth/.safetensors file with backbone weights (never downloaded)"})
    image_backbone_norm: str = field(default="batch", metadata={
        "help": "the backbone's normalisation: batch (BatchNorm, as pretrained weights expect), group (GroupNorm, "
                "8 groups: no running statistics, so a backbone trained from scratch on images and video frames "
                "normalises each the same way in training and evaluation) or frozen (BatchNorm's statistics and "
                "affine kept as loaded, OFA's --freeze-resnet: for fine-tuning a trained backbone, a cheaper step)"})
    max_image_grid: int = field(default=64, metadata={"help": "largest feature grid side"})
    video_frame_grid: int = field(default=3, metadata={"help": "each video frame is pooled to this many cells a side"})
    separate_video_backbone: bool = field(default=False, metadata={
        "help": "give video frames a backbone and projection of their own (by default they share the image encoder's)"})
    checkpoint_activations: bool = field(default=False, metadata={
        "help": "recompute each encoder and decoder layer's activations in the backward pass rather than keep them "
                "(less memory for about a third more compute)"})
    bf16_autocast: bool = field(default=False, metadata={
        "help": "run the encoder and decoder under bf16 autocast, on GPU or CPU: weights, optimizer and loss stay "
                "fp32 (fairseq's --bf16 instead casts the whole model)"})
    compile_layers: bool = field(default=False, metadata={"help": "torch.compile each encoder and decoder layer"})
    layer_positions: bool = field(default=False, metadata={
        "help": "add each token's position (image rows and columns, frame and clip times, text order) to the "
                "queries and keys of every encoder layer and to the keys of the decoder's cross-attention, not "
                "only to the input (as DETR does): the layers keep telling where a token is"})
    position_values: bool = field(default=False, metadata={
        "help": "with --layer-positions, add the positions to the values of the decoder's cross-attention too: "
                "what the decoder reads from an image token then carries the token's cell, the code a location "
                "token starts from"})
    position_heads: int = field(default=0, metadata={
        "help": "with --layer-positions, add the positions in only this many of each attention's heads (0: in "
                "all): the others match tokens by content alone, where large image positions would otherwise "
                "outweigh what the text says"})
    region_head: bool = field(default=False, metadata={
        "help": "score every image cell of the encoder's output for lying in the region the text refers to "
                "(encoder_out['region_logits']), for the criterion's --region-loss-weight to train"})
    max_source_positions: int = field(default=1024, metadata={"help": "longest text input"})
    max_target_positions: int = field(default=1024, metadata={"help": "longest output"})
    patch_image_size: int = II("task.patch_image_size")
    num_mel_bins: int = II("task.num_mel_bins")


def build_embedding(vocab, dim):
    """Token embeddings; location tokens start as sinusoids of their coordinate.

    Neighbouring bins then begin with similar embeddings (and, through the tied
    output layer, similar logits), which speeds up learning to localise. A bin
    repeats its code in both halves of the channels, where image tokens keep
    their row and their column positions.
    """
    embed = nn.Embedding(len(vocab.dictionary), dim, padding_idx=vocab.dictionary.pad())
    with torch.no_grad():
        nn.init.normal_(embed.weight, std=dim ** -0.5)
        embed.weight[vocab.dictionary.pad()].zero_()
        embed.weight[vocab.first_bin:vocab.first_bin + vocab.num_bins] = location_codes(vocab.num_bins, dim)
        embed.weight[vocab.first_time:vocab.first_time + vocab.num_time_bins] = location_codes(
            vocab.num_time_bins, dim)
    return embed


def build_layers(cfg, layer_class, count, **options):
    layers = nn.ModuleList(
        layer_class(cfg.embed_dim, cfg.attention_heads, cfg.ffn_dim, cfg.dropout, cfg.attention_dropout, **options)
        for _ in range(count))
    if cfg.compile_layers:
        for layer in layers:
            layer.compile(dynamic=True)  # in place: parameter names stay those of the plain model
    return layers


def run_layer(layer, recompute, *inputs):
    """``layer(*inputs)``, its activations recomputed in the backward pass when asked and gradients flow."""
    if recompute and layer.training and torch.is_grad_enabled():
        return checkpoint(layer, *inputs, use_reentrant=False)
    return layer(*inputs)


def bf16_autocast(enabled, device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def location_codes(count, dim):
    """``count`` evenly spaced values in [0, 1] as rows of norm ~1, like the normal init."""
    return coordinate_codes(torch.linspace(0, 1, count), dim) * math.sqrt(2.0 / dim)


class UnifyEncoder(FairseqEncoder):
    def __init__(self, cfg, dictionary, embed_tokens):
        super().__init__(dictionary)
        dim = cfg.embed_dim
        self.embed_tokens = embed_tokens
        self.embed_positions = nn.Embedding(cfg.max_source_positions, dim)
        nn.init.normal_(self.embed_positions.weight, std=dim ** -0.5)
        self.embed_types = nn.Embedding(len(MODALITY_TYPES), dim)
        # as small as the token embeddings: at nn.Embedding's N(0, 1) the text type was ten times a word's
        # embedding, so after embed_norm the words were a tenth of each text token and barely told apart
        # (the demo mixture's refcoco gave one box whatever the expression)
        nn.init.normal_(self.embed_types.weight, std=dim ** -0.5)
        self.image_index = image_index_embedding(dim)
        self.marker_ids = [dictionary.index(token) for token in IMAGE_TOKENS]
        self.media_encoders = build_media_encoders(cfg)
        self.embed_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = build_layers(cfg, EncoderLayer, cfg.encoder_layers, position_heads=cfg.position_heads)
        self.final_norm = nn.LayerNorm(dim)
        self.region_head = nn.Linear(dim, 1) if cfg.region_head else None
        self.max_source_positions = cfg.max_source_positions
        self.checkpoint_activations, self.bf16_autocast = cfg.checkpoint_activations, cfg.bf16_autocast
        self.layer_positions = cfg.layer_positions

    def embed_text(self, src_tokens):
        """The B x T x C text tokens and their 1 x T x C positions."""
        positions = self.embed_positions(torch.arange(src_tokens.size(1), device=src_tokens.device))[None]
        types = self.embed_types.weight[MODALITY_TYPES.index("text")]
        return self.embed_tokens(src_tokens) + positions + types, positions

    def embed_media(self, name, media):
        """Tokens of the samples that have this medium, scattered into a B x N x C block, the B x N
        mask of the tokens to attend, and the tokens' positions (None unless ``layer_positions``): a
        B x N x C block, or 1 x N x C when every sample's are the same (images), which then also
        stand at the masked tokens of the samples without the medium, where they change nothing."""
        present = media[f"{name}_present"]
        tokens, keep, positions = self.media_encoders[name](*(media[key] for key in MEDIA_INPUTS[name]))
        tokens = tokens + self.embed_types.weight[MODALITY_TYPES.index(name)]
        block = tokens.new_zeros(present.size(0), tokens.size(1), tokens.size(2))
        block[present] = tokens
        block_keep = present[:, None].expand(-1, tokens.size(1)).clone()
        if keep is not None:
            block_keep[present] = keep
        position_block = None
        if self.layer_positions and positions.size(0) == 1:
            position_block = positions.to(block)
        elif self.layer_positions:
            position_block = torch.zeros_like(block)
            position_block[present] = positions.to(block)
        return block, block_keep, position_block

    def embed_images(self, media, src_tokens, text, text_keep, text_positions):
        """All images of the batch through the backbone at once (``image``: N x 3 x H x W, the rows' images in
        order; ``image_counts``: B, by default ``image_present``). Returns the block of the images no marker
        places (B x K*P x C, each row's in order, then padding), its mask and its positions (as
        ``embed_media``'s), and the text with the other images spliced in after their markers, its mask and
        its positions (1 x T x C, B x T' x C once images are spliced in)."""
        counts = media.get("image_counts")
        counts = media["image_present"].long() if counts is None else counts
        tokens, _, image_positions = self.media_encoders["image"](media["image"])
        rows = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        firsts = counts.cumsum(0) - counts
        index = torch.arange(len(rows), device=counts.device) - firsts[rows]
        tokens = tokens + self.embed_types.weight[MODALITY_TYPES.index("image")] + self.image_index(index)[:, None]
        placed = self.marker_places(src_tokens, counts)
        unplaced = torch.ones(len(rows), dtype=torch.long, device=tokens.device)
        for row, _, k in placed:
            unplaced[firsts[row] + k] = 0
        running = unplaced.cumsum(0)
        slot = running - 1 - (running - unplaced)[firsts[rows]]  # among the row's unplaced images
        front_counts = torch.zeros_like(counts).index_add_(0, rows, unplaced)
        width = max(int(front_counts.max()), 1)
        block = tokens.new_zeros(len(counts), width, *tokens.shape[1:])
        front = unplaced.bool()
        block[rows[front], slot[front]] = tokens[front]
        keep = (torch.arange(width, device=counts.device)[None] < front_counts[:, None])
        keep = keep[:, :, None].expand(-1, -1, tokens.size(1)).flatten(1)
        block_positions = None
        if self.layer_positions:  # every image has the same grid: the block's are shared by the batch
            block_positions = image_positions.to(block).repeat(1, width, 1)
        if placed:
            if self.layer_positions:
                image_tokens = image_positions.to(tokens).expand(len(tokens), -1, -1)
                text_positions, _ = self.splice(text_positions.expand(len(text), -1, -1), text_keep, image_tokens,
                                                firsts, placed)
            text, text_keep = self.splice(text, text_keep, tokens, firsts, placed)
        return block.flatten(1, 2), keep, block_positions, text, text_keep, text_positions

    def marker_places(self, src_tokens, counts):
        """(row, position, image) of each ``<image_k>`` marker in the sources, in order."""
        ids = torch.tensor(self.marker_ids, device=src_tokens.device)
        places = [tuple(p) for p in (src_tokens[..., None] == ids).nonzero().tolist()]
        for row, _, k in places:
            if k >= counts[row]:
                raise ValueError(f"sample {row}: <image_{k + 1}> in the text, but the sample has {int(counts[row])} "
                                 "images")
        return places

    def splice(self, text, text_keep, tokens, firsts, placed):
        """The text of each row with the tokens of the images its markers name right after the markers."""
        pieces, masks = [], []
        for row in range(text.size(0)):
            parts, start = [], 0
            for _, position, k in (p for p in placed if p[0] == row):
                parts.extend([text[row, start:position + 1], tokens[firsts[row] + k]])
                start = position + 1
            parts.append(text[row, start:])
            sequence = torch.cat(parts)
            pieces.append(sequence)
            length = int(text_keep[row].sum()) + len(sequence) - text.size(1)
            masks.append(torch.arange(len(sequence), device=text.device) < length)
        return pad_sequence(pieces, batch_first=True), pad_sequence(masks, batch_first=True)

    def forward(self, src_tokens, src_lengths=None, **media):
        """``media`` holds, per medium, the stacked inputs of the samples that have it (the keys
        of ``MEDIA_INPUTS``) and a B-long boolean ``<medium>_present``."""
        with bf16_autocast(self.bf16_autocast, src_tokens.device):
            return self.encode(src_tokens, media)

    def encode(self, src_tokens, media):
        blocks, keeps, positions = [], [], []
        text, text_positions = self.embed_text(src_tokens)
        text_keep = src_tokens.ne(self.dictionary.pad())
        for name in self.media_encoders:
            if media.get(name) is None:
                continue
            if name == "image":
                block, keep, position_block, text, text_keep, text_positions = self.embed_images(
                    media, src_tokens, text, text_keep, text_positions)
            else:
                block, keep, position_block = self.embed_media(name, media)
            blocks.append(block)
            keeps.append(keep)
            positions.append(position_block)
        blocks.append(text)
        keeps.append(text_keep)
        positions.append(text_positions)
        x = self.dropout(self.embed_norm(torch.cat(blocks, dim=1)))
        keep = torch.cat(keeps, dim=1)
        attend = keep[:, None, None, :]
        layer_positions = shared_positions(positions) if self.layer_positions else None
        for layer in self.layers:
            x = run_layer(layer, self.checkpoint_activations, x, attend, layer_positions)
        out = {
            "encoder_out": self.final_norm(x),
            "attend_mask": attend,
            "sample_index": torch.arange(src_tokens.size(0), device=src_tokens.device),
        }
        if layer_positions is not None:
            out["positions"] = layer_positions
        if self.region_head is not None and media.get("image") is not None:
            # the image block comes first; a row of one image has its cells there, in grid order
            out["region_logits"] = self.region_head(out["encoder_out"][:, :blocks[0].size(1)]).squeeze(-1)
        return out

    def upgrade_state_dict_named(self, state_dict, name):
        """A checkpoint from before rows of several images lacks the image-index table: zeros, under which
        its single images are encoded as they were."""
        key = f"{name}.image_index.weight" if name else "image_index.weight"
        if key not in state_dict:
            state_dict[key] = torch.zeros_like(self.image_index.weight)
        return state_dict

    def reorder_encoder_out(self, encoder_out, new_order):
        """The hypotheses of ``new_order`` (beam search: each sample's beams) share their sample's row of
        the encoder output: ``memory_index`` maps each to its row, and rows no hypothesis uses any more
        are dropped (``models.transformer.shared_rows_attention``)."""
        rows, index = reorder_memory(encoder_out.get("memory_index"), new_order, encoder_out["encoder_out"].size(0))
        return {
            **{key: encoder_out[key] if rows is None else encoder_out[key].index_select(0, rows)
               for key in ("encoder_out", "attend_mask")},
            **reordered_positions(encoder_out, rows),
            "sample_index": encoder_out["sample_index"].index_select(0, new_order),
            "memory_index": index,
        }

    def max_positions(self):
        return self.max_source_positions


def image_index_embedding(dim):
    """The embedding of each image's place in its row. The first image gets none (a zero row that stays
    zero), so one image per row is encoded as before there were several; the others start as standard
    normal draws, as large as an image token's projected content and its 2-D positions (a smaller code
    is lost beside them, and images are then hard to tell apart), from a generator of their own, which leaves
    the initialisation of the rest of the model as it was."""
    weight = torch.randn(MAX_IMAGES, dim, generator=torch.Generator().manual_seed(0))
    weight[0] = 0.0
    return nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=0)


def shared_positions(blocks):
    """The blocks' positions side by side: 1 x T x C when every block is shared by the whole batch (its
    projections in each layer are then computed once, not once per sample), else B x T x C."""
    batch = max(block.size(0) for block in blocks)
    return torch.cat([block.expand(batch, -1, -1) for block in blocks], dim=1)


def reordered_positions(encoder_out, rows):
    """The encoder output's ``positions`` entry for the memory ``rows`` (None: all); shared ones stay."""
    positions = encoder_out.get("positions")
    if positions is None:
        return {}
    return {"positions": positions if rows is None or positions.size(0) == 1 else positions.index_select(0, rows)}


def build_media_encoders(cfg):
    """One encoder per medium; video frames share the image encoder unless told otherwise."""
    def image_encoder():
        return ImageEncoder(cfg.embed_dim, cfg.image_backbone, cfg.image_backbone_out_index, cfg.patch_image_size,
                            cfg.max_image_grid, cfg.image_backbone_weights, cfg.image_backbone_norm)
    image = image_encoder()
    frames = image_encoder() if cfg.separate_video_backbone else image
    return nn.ModuleDict({
        "image": image,
        "video": VideoEncoder(frames, cfg.video_frame_grid),
        "audio": AudioEncoder(cfg.num_mel_bins, cfg.embed_dim),
    })


class UnifyDecoder(FairseqIncrementalDecoder):
    def __init__(self, cfg, dictionary, embed_tokens):
        super().__init__(dictionary)
        dim = cfg.embed_dim
        self.embed_tokens = embed_tokens
        self.embed_positions = nn.Embedding(cfg.max_target_positions, dim)
        nn.init.normal_(self.embed_positions.weight, std=dim ** -0.5)
        self.embed_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.position_values and not cfg.layer_positions:
            raise ValueError("--position-values needs --layer-positions (the positions it adds to the values)")
        self.layers = build_layers(cfg, DecoderLayer, cfg.decoder_layers, position_values=cfg.position_values,
                                   position_heads=cfg.position_heads)
        self.final_norm = nn.LayerNorm(dim)
        self.max_target_positions = cfg.max_target_positions
        self.checkpoint_activations, self.bf16_autocast = cfg.checkpoint_activations, cfg.bf16_autocast

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, features_only=False, **kwargs):
        with bf16_autocast(self.bf16_autocast, prev_output_tokens.device):
            x = self.decode(prev_output_tokens, encoder_out, incremental_state, features_only)
        return x.float(), {"attn": [None]}  # the loss and beam scores in fp32 whatever the autocast

    def decode(self, prev_output_tokens, encoder_out, incremental_state, features_only):
        caches, start = None, 0
        if incremental_state is not None:
            caches = self.get_incremental_state(incremental_state, "layers") or [{} for _ in self.layers]
            start = prev_output_tokens.size(1) - 1
            prev_output_tokens = prev_output_tokens[:, -1:]
        positions = torch.arange(start, start + prev_output_tokens.size(1), device=prev_output_tokens.device)
        x = self.embed_tokens(prev_output_tokens) + self.embed_positions(positions)[None]
        x = self.dropout(self.embed_norm(x))
        memory, memory_mask = encoder_out["encoder_out"], encoder_out["attend_mask"]
        memory_index, memory_positions = encoder_out.get("memory_index"), encoder_out.get("positions")
        for i, layer in enumerate(self.layers):
            x = run_layer(layer, self.checkpoint_activations, x, memory, memory_mask,
                          None if caches is None else caches[i], memory_index, memory_positions)
        if caches is not None:
            self.set_incremental_state(incremental_state, "layers", caches)
            if memory_index is not None:
                self.set_incremental_state(incremental_state, "memory_index", memory_index)
        x = self.final_norm(x)
        return x if features_only else self.output_layer(x)

    def output_layer(self, features):
        return nn.functional.linear(features, self.embed_tokens.weight)

    def reorder_incremental_state(self, incremental_state, new_order):
        caches = self.get_incremental_state(incremental_state, "layers")
        if caches is not None:
            reorder_decoder_caches(self, incremental_state, new_order, caches)

    def max_positions(self):
        return self.max_target_positions


@register_model("unify", dataclass=UnifyConfig)
class UnifyModel(FairseqEncoderDecoderModel):
    @classmethod
    def build_model(cls, cfg, task):
        fill_missing_options(cfg)
        embed = build_embedding(task.vocab, cfg.embed_dim)
        encoder = UnifyEncoder(cfg, task.source_dictionary, embed)
        decoder = UnifyDecoder(cfg, task.target_dictionary, embed)
        return cls(encoder, decoder)


def fill_missing_options(cfg):
    """Options added since a checkpoint was written take their defaults, so older checkpoints load."""
    defaults = UnifyConfig()
    with open_dict(cfg) if OmegaConf.is_config(cfg) else contextlib.nullcontext():
        for option in dataclasses.fields(UnifyConfig):
            if option.name not in cfg:
                setattr(cfg, option.name, getattr(defaults, option.name))


def set_sizes(args, **sizes):
    """An architecture's sizes, each overridable from the command line."""
    for name, value in sizes.items():
        setattr(args, name, getattr(args, name, value))


@register_model_architecture("unify", "unify_tiny")
def unify_tiny(args):
    set_sizes(args, embed_dim=128, ffn_dim=512, attention_heads=4, encoder_layers=3, decoder_layers=3,
              image_backbone="test_resnet", image_backbone_out_index=2)


@register_model_architecture("unify", "unify_base")
def unify_base(args):
    set_sizes(args, embed_dim=768, ffn_dim=3072, attention_heads=12, encoder_layers=6, decoder_layers=6,
              image_backbone="resnet101", image_backbone_out_index=3)


@register_model_architecture("unify", "unify_large")
def unify_large(args):
    set_sizes(args, embed_dim=1024, ffn_dim=4096, attention_heads=16, encoder_layers=12, decoder_layers=12,
              image_backbone="resnet152", image_backbone_out_index=3)
