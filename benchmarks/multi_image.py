"""Encoder throughput in images/s: rows of one image against rows of several, the same images in all.

    .venv/bin/python benchmarks/multi_image.py [--device cpu|cuda] [--arch unify_tiny] [--images 32]
        [--per-row 2 4] [--repeats 3] [--vocab-dir dataset/demo/vocab]

Each layout encodes ``--images`` random images (``--patch`` pixels a side) and a 16-token prompt per row
through the whole encoder (backbone, projection, transformer layers), random weights: "1 per row" is
today's layout, "K per row, first" puts a row's K images before its text, "K per row, marked" places
images 2..K after ``<image_k>`` markers inside the text (the splice). Every layout makes one backbone
call for all its images. Each figure is the best of ``--repeats`` after a warm-up.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import best_time, demo_vocabulary, machine_line, print_table, untrained_model  # noqa: E402

PROMPT_TOKENS = 16


def sources(vocab, rows, per_row, marked):
    """rows x (PROMPT_TOKENS + 1) prompts: text pieces, with markers of images 2..per_row when ``marked``."""
    text = torch.randint(vocab.dictionary.nspecial, vocab.first_bin, (rows, PROMPT_TOKENS))
    if marked:
        for k in range(1, per_row):
            text[:, k * PROMPT_TOKENS // per_row] = vocab.image_id(k)
    return torch.cat([text, torch.full((rows, 1), vocab.dictionary.eos())], dim=1)


def net_input(vocab, images, per_row, marked, device):
    rows = len(images) // per_row
    media = {"src_tokens": sources(vocab, rows, per_row, marked), "image": images[:rows * per_row],
             "image_present": torch.ones(rows, dtype=torch.bool)}
    if per_row > 1:
        media["image_counts"] = torch.full((rows,), per_row)
    return {key: value.to(device) for key, value in media.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="unify_tiny")
    parser.add_argument("--patch", type=int, default=128, help="image side in pixels")
    parser.add_argument("--images", type=int, default=32, help="images per batch, in every layout")
    parser.add_argument("--per-row", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--vocab-dir", default="dataset/demo/vocab")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    vocab = demo_vocabulary(args.vocab_dir)
    model = untrained_model(vocab, args.arch, args.patch, device)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, args.patch, args.patch), dtype=torch.uint8)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    layouts = [("1 per row", 1, False)]
    layouts += [(f"{k} per row, {place}", k, place == "marked") for k in args.per_row for place in ("first", "marked")]
    rows = []
    with torch.no_grad():
        for name, per_row, marked in layouts:
            batch = net_input(vocab, images, per_row, marked, device)
            seconds = best_time(lambda: model.encoder(**batch), args.repeats, sync=sync)
            count = len(batch["image"])
            rows.append([name, len(batch["src_tokens"]), count, seconds * 1000, count / seconds])
    print(machine_line(device))
    print(f"{args.arch}, {args.patch} px images, encoder forward")
    print_table(["layout", "rows", "images", "ms", "images/s"], rows)


if __name__ == "__main__":
    main()
