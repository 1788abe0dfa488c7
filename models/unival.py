"""UnIVAL's encoder-decoder (mshukor/UnIVAL ``models/unival``): OFA's transformer (``models/ofa.py``) with
a video and an audio encoder beside the image one, so its released checkpoints run here unchanged.

What UnIVAL adds to OFA, each as its code computes it:

- the image backbone is OFA's 3-stage ResNet (``image_encoder_name=resnet``) or, with ``timm_resnet``,
  a 4-stage one (2048 channels at stride 32);
- video: a 3-D ResNeXt (``resnext50/101/152``, 3 stages; ``all_resnext*``, 4) on B x C x T x H x W
  clips; its T' x H' x W' features are flattened time-major and take the 2-D position ids of their
  cell, the same in every frame (positions ignore time);
- audio: PANN's Cnn6/10/14 (``pann_cnn*``) on raw waveforms, log-mel computed inside the model;
  its time x mel features are flattened time-major and take the first ids of a ceil(sqrt(N))-wide grid;
- each medium has its own projection and absolute position table; type embedding, patch LayerNorm,
  position LayerNorm and relative-position tables are shared (``add_mm_type_embedding`` gives each
  medium its own type, ``layernorm_<medium>_embedding`` a LayerNorm after its projection).

UnIVAL encodes one medium per batch: a batch that mixes media is refused (UnIVAL's own code gives a
size error, or silently the dummy image's embedding to a video sample). ``sample_*patch_num`` keeps a
random subset of patches in training, as UnIVAL does; at evaluation every patch is kept.
"""
import math

import torch
from fairseq.models import register_model, register_model_architecture
from torch import nn

from models.image_encoder import model_pixels
from models.ofa import (OFAEncoder, OFAModel, Patches, UnsupportedOFAOption, COMMON_DEFAULTS, SIZE_DEFAULTS,
                        UNSUPPORTED_WHEN_SET, backbone_norm, check_supported, image_position_ids, ofa_model_from_state,
                        ofa_sizes, refuse_image_lists, scatter_present)
from models.ofa_layers import layer_norm_if
from models.ofa_resnet import FOURTH_STAGE_BLOCKS, OFAResNet, ResNeXt3D
from models.pann import AUDIO_CFG, PANN
from utils.checkpoint import load_state

MEDIA = ("image", "video", "audio")  # UnIVAL's patch_types 0, 1, 2
VIDEO_DEPTHS = {"resnext50": (3, 4, 6), "resnext101": (3, 4, 23), "resnext152": (3, 8, 36)}
AUDIO_MODELS = {"pann_cnn6": "Cnn6", "pann_cnn10": "Cnn10", "pann_cnn14": "Cnn14"}
TIMM_RESNET_TYPES = ("resnet50", "resnet101", "resnet152")
UNIVAL_UNSUPPORTED_WHEN_SET = UNSUPPORTED_WHEN_SET + ("qk_norm", "with_cls", "enable_fusion", "freeze_resnet_video",
                                                      "patch_images_2")


class MixedMediaError(ValueError):
    pass


def video_backbone(name):
    """``resnext101`` -> its first 3 stages (1024 channels); ``all_resnext101`` -> all 4 (2048)."""
    depth = name[len("all_"):] if name.startswith("all_") else name
    if depth not in VIDEO_DEPTHS:
        raise UnsupportedOFAOption(f"UnIVAL option video_encoder_name={name!r} is not supported (supported: "
                                   f"{', '.join(list(VIDEO_DEPTHS) + ['all_' + d for d in VIDEO_DEPTHS])})")
    return ResNeXt3D(VIDEO_DEPTHS[depth] + (FOURTH_STAGE_BLOCKS,) * name.startswith("all_"))


def audio_config(args):
    """UnIVAL's AUDIO_CFG (or the checkpoint's ``audio_cfg``) with ``mel_bins`` and ``hop_size`` from the options."""
    config = dict(AUDIO_CFG)
    custom = getattr(args, "audio_cfg", None)
    if custom is not None and not isinstance(custom, dict):
        raise UnsupportedOFAOption(f"UnIVAL option audio_cfg={custom!r} is not supported (a dict or None)")
    config.update(custom or {})
    config.update(mel_bins=args.mel_bins, hop_size=args.hop_size)
    return config


def audio_backbone(args):
    if args.audio_encoder_name not in AUDIO_MODELS:
        raise UnsupportedOFAOption(f"UnIVAL option audio_encoder_name={args.audio_encoder_name!r} is not supported "
                                   f"(supported: {', '.join(AUDIO_MODELS)})")
    return PANN(AUDIO_MODELS[args.audio_encoder_name], **audio_config(args))


def audio_position_ids(count, grid):
    """The first ``count`` ids of a ceil(sqrt(count))-wide square: UnIVAL ignores the time x mel layout."""
    side = math.ceil(math.sqrt(count))
    return image_position_ids(side, side, grid)[:count]


def sample_patches(patches, keep):
    """A random subset of ``keep`` patches per sample (UnIVAL's ``sample_patch_num``): ids become B x keep."""
    batch, count, dim = patches.tokens.shape
    order = torch.stack([torch.randperm(count, device=patches.tokens.device)[:keep] for _ in range(batch)])
    positions = patches.positions.expand(batch, -1, -1)
    return Patches(patches.tokens.gather(1, order[..., None].expand(-1, -1, dim)), patches.ids[order],
                   positions.gather(1, order[..., None].expand(-1, -1, positions.size(-1))), patches.type_id)


class UnIVALEncoder(OFAEncoder):
    def __init__(self, args, dictionary, embed_tokens):
        super().__init__(args, dictionary, embed_tokens)
        dim, table_size = args.encoder_embed_dim, args.image_bucket_size ** 2 + 1
        self.mm_types = args.add_mm_type_embedding
        if self.mm_types:
            self.type_embedding = nn.Embedding(1 + len(MEDIA), dim)
        self.layernorm_image_embedding = layer_norm_if(args.layernorm_image_embedding, dim)
        if args.video_encoder_name:
            self.embed_videos = video_backbone(args.video_encoder_name)
            self.video_proj = nn.Linear(self.embed_videos.out_channels, dim)
            self.embed_video_positions = nn.Embedding(table_size, dim)
        self.layernorm_video_embedding = layer_norm_if(args.layernorm_video_embedding, dim)
        if args.audio_encoder_name:
            self.embed_audios = audio_backbone(args)
            self.audio_proj = nn.Linear(self.embed_audios.out_channels, dim)
            self.embed_audio_positions = nn.Embedding(table_size, dim)
        self.layernorm_audio_embedding = layer_norm_if(args.layernorm_audio_embedding, dim)

    @staticmethod
    def image_backbone(args):
        name = args.image_encoder_name
        if name == "timm_resnet":
            if args.resnet_type not in TIMM_RESNET_TYPES:
                raise UnsupportedOFAOption(f"UnIVAL option resnet_type={args.resnet_type!r} is not supported with "
                                           f"timm_resnet (supported: {', '.join(TIMM_RESNET_TYPES)})")
            return OFAResNet(args.resnet_type, 0.0, stages=4, **backbone_norm(args))
        if name != "resnet":
            raise UnsupportedOFAOption(f"UnIVAL option image_encoder_name={name!r} is not supported "
                                       f"(supported: resnet, timm_resnet)")
        return OFAEncoder.image_backbone(args)

    def encode_inputs(self, src_tokens, patch_images=None, patch_masks=None, patch_types=None, patch_videos=None,
                      patch_audios=None, **uniground_media):
        """Media as UnIVAL passes them (``patch_types`` naming each sample's medium, ``patch_images`` /
        ``patch_videos`` (B x C x T x H x W) / ``patch_audios`` (B x samples), ``patch_masks``) or as
        UniGround's batches hold them (``image`` / ``video`` (B' x T x C x H x W) / ``audio`` (B' x samples)
        for the samples that have the medium, ``<medium>_present``)."""
        refuse_image_lists(uniground_media)
        given = {"image": patch_images, "video": patch_videos, "audio": patch_audios}
        if patch_types is not None:
            medium = one_medium({MEDIA[int(kind)] for kind in patch_types.unique()})
            media = given[medium]
            if media is None:
                raise ValueError(f"patch_types names {medium} samples but patch_{medium}s is missing")
        else:
            medium, media, patch_masks = self.uniground_media(uniground_media, patch_images, patch_masks)
        patches = None if media is None else self.patches(medium, media)
        return self.encode(src_tokens, patches, patch_masks)

    @staticmethod
    def uniground_media(batch, patch_images, patch_masks):
        """(medium, B-row tensor, patch mask) of a UniGround batch; images alone may come as OFA passes them."""
        present = {medium: batch[medium] for medium in MEDIA if batch.get(medium) is not None}
        if not present:
            return "image", patch_images, patch_masks
        medium = one_medium({m for m in present if batch[f"{m}_present"].any()} or set(present))
        values = present[medium]
        if medium == "audio" and values.dim() != 2:
            raise ValueError(f"UnIVAL's audio encoder reads raw waveforms (B x samples), not {values.dim()}-D "
                             f"features: give the task --unival-inputs")
        if medium != "audio":
            values = model_pixels(values)
        if medium == "video":
            values = values.transpose(1, 2)  # UniGround's frames B' x T x C x H x W -> UnIVAL's B' x C x T x H x W
        mask = batch[f"{medium}_present"]
        return medium, scatter_present(values, mask), mask

    def patches(self, medium, media):
        if medium == "image":
            patches = self.image_patches(media)
        else:
            backbone = self.embed_videos if medium == "video" else self.embed_audios
            features = backbone(media)
            if medium == "video":
                frames, rows, cols = features.shape[-3:]
                ids = image_position_ids(rows, cols, self.args.image_bucket_size).repeat(frames)
            else:
                ids = audio_position_ids(features[0, 0].numel(), self.args.image_bucket_size)
            ids = ids.to(media.device)
            projection = getattr(self, f"{medium}_proj")
            table = getattr(self, f"embed_{medium}_positions")
            patches = Patches(projection(features.flatten(2).transpose(1, 2)), ids, table(ids)[None], 1)
        norm = getattr(self, f"layernorm_{medium}_embedding")
        if norm is not None:
            patches = patches._replace(tokens=norm(patches.tokens))
        if self.mm_types:
            patches = patches._replace(type_id=1 + MEDIA.index(medium))
        keep = self.sampled_patches(medium)
        if self.training and keep and keep < patches.ids.numel():
            patches = sample_patches(patches, keep)
        return patches

    def sampled_patches(self, medium):
        own = {"image": None, "video": self.args.sample_video_patch_num, "audio": self.args.sample_audio_patch_num}
        return own[medium] or self.args.sample_patch_num


def one_medium(media):
    if len(media) > 1:
        raise MixedMediaError(f"this batch mixes {' and '.join(sorted(media))} samples: a UnIVAL model encodes one "
                              f"medium per batch (its own code mixes them up); batch each medium separately")
    return next(iter(media))


UNIVAL_DEFAULTS = dict(
    image_encoder_name="resnet", video_encoder_name="", audio_encoder_name="", mel_bins=64, hop_size=480,
    add_mm_type_embedding=False, layernorm_image_embedding=False, layernorm_video_embedding=False,
    layernorm_audio_embedding=False, sample_patch_num=0, sample_video_patch_num=0, sample_audio_patch_num=0)


@register_model("unival")
class UnIVALModel(OFAModel):
    family = "UnIVAL"
    encoder_class = UnIVALEncoder

    @staticmethod
    def option_defaults():
        return {**SIZE_DEFAULTS, **COMMON_DEFAULTS, **UNIVAL_DEFAULTS}

    @staticmethod
    def architectures():
        return UNIVAL_ARCHITECTURES

    @classmethod
    def check_supported(cls, args):
        check_supported(args, cls.family, UNIVAL_UNSUPPORTED_WHEN_SET)


def unival_sizes(*sizes):
    ofa_architecture = ofa_sizes(*sizes)

    def architecture(args):
        ofa_architecture(args)
        for name, value in UNIVAL_DEFAULTS.items():
            if getattr(args, name, None) is None:
                setattr(args, name, value)
    return architecture


UNIVAL_ARCHITECTURES = {
    "unival_base": unival_sizes(768, 6, 12, 6, "resnet101"),
    "unival_large": unival_sizes(1024, 12, 16, 12, "resnet152"),
}
for _name, _architecture in UNIVAL_ARCHITECTURES.items():
    register_model_architecture("unival", _name)(_architecture)


def checkpoint_model_class(state):
    """UnIVALModel for a checkpoint of a UnIVAL architecture, else OFAModel."""
    args = (state.get("cfg") or {}).get("model") or state.get("args")
    return UnIVALModel if getattr(args, "arch", None) in UNIVAL_ARCHITECTURES else OFAModel


def load_unival_model(path, trust_pickle=False):
    """A UnIVAL checkpoint's model in eval mode, built from its own options, every key accounted for."""
    return ofa_model_from_state(load_state(path, trust_pickle), path, UnIVALModel)
