"""What every benchmark prints and times the same way: the machine line, best-of timing, a table."""
import contextlib
import os
import platform
import sys
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

# Benchmarks run as scripts (python benchmarks/x.py) and import this module first: the one place
# they reach the repository's packages from.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")

from utils.logs import MESSAGE_ONLY, set_up_logging  # noqa: E402

set_up_logging(fmt=MESSAGE_ONLY)  # before fairseq is imported (utils/logs.py says why)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(device="cpu"):
    """The machine, the software and the load it ran under, for the head of a table."""
    text = (f"machine: {cpu_model()}, {os.cpu_count()} cores visible, load average {os.getloadavg()[0]:.2f}; "
            f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} torch threads")
    if str(device).startswith("cuda"):
        text += f"; GPU: {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    return text


def best_time(call, repeats, clock=time.perf_counter, sync=None, setup=None):
    """The fastest of ``repeats`` timed calls after one warm-up call (the one least disturbed by other
    processes); ``sync`` waits for queued device work, ``setup`` runs untimed before each call."""
    times = []
    for run in range(repeats + 1):
        if setup:
            setup()
        if sync:
            sync()
        start = clock()
        call()
        if sync:
            sync()
        if run:  # the first is the warm-up
            times.append(clock() - start)
    return min(times)


def best_times(call, repeats, sync=None, warm_up=True):
    """(wall seconds, process CPU seconds): the fastest of ``repeats`` timed calls by each clock, after one
    warm-up call (``warm_up``: the caller may have made it). CPU time is what other work on a shared
    machine disturbs least (one torch thread)."""
    if warm_up:
        call()
    wall, cpu = [], []
    for _ in range(repeats):
        if sync:
            sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        if sync:
            sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


# FlopCounterMode counts the CUDA attention kernels but not the CPU one, which does the same work.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
        lambda query, key, value, *args, **kwargs: sdpa_flop_count(query, key, value),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda grad, query, key, value, *args, **kwargs: sdpa_backward_flop_count(grad, query, key, value),
}


def counted_flops(call):
    """The matrix-multiply, convolution and attention FLOPs of one ``call`` (element-wise work is not counted,
    as usual for MFU)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        call()
    return counter.get_total_flops()


def device_sync(device):
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None


def matmul_peak(device, dtype, repeats=5):
    """FLOP/s of the best of ``repeats`` square matrix multiplies, as large as the device makes sensible."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    seconds = best_time(lambda: a @ b, repeats, sync=device_sync(device))
    return 2 * n ** 3 / seconds


def _status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory(call, device):
    """Bytes of memory ``call()`` needs at its peak beyond what was in use before: on CUDA the
    allocator's peak; on the CPU the process's peak resident set (VmHWM, reset first through
    /proc/self/clear_refs) over its resident set before (0 if it stayed below)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kb("VmRSS")
    call()
    return max(_status_kb("VmHWM") - before, 0) * 1024


def _cell(value):
    if not isinstance(value, float):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def print_table(header, rows):
    """Rows of cells under ``header``, each column as wide as its widest cell; numbers right-aligned."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[k]) for row in cells) for k in range(len(header))]
    for i, row in enumerate(cells):
        print("  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def coco_world(out):
    """COCO-mini as UniGround data in ``out``: caption.tsv (each photo with its first caption) and
    refcoco.tsv (each photo's largest object, "the <category>", its box), both in the OFA layouts with
    base64 photos, and a vocabulary built from them. Returns the folder."""
    import base64
    import json

    from data.tsv import format_row
    from preprocess import build_vocab

    coco = os.path.join(SHARED_DATA, "coco-mini")
    with open(os.path.join(coco, "captions.json")) as f:
        captions = json.load(f)
    with open(os.path.join(coco, "instances.json")) as f:
        instances = json.load(f)
    categories = {c["id"]: c["name"] for c in instances["categories"]}
    caption_rows, refcoco_rows = [], []
    for image in sorted(captions["images"], key=lambda i: i["id"]):
        with open(os.path.join(coco, "images", image["file_name"]), "rb") as f:
            photo = base64.b64encode(f.read()).decode("ascii")
        caption = next(a["caption"] for a in captions["annotations"] if a["image_id"] == image["id"])
        caption_rows.append(format_row([image["id"], image["id"], " ".join(caption.split()), "", photo]))
        objects = [a for a in instances["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        if objects:
            largest = max(objects, key=lambda a: a["area"])
            x, y, w, h = largest["bbox"]
            refcoco_rows.append(format_row([largest["id"], image["id"], f"the {categories[largest['category_id']]}",
                                            f"{x:.2f},{y:.2f},{x + w:.2f},{y + h:.2f}", photo]))
    os.makedirs(out, exist_ok=True)
    for name, rows in (("caption.tsv", caption_rows), ("refcoco.tsv", refcoco_rows)):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            f.writelines(rows)
    build_vocab.main(["--input", f"{out}/caption.tsv:2", "--input", f"{out}/refcoco.tsv:2",
                      "--out-dir", f"{out}/vocab", "--vocab-size", "400"])
    return out


@contextlib.contextmanager
def coco_world_at(folder=None):
    """The folder of ``coco_world``: ``folder`` (built there unless it already is), or a temporary
    folder removed afterwards."""
    if folder:
        if not os.path.exists(os.path.join(folder, "vocab", "dict.txt")):
            coco_world(folder)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="uniground-bench-") as scratch:
        yield coco_world(scratch)


def run_on_coco_world(parser, argv, run):
    """Parse ``argv`` with ``parser`` plus --world and --threads, then ``run(args, world_folder)``."""
    parser.add_argument("--world", default=None, help="folder for the COCO-mini TSVs (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: figures per core, steady on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with coco_world_at(args.world) as world:
        run(args, world)


def demo_vocabulary(vocab_dir):
    """The vocabulary in ``vocab_dir``, or, if it has none, one built into a temporary folder from a small
    demo world."""
    from preprocess import build_vocab, make_demo_data
    from data.vocab import Vocabulary

    if os.path.exists(os.path.join(vocab_dir, "dict.txt")):
        return Vocabulary(vocab_dir)
    out = tempfile.mkdtemp(prefix="uniground-bench-")
    make_demo_data.main(["--out", out, "--train-images", "300", "--valid-images", "1", "--train-videos", "0",
                         "--valid-videos", "0", "--train-audio", "0", "--valid-audio", "0", "--train-ie", "0",
                         "--valid-ie", "0"])
    build_vocab.main(["--input", f"{out}/caption_train.tsv:2", "--input", f"{out}/refcoco_train.tsv:2",
                      "--out-dir", f"{out}/vocab", "--vocab-size", "1000"])
    return Vocabulary(f"{out}/vocab")


def untrained_model(vocab, arch, patch_image_size, device, num_mel_bins=64, **options):
    """A model of ``arch`` with random weights over ``vocab``, without a task (benchmarks of decoding)."""
    from types import SimpleNamespace

    task = SimpleNamespace(vocab=vocab, source_dictionary=vocab.dictionary, target_dictionary=vocab.dictionary,
                           cfg=SimpleNamespace(patch_image_size=patch_image_size, num_mel_bins=num_mel_bins))
    return build_model(task, arch, **options).to(device).eval()


def build_task(name, data, vocab_dir, **options):
    """A registered task from its dataclass config, as fairseq-train sets it up."""
    from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY
    from omegaconf import OmegaConf

    import tasks  # noqa: F401  (registers the tasks)

    cfg = OmegaConf.structured(TASK_DATACLASS_REGISTRY[name])
    for key, value in dict(data=data, vocab_dir=vocab_dir, seed=1, **options).items():
        cfg[key] = value
    return TASK_REGISTRY[name].setup_task(cfg)


def build_model(task, arch, **options):
    """A model of a registered architecture at its own sizes, ``options`` (UnifyConfig fields) on top."""
    from argparse import Namespace

    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
    from omegaconf import OmegaConf

    import models  # noqa: F401  (registers the architectures)

    args = Namespace(arch=arch, **options)
    ARCH_CONFIG_REGISTRY[arch](args)
    model_class = ARCH_MODEL_REGISTRY[arch]
    if model_class.__dataclass is None:  # options as a Namespace (OFA's models)
        return model_class.build_model(args, task)
    cfg = OmegaConf.structured(model_class.__dataclass)
    for key, value in vars(args).items():
        if key in cfg:
            cfg[key] = value
    cfg.patch_image_size, cfg.num_mel_bins = task.cfg.patch_image_size, task.cfg.num_mel_bins
    return model_class.build_model(cfg, task)


def build_criterion(task, label_smoothing=0.1, name="constrained_label_smoothed_cross_entropy", **options):
    """A registered criterion (by default the cross entropy) with ``options`` on its config's defaults."""
    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY, CRITERION_REGISTRY
    from omegaconf import OmegaConf

    import criterions  # noqa: F401  (registers the criteria)

    cfg = OmegaConf.structured(CRITERION_DATACLASS_REGISTRY[name])
    cfg.label_smoothing, cfg.sentence_avg = label_smoothing, False
    for key, value in options.items():
        cfg[key] = value
    return CRITERION_REGISTRY[name].build_criterion(cfg, task)
