"""Building tasks and tiny models in tests the way fairseq builds them."""
import os
from argparse import Namespace

import torch
from fairseq import options, tasks
from fairseq.criterions import CRITERION_DATACLASS_REGISTRY, CRITERION_REGISTRY
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY
from fairseq.trainer import Trainer
from omegaconf import OmegaConf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def model_config(task, **overrides):
    """The tiny model's config as fairseq builds it, with ``overrides``."""
    options = tiny_model_args(**overrides)
    args = Namespace(**options)
    ARCH_CONFIG_REGISTRY[options["arch"]](args)
    cfg = OmegaConf.structured(ARCH_MODEL_REGISTRY[options["arch"]].__dataclass)
    for key, value in vars(args).items():
        if key in cfg:
            cfg[key] = value
    cfg.patch_image_size = task.cfg.patch_image_size
    cfg.num_mel_bins = task.cfg.num_mel_bins
    return cfg


def build_model(task, **overrides):
    return ARCH_MODEL_REGISTRY[tiny_model_args()["arch"]].build_model(model_config(task, **overrides), task)


def build_trainer(argv):
    """fairseq's Trainer on the CPU, built from train.py's arguments as fairseq-train builds it, its training
    data loaded."""
    parser = options.get_training_parser()
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, [*argv, "--user-dir", ROOT, "--cpu"]))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model = task.build_model(cfg.model)
    return Trainer(cfg, task, model, task.build_criterion(cfg.criterion))


def build_criterion(task, label_smoothing=0.1, bin_smoothing=0.0):
    name = "constrained_label_smoothed_cross_entropy"
    cfg = OmegaConf.structured(CRITERION_DATACLASS_REGISTRY[name])
    cfg.label_smoothing = label_smoothing
    cfg.bin_smoothing = bin_smoothing
    cfg.sentence_avg = False
    return CRITERION_REGISTRY[name].build_criterion(cfg, task)


def losses_over_steps(task, batch, steps, lr=3e-3, model=None):
    """Per-token losses of ``model`` (by default a fresh tiny one) trained with Adam on one batch for ``steps``
    steps."""
    torch.manual_seed(0)
    model = model or build_model(task)
    criterion = build_criterion(task)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, sample_size, _ = criterion(model, batch)
        optimizer.zero_grad()
        (loss / sample_size).backward()
        optimizer.step()
        losses.append(loss.item() / sample_size)
    return losses


def read_lines(path, count=None):
    """The first ``count`` lines of a TSV, without their newlines."""
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()[:count]


def write_tsv(path, rows):
    """Rows (str or bytes) one per line; returns the path as the task will report it."""
    path.write_bytes(b"".join((r if isinstance(r, bytes) else r.encode("utf-8")) + b"\n" for r in rows))
    return str(path)


def set_cell(row, column, value):
    """The row with its 1-based ``column`` replaced."""
    cells = row.split("\t")
    cells[column - 1] = value
    return "\t".join(cells)


def child_processes(pid):
    """{pid: name} of the live (not yet exited) child processes of ``pid``, from /proc."""
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                status = f.read()
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
        name, fields = status[status.index("(") + 1:status.rindex(")")], status[status.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] not in "ZX":
            children[int(entry)] = name
    return children
