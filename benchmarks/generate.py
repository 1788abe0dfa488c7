"""Generation speed: output tokens per second with beam 5, captioning and refcoco, batch 1 and 32.

    .venv/bin/python benchmarks/generate.py [--archs unify_tiny] [--device cpu] [--precision fp32|bf16]

COCO-mini photos at 384 px (the caption rows and the refcoco rows of ``common.coco_world``) go
through the task's own generator (fairseq's SequenceGenerator; refcoco with its output constraint,
four bins) on an untrained model, so captions run to whatever length the weights give: the table
shows the mean output length. "tokens/s" counts the best hypothesis' tokens, EOS included, per
second of the whole ``inference_step`` (encoder and beam search); best of ``--repeats`` after one
warm-up.
"""
import argparse
import itertools
import os
from argparse import Namespace

import torch

from common import best_time, build_model, build_task, machine_line, print_table, run_on_coco_world

PATCH = 384


def batch_of(task, size, device):
    dataset = task.dataset("valid")
    rows = itertools.islice(itertools.cycle(range(len(dataset))), size)
    batch = dataset.collater([dataset[i] for i in rows])
    batch["net_input"] = {k: v.to(device) for k, v in batch["net_input"].items()}
    return batch


def measure(task, model, batch_size, beam, device, repeats):
    batch = batch_of(task, batch_size, device)
    generator = task.build_generator([model], Namespace(beam=beam, max_len_b=32))
    outputs = []

    def run():
        with torch.no_grad():
            outputs[:] = [hyps[0]["tokens"].numel() for hyps in task.inference_step(generator, [model], batch)]

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    seconds = best_time(run, repeats, sync=sync)
    tokens = sum(outputs)
    return [seconds, batch_size / seconds, tokens / batch_size, tokens / seconds]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="unify_tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="bf16 = bf16 autocast (default on GPU); fp32 is the CPU default")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    run_on_coco_world(parser, argv, run)


def run(args, world):
    device = torch.device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    print(machine_line(device))
    table = []
    for arch in args.archs.split(","):
        for name in ("caption", "refcoco"):
            data = os.path.join(world, f"{name}.tsv")
            task = build_task(name, data, os.path.join(world, "vocab"), patch_image_size=PATCH)
            task.load_dataset("valid")
            torch.manual_seed(0)
            model = build_model(task, arch, dropout=0.0, bf16_autocast=precision == "bf16").to(device).eval()
            for batch_size in map(int, args.batches.split(",")):
                row = measure(task, model, batch_size, args.beam, device, args.repeats)
                table.append([f"{arch} {name}", precision, args.beam, batch_size, *row])
    print(f"{PATCH} px COCO-mini photos, untrained weights, max_len_b 32")
    print_table(["model / task", "precision", "beam", "batch", "seconds", "samples/s", "tokens/sample",
                 "tokens/s"], table)


if __name__ == "__main__":
    main()
