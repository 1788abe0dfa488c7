"""Training speed: samples per second and model FLOP utilisation (MFU) of unify_tiny and unify_base.

    .venv/bin/python benchmarks/train_step.py                       # CPU: fp32 and bf16 autocast
    .venv/bin/python benchmarks/train_step.py --device cuda         # GPU: bf16, unify_base batch filling the card
    .venv/bin/python benchmarks/train_step.py --compile             # also with --compile-layers
    .venv/bin/python benchmarks/train_step.py --frozen-norm         # also with the backbone's BatchNorm frozen
    .venv/bin/python benchmarks/train_step.py --scst                # also the self-critical step
    .venv/bin/python benchmarks/train_step.py --archs ofa_tiny      # OFA: fused attention and plain bmm

A step is what fairseq's trainer does for one batch: the caption task's criterion (forward), backward
and an AdamW update, on a batch of COCO-mini photos at 384 px with their captions, collated by the
task. Step time is the best of ``--steps`` after two warm-up steps. With ``--scst``, each row is
followed by one of the self-critical criterion on the same batch (``--scst-args``: beam search of K
outputs per row in eval mode, their CIDEr-D rewards, then the loss's forward and backward on the K
outputs of every row), and the table ends with each self-critical step's time as a multiple of its
cross-entropy step's.

FLOPs per step are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one forward and
backward (matrix multiplies, convolutions and attention, causal attention counted in full;
element-wise work and the optimizer are not counted, as usual for MFU). The peak is measured in
the same run: the best rate of a large square matrix multiply in the step's precision on the same
device, right after the row's steps so that both see the same load ("load": the one-minute load
average then; above the core count, other processes shared the cores). MFU = FLOPs per step /
step time / that peak. bf16 rows run the model under bf16 autocast (``--bf16-autocast``), with
fp32 weights. "first step s" covers building the model and its first step (compiling, if asked).
OFA architectures run on each attention implementation of ``--attention`` in turn, on the same
batch: ``fused`` (SDPA's kernels with OFA's additive float bias) and ``bmm`` (explicit matrix
products and softmax, as OFA's own code); "x bmm" is a row's steps per second over the bmm row's
(by the process's CPU time on the CPU, "cpu step s", which a shared machine disturbs less).
"""
import argparse
import itertools
import os
import time

import torch

from common import (best_times, build_criterion, build_model, build_task, counted_flops, device_sync,
                    machine_line, matmul_peak, print_table, run_on_coco_world)

from criterions.self_critical import OFA_STAGE2_ARGS  # noqa: E402  (common puts the repository on the path)
from models.ofa_layers import use_fused_attention  # noqa: E402

PATCH = 384
FROZEN_NORM = {"image_backbone_norm": "frozen", "freeze_resnet": True}  # unify's option and OFA's


def batch_of(task, size, device):
    dataset = task.dataset("train")
    rows = itertools.islice(itertools.cycle(range(len(dataset))), size)
    batch = dataset.collater([dataset[i] for i in rows])
    return move(batch, device)


def move(value, device):
    if torch.is_tensor(value):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: move(v, device) for k, v in value.items()}
    return value


class Step:
    """One training step of a fresh model of ``arch`` on ``batch``."""

    def __init__(self, task, arch, batch, device, criterion=None, fused_attention=True, **options):
        torch.manual_seed(0)
        self.model = build_model(task, arch, **options).to(device).train()
        use_fused_attention(self.model, fused_attention)
        self.criterion = criterion or build_criterion(task)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.batch = batch

    def forward_backward(self):
        loss, sample_size, _ = self.criterion(self.model, self.batch)
        (loss / sample_size).backward()

    def __call__(self):
        self.optimizer.zero_grad(set_to_none=True)
        self.forward_backward()
        self.optimizer.step()

    def flops(self):
        self.optimizer.zero_grad(set_to_none=True)
        return counted_flops(self.forward_backward)


def largest_batch(task, arch, device, options, start=8, limit=4096):
    """The largest power-of-two batch whose step fits in the device memory."""
    fits, size = None, start
    while size <= limit:
        try:
            step = Step(task, arch, batch_of(task, size, device), device, **options)
            step()
            step()
            fits = size
        except torch.OutOfMemoryError:
            break
        finally:
            step = None
            torch.cuda.empty_cache()
        size *= 2
    if fits is None:
        raise RuntimeError(f"{arch}: not even a batch of {start} fits on {device}")
    return fits


def measure(task, arch, batch_size, device, precision, steps, options, criterion=None, attention="fused", profile=0):
    options = dict(options, bf16_autocast=precision == "bf16")
    batch = batch_of(task, batch_size, device)
    build_start = time.perf_counter()
    step = Step(task, arch, batch, device, criterion, fused_attention=attention == "fused", **options)
    step()  # the first step compiles when asked
    first = time.perf_counter() - build_start
    seconds, cpu = best_times(step, steps, sync=device_sync(device))
    # The peak right after the steps, so that both see the same load on a shared machine.
    peak = matmul_peak(device, torch.bfloat16 if precision == "bf16" else torch.float32)
    load = os.getloadavg()[0]
    flops = step.flops()
    if profile:
        print_profile(step, device, profile)
    parameters = sum(p.numel() for p in step.model.parameters())
    name = arch + (" +compile-layers" if options.get("compile_layers") else "") + (
        " +checkpoint-activations" if options.get("checkpoint_activations") else "") + (
        " +frozen-norm" if options.get("freeze_resnet") else "") + (" SCST" if criterion else "")
    return [name, attention, f"{parameters / 1e6:.1f}M", precision, batch_size, seconds, batch_size / seconds,
            flops / 1e9, flops / seconds / 1e12, peak / 1e12, 100 * flops / seconds / peak, first, load, cpu]


def print_profile(step, device, rows):
    activities = [torch.profiler.ProfilerActivity.CPU]
    activities += [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else []
    with torch.profiler.profile(activities=activities) as profiler:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(profiler.key_averages().table(sort_by=key, row_limit=rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--archs", default="unify_tiny,unify_base")
    parser.add_argument("--precisions", default=None, help="fp32,bf16 (default: both on CPU, bf16 on GPU)")
    parser.add_argument("--batch", default=None,
                        help="samples a step, per arch as tiny=N,base=N (any family's size) or ofa_base=N, or 'auto' (GPU: the largest power of two "
                             "that fits); default: 8 and 2 on CPU, 64 and auto on GPU")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also measure with --compile-layers")
    parser.add_argument("--checkpoint-activations", action="store_true", help="also measure with it")
    parser.add_argument("--frozen-norm", action="store_true",
                        help="also measure with the backbone's BatchNorm frozen (fine-tuning: unify's "
                             "--image-backbone-norm frozen, OFA's --freeze-resnet)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after each row, the N operators that took the most device time in one step")
    parser.add_argument("--scst", action="store_true", help="also measure the self-critical step of each row")
    parser.add_argument("--scst-args", default=OFA_STAGE2_ARGS, help="its generation arguments (JSON)")
    parser.add_argument("--attention", default="fused,bmm",
                        help="OFA architectures' attention implementations to compare: fused (SDPA), bmm (plain)")
    run_on_coco_world(parser, argv, run)


def run(args, world):
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    precisions = (args.precisions or ("bf16" if cuda else "fp32,bf16")).split(",")
    batches = dict(item.split("=") for item in (args.batch or ("tiny=64,base=auto" if cuda else "tiny=8,base=2"))
                   .split(","))
    data = os.path.join(world, "caption.tsv")
    task = build_task("caption", f"{data},{data}", os.path.join(world, "vocab"), patch_image_size=PATCH)
    task.load_dataset("train")
    scst = build_criterion(task, name="self_critical", scst_args=args.scst_args) if args.scst else None

    print(machine_line(device))
    variants = [{}]
    variants += [{"compile_layers": True}] if args.compile else []
    variants += [{"checkpoint_activations": True}] if args.checkpoint_activations else []
    variants += [FROZEN_NORM] if args.frozen_norm else []
    table = []
    for arch in args.archs.split(","):
        for precision in precisions:
            for options in variants:
                options = dict(options, dropout=0.1)
                size = batches.get(arch) or batches[arch.split("_", 1)[-1]]
                size = largest_batch(task, arch, device, dict(options, bf16_autocast=precision == "bf16")) \
                    if size == "auto" else int(size)
                rows = []
                for attention in args.attention.split(",") if arch.startswith("ofa") else ["fused"]:
                    for criterion in [None] + ([scst] if args.scst else []):
                        try:
                            rows.append(measure(task, arch, size, device, precision, args.steps, options, criterion,
                                                attention, args.profile))
                        except torch.OutOfMemoryError:  # bmm keeps the scores: a batch sized for fused may not fit
                            torch.cuda.empty_cache()
                            rows.append([arch, attention, "", precision, size, "out of memory"] + [""] * 8)
                for row in with_bmm_ratios(rows, device):
                    table.append(row)
                    print_table(HEADER, table[-1:])  # progress, in case a later row is cut off
    print(f"caption task, {PATCH} px COCO-mini photos, vocabulary of {len(task.vocab.dictionary)} tokens; "
          f"step = criterion forward + backward + AdamW")
    print_table(HEADER, table)
    if args.scst:
        print(f"self-critical step ({args.scst_args}) / cross-entropy step: " + ", ".join(
            f"{scst_row[0]} {scst_row[1]} {scst_row[3]}: {scst_row[5] / ce_row[5]:.1f}x"
            for ce_row, scst_row in zip(table, table[1:]) if scst_row[0] == ce_row[0] + " SCST"
            and isinstance(scst_row[5], float) and isinstance(ce_row[5], float)))


def with_bmm_ratios(rows, device):
    """Each row with its speed over the plain-bmm row of the same model: steps per second, by CPU time on
    the CPU (steadier on a shared machine)."""
    clock = 13 if device.type == "cpu" else 5
    bmm = {row[0]: row[clock] for row in rows if row[1] == "bmm" and isinstance(row[clock], float)}
    return [row + [bmm[row[0]] / row[clock] if row[0] in bmm and isinstance(row[clock], float) else ""]
            for row in rows]


HEADER = ["model", "attention", "params", "precision", "batch", "step s", "samples/s", "GFLOP/step", "TFLOP/s",
          "matmul peak TFLOP/s", "MFU %", "first step s", "load", "cpu step s", "x bmm"]


if __name__ == "__main__":
    main()
