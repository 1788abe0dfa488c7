"""Building tasks and tiny models in tests the way fairseq builds them."""
from argparse import Namespace

from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY
from omegaconf import OmegaConf


def tiny_model_args(**overrides):
    """fairseq options of a unify_tiny model small enough for CPU tests."""
    args = {"arch": "unify_tiny", "embed_dim": 32, "ffn_dim": 64, "attention_heads": 2, "encoder_layers": 1,
            "decoder_layers": 1, "dropout": 0.0, "image_backbone": "test_resnet", "image_backbone_out_index": 2}
    args.update(overrides)
    return args


def build_task(name, data, vocab_dir, **task_options):
    """A registered task set up from its dataclass config, the way fairseq-train does it."""
    cfg = OmegaConf.structured(TASK_DATACLASS_REGISTRY[name])
    options = {"data": str(data), "vocab_dir": str(vocab_dir), "patch_image_size": 64, "video_frame_size": 32,
               "num_frames": 4, "seed": 1}
    options.update(task_options)
    for key, value in options.items():
        cfg[key] = value
    return TASK_REGISTRY[name].setup_task(cfg)


def build_model(task, **overrides):
    options = tiny_model_args(**overrides)
    args = Namespace(**options)
    ARCH_CONFIG_REGISTRY[options["arch"]](args)
    model_cls = ARCH_MODEL_REGISTRY[options["arch"]]
    cfg = OmegaConf.structured(model_cls.__dataclass)
    for key, value in vars(args).items():
        if key in cfg:
            cfg[key] = value
    cfg.patch_image_size = task.cfg.patch_image_size
    cfg.num_mel_bins = task.cfg.num_mel_bins
    return model_cls.build_model(cfg, task)
