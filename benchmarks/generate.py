"""Generation speed: output tokens per second with beam 5, captioning and refcoco, batch 1 and 32.

    .venv/bin/python benchmarks/generate.py [--archs unify_tiny@64,unify_base@384,ofa_base] [--device cpu]
                                            [--precision fp32|bf16] [--attention fused,bmm]

``--archs`` names each model with the image size it reads (``arch@px``; 384 px without one): the demo
model, unify_tiny, trains and evaluates at 64 px (``run_scripts/train_common.sh``), the base models at
384. COCO-mini photos at that size (the caption rows and the refcoco rows of ``common.coco_world``) go
through the task's own generator (fairseq's SequenceGenerator; refcoco with its output constraint, four
bins) on an untrained model, so captions run to whatever length the weights give: the table shows the
mean output length. "tokens/s" counts the best hypothesis' tokens, EOS included, per second of the whole
``inference_step`` (encoder and beam search); best of ``--repeats`` after one warm-up run (the one whose
peak memory is taken), by the wall clock and by the process's CPU time ("tokens/cpu-s", steadier on a
shared machine; one torch thread by default). "x batch 1" is the throughput over batch 1's of the same
model and task (by CPU time on the CPU, wall time on a GPU); the last lines say, for each model and
task, whether the largest batch reaches ``TARGET`` times batch 1's throughput. "encoder s" times the
encoder alone on the batch (same clock); "search tokens/s" leaves it out: the beam search's own
throughput, and "search x batch 1" its ratio. "peak MB" is the memory one generation needs beyond what
was in use before (CPU: peak resident set; GPU: the allocator's peak), "encoder peak MB" that of the
encoder alone: where the first is not much above the second, the encoder sets the peak, not the beam
search.

"GFLOP/token" is one generation's matrix-multiply, convolution and attention FLOPs (``FlopCounterMode``)
per output token, "% of peak" their rate (same clock as "x batch 1") over the best rate of a large square
matrix product in the same precision, measured at the start. A batch's throughput cannot exceed that peak
over its FLOPs per token, so each verdict line also gives the ratio the largest batch would have at the
peak: where batch 1 already runs near it, no batching reaches the target.

OFA architectures run each batch on both attention implementations of ``--attention``: ``fused``
(SDPA's kernels with OFA's additive float bias) and ``bmm`` (explicit matrix products and softmax,
as OFA's own code); "x bmm" is the fused row's throughput over the bmm row's.
"""
import argparse
import itertools
import os
from argparse import Namespace

import torch

from common import (best_times, build_model, build_task, counted_flops, device_sync, machine_line, matmul_peak,
                    peak_memory, print_table, run_on_coco_world)

from models.ofa_layers import use_fused_attention  # noqa: E402  (common puts the repository on the path)

DEFAULT_IMAGE_SIZE = 384
TARGET = 3.0  # batch 32's throughput over batch 1's (issue 25)


def batch_of(task, size, device):
    dataset = task.dataset("valid")
    rows = itertools.islice(itertools.cycle(range(len(dataset))), size)
    batch = dataset.collater([dataset[i] for i in rows])
    batch["net_input"] = {k: v.to(device) for k, v in batch["net_input"].items()}
    return batch


def measure(task, model, batch_size, beam, device, repeats):
    """{wall s, cpu s, encoder s, tokens, peak MB, encoder peak MB, flops} of generating a batch of
    ``batch_size``; "encoder s" and "encoder peak" are those of the encoder alone on the batch (CPU time on
    the CPU, wall time on a GPU)."""
    batch = batch_of(task, batch_size, device)
    generator = task.build_generator([model], Namespace(beam=beam, max_len_b=32))
    encoder_input = {k: v for k, v in batch["net_input"].items() if k != "prev_output_tokens"}
    outputs = []

    def run():
        with torch.no_grad():
            outputs[:] = [hyps[0]["tokens"].numel() for hyps in task.inference_step(generator, [model], batch)]

    def encode():
        with torch.no_grad():
            model.encoder(**encoder_input)

    sync = device_sync(device)
    peak = peak_memory(run, device) / 2 ** 20  # also the warm-up
    seconds, cpu = best_times(run, repeats, sync=sync, warm_up=False)
    encoder = best_times(encode, repeats, sync=sync, warm_up=False)[1 if device.type == "cpu" else 0]
    return {"wall": seconds, "cpu": cpu, "encoder": encoder, "tokens": sum(outputs), "peak": peak,
            "encoder peak": peak_memory(encode, device) / 2 ** 20, "flops": counted_flops(run)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="unify_tiny@64,unify_tiny@384",
                        help="models, each arch@image-px (default px: 384)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="bf16 = bf16 autocast (default on GPU); fp32 is the CPU default")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attention", default="fused,bmm",
                        help="OFA architectures' attention implementations to compare: fused (SDPA), bmm (plain)")
    run_on_coco_world(parser, argv, run)


def run(args, world):
    device = torch.device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    print(machine_line(device))
    peak = matmul_peak(device, torch.bfloat16 if precision == "bf16" else torch.float32)
    table, verdicts = [], []
    batches = list(map(int, args.batches.split(",")))
    for model_name in args.archs.split(","):
        arch, _, size = model_name.partition("@")
        size = int(size or DEFAULT_IMAGE_SIZE)
        # bmm first, so that each fused row can give its ratio over the bmm row
        implementations = sorted(args.attention.split(","), key=lambda a: a != "bmm") if arch.startswith("ofa") \
            else ["fused"]
        for name in ("caption", "refcoco"):
            data = os.path.join(world, f"{name}.tsv")
            task = build_task(name, data, os.path.join(world, "vocab"), patch_image_size=size)
            task.load_dataset("valid")
            torch.manual_seed(0)
            model = build_model(task, arch, dropout=0.0, bf16_autocast=precision == "bf16").to(device).eval()
            rates, flops_per_token = {}, {}
            for batch_size in batches:
                for attention in implementations:
                    use_fused_attention(model, attention == "fused")
                    m = measure(task, model, batch_size, args.beam, device, args.repeats)
                    seconds = m["cpu"] if device.type == "cpu" else m["wall"]
                    rate, search = m["tokens"] / seconds, m["tokens"] / (seconds - m["encoder"])
                    rates[batch_size, attention] = rate, search
                    flops_per_token[batch_size, attention] = m["flops"] / m["tokens"]
                    first, first_search = rates[batches[0], attention]
                    table.append([f"{arch}@{size} {name}", attention, precision, args.beam, batch_size, m["wall"],
                                  m["cpu"], m["encoder"], m["tokens"] / batch_size, m["tokens"] / m["wall"],
                                  m["tokens"] / m["cpu"], rate / first, search, search / first_search,
                                  rate / rates.get((batch_size, "bmm"), (rate,))[0], m["peak"], m["encoder peak"],
                                  m["flops"] / m["tokens"] / 1e9, 100 * m["flops"] / seconds / peak])
                    print_table(HEADER, table[-1:])  # progress, in case a later row is cut off
            for attention in implementations if len(batches) > 1 else ():
                first, last = rates[batches[0], attention][0], rates[batches[-1], attention][0]
                ceiling = peak / flops_per_token[batches[-1], attention] / first
                verdicts.append(f"{arch}@{size} {name} ({attention}): batch {batches[-1]} is {last / first:.2f}x batch "
                                f"{batches[0]}; the {TARGET:g}x target is {'met' if last / first >= TARGET else 'NOT met'}"
                                f" (at the matmul peak, batch {batches[-1]} would be {ceiling:.2f}x)")
    print(f"COCO-mini photos at each model's image size, untrained weights, max_len_b 32; matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s")
    print_table(HEADER, table)
    print("\n".join(verdicts))


HEADER = ["model / task", "attention", "precision", "beam", "batch", "seconds", "cpu s", "encoder s", "tokens/sample",
          "tokens/s", "tokens/cpu-s", "x batch 1", "search tokens/s", "search x batch 1", "x bmm", "peak MB",
          "encoder peak MB", "GFLOP/token", "% of peak"]


if __name__ == "__main__":
    main()
