"""Building tasks and tiny models in tests the way fairseq builds them."""
import os
import socket
import subprocess
import sys
from argparse import Namespace

import torch
from fairseq import metrics, options, tasks
from fairseq.criterions import CRITERION_DATACLASS_REGISTRY, CRITERION_REGISTRY
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY
from fairseq.trainer import Trainer
from omegaconf import OmegaConf

from tasks.validation_metrics import logged_counts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


def tiny_model_args(**overrides):
    """fairseq options of a unify_tiny model small enough for CPU tests."""
    args = {"arch": "unify_tiny", "embed_dim": 32, "ffn_dim": 64, "attention_heads": 2, "encoder_layers": 1,
            "decoder_layers": 1, "dropout": 0.0, "image_backbone": "test_resnet", "image_backbone_out_index": 2}
    args.update(overrides)
    return args


def build_task(name, data, vocab_dir, from_checkpoint=False, **task_options):
    """A registered task set up from its dataclass config, the way fairseq-train does it (and with
    ``from_checkpoint``, the way fairseq sets up a checkpoint's task)."""
    cfg = OmegaConf.structured(TASK_DATACLASS_REGISTRY[name])
    options = {"data": str(data), "vocab_dir": str(vocab_dir), "patch_image_size": 64, "video_frame_size": 32,
               "num_frames": 4, "seed": 1}
    options.update(task_options)
    for key, value in options.items():
        cfg[key] = value
    return TASK_REGISTRY[name].setup_task(cfg, from_checkpoint=from_checkpoint)


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


def build_criterion(task, label_smoothing=0.1, name="constrained_label_smoothed_cross_entropy", **options):
    """A registered criterion (by default the cross entropy) with ``options`` on its config's defaults."""
    cfg = OmegaConf.structured(CRITERION_DATACLASS_REGISTRY[name])
    cfg.label_smoothing = label_smoothing
    cfg.sentence_avg = False
    for key, value in options.items():
        cfg[key] = value
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rank(rank, port, flags, log_path):
    """One of two ranks of ``flags`` (a script and its options), with the environment torchrun gives its workers
    (run_scripts/slurm/rank_env.sh gives each Slurm task the same)."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
               LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, *flags], cwd=ROOT, env=env, stdout=open(log_path, "w"),
                            stderr=subprocess.STDOUT)


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


# ---- every landed task on a few demo rows ----------------------------------------------------------------

FIRST = (0, 1, 2)
# task -> (valid file, training file or None, task options, rows taken)
LANDED = {
    "caption": ("caption_valid.tsv", None, {}, FIRST),
    "video_caption": ("video_caption_valid.tsv", None, {}, FIRST),
    "audio_caption": ("audio_caption_valid.tsv", None, {}, FIRST),
    "refcoco": ("refcoco_valid.tsv", None, {}, FIRST),
    "refseg": ("refseg_valid.tsv", None, {}, FIRST),
    "vqa": ("vqa_valid.tsv", "vqa_train.tsv", {}, FIRST),
    "video_qa": ("video_qa_valid.tsv", "video_qa_train.tsv", {}, FIRST),
    "snli_ve": ("snli_ve_valid.tsv", None, {}, FIRST),
    "entity_recognition": ("entity_valid.tsv", None, {"catalogue": "entities.tsv"}, FIRST),
    "temporal_grounding": ("temporal_valid.tsv", None, {}, (0, 1, 2, 3)),  # two video rows, two audio rows
    # the IE rows cycle through the modality mixes I, V, A, T, T+I, T+V, T+A, I+A, T+I+A, V+A
    "ner": ("ner_valid.tsv", None, {}, (4, 5, 8)),
    "re": ("re_valid.tsv", None, {}, (4, 6, 9)),
    "ee": ("ee_valid.tsv", None, {}, (5, 7, 8)),
    # rows of two images (tests/test_multi_image.py)
    "nlvr": ("nlvr_valid.tsv", None, {}, FIRST),
    "multi_image_qa": ("multi_image_qa_valid.tsv", "multi_image_qa_train.tsv", {}, FIRST),
    "multi_image_refcoco": ("multi_image_refcoco_valid.tsv", None, {}, FIRST),
}


def eval_args(data, **options):
    args = Namespace(batch_size=4, num_workers=0, beam=2, max_len_b=24, min_len=1, no_repeat_ngram_size=None,
                     lenpen=None, cpu=True, data=str(data), path=["in-process tiny model"], report_limit=50, task=None,
                     selected_cols=None, task_option=[], result_format=None)
    vars(args).update(options)
    return args


def few_rows(demo_dir, tmp_path, name, rows=FIRST):
    lines = read_lines(demo_dir / name)
    return write_tsv(tmp_path / name, [lines[i] for i in rows])


def landed_task(name, demo_dir, vocab_dir, out):
    """(task, data) of ``LANDED`` task ``name`` on its few demo rows, copied into ``out``."""
    valid, train, options, rows = LANDED[name]
    data = few_rows(demo_dir, out, valid, rows)
    if train:
        data = f"{demo_dir}/{train},{data}"
    options = {k: str(demo_dir / v) if k == "catalogue" else v for k, v in options.items()}
    return build_task(name, data, vocab_dir, **options), data


def validated(task, predictions, batch_size):
    """The metrics validation reports for ``predictions`` scored in batches: each batch's counts logged
    (as valid_step logs them) and reduced, as fairseq reduces a validation's batches."""
    with metrics.aggregate(new_root=True) as aggregated:
        for start in range(0, len(predictions), batch_size):
            batch = predictions[start:start + batch_size]
            log = {"ntokens": len(batch), "nsentences": len(batch),
                   **logged_counts(task.metric_prefix, task.validation_counts(batch))}
            task.reduce_metrics([log], build_criterion(task))
        return aggregated.get_smoothed_values()
