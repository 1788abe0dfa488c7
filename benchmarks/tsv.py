"""TSV reading speed: building the row index, reading rows at random, against a plain readline loop.

    .venv/bin/python benchmarks/tsv.py [--gigabytes 1.0] [--dir /tmp] [--caption-gigabytes 0.25]

Writes a TSV of at least ``--gigabytes`` in the OFA caption layout (id, image id, caption, objects,
base64 of a COCO-mini JPEG, cycling through the photos) and, for a file with many short rows, one
of ``--caption-gigabytes`` of text only; both are deleted afterwards. For each it reports the
index build (MB/s and bytes per row), opening it again with the index current (the stamp check: a stat
and 16 sampled blocks), random access through the index, and reading the rows in order with
TsvFile and with a plain ``for line in open(...)`` loop (alone, and decoding and splitting each line
as ``TsvFile.fields`` does).

"cold" rows first drop the file from the page cache (``posix_fadvise(DONTNEED)``, which works for
clean pages without privileges), so they read from the disk; "warm" rows read a cached file, the
usual case for a file read every epoch on a machine with enough memory. Each warm row is the best
of ``--repeats``; cold rows run once.
"""
import argparse
import base64
import glob
import os
import time

import numpy as np

from common import SHARED_DATA, best_time, machine_line, print_table

from data.tsv import TsvFile  # noqa: E402  (common puts the repository on the path)

MB = 1 << 20


def write_image_tsv(path, gigabytes):
    photos = sorted(glob.glob(os.path.join(SHARED_DATA, "coco-mini", "images", "*.jpg")))
    cells = []
    for photo in photos:
        with open(photo, "rb") as f:
            cells.append(base64.b64encode(f.read()).decode("ascii"))
    return _write(path, gigabytes, lambda i: f"{i}\t{i % len(cells)}\ta photo of things number {i}\tthing&&other\t"
                                             f"{cells[i % len(cells)]}\n")


def write_caption_tsv(path, gigabytes):
    words = "a man riding a wave on top of a surfboard next to the dog in the park".split()
    return _write(path, gigabytes, lambda i: f"{i}\t{i // 5}\t{' '.join(words[: 4 + i % 12])}\tthing\t{i % 97}.jpg\n")


def _write(path, gigabytes, row):
    target, written, rows = gigabytes * (1 << 30), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            lines = "".join(row(rows + k) for k in range(1000))
            f.write(lines)
            written += len(lines.encode())
            rows += 1000
        f.flush()
        os.fsync(f.fileno())  # dirty pages cannot be dropped from the cache
    return rows


def drop_from_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def remove_caches(path):
    for cache in glob.glob(f"{path}.index"):
        os.remove(cache)


def timed(call):
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def readline_loop(path):
    rows = 0
    with open(path, "rb") as f:
        for _ in f:
            rows += 1
    return rows


def readline_split_loop(path):
    """The same work per row as ``TsvFile.fields``: decode and split into cells."""
    rows = 0
    with open(path, "rb") as f:
        for line in f:
            line.rstrip(b"\n").decode("utf-8").split("\t")
            rows += 1
    return rows


def tsv_in_order(path):
    tsv = TsvFile(path)
    for i in range(len(tsv)):
        tsv.fields(i)
    return len(tsv)


def random_rows(path, count, seed=0):
    tsv = TsvFile(path)
    order = np.random.default_rng(seed).integers(0, len(tsv), size=count)
    read = 0
    for i in order.tolist():
        read += sum(len(cell) for cell in tsv.fields(i))
    return read


def measure(name, path, rows, repeats, random_count):
    size = os.path.getsize(path)
    table = []

    def row(what, cache, seconds, count, unit="rows"):
        table.append([f"{name}: {what}", cache, seconds, count / seconds, size / MB / seconds if unit == "rows" else
                      count / MB / seconds])

    for cache in ("cold", "warm"):
        remove_caches(path)
        if cache == "cold":
            drop_from_cache(path)
            seconds, _ = timed(lambda: TsvFile(path))
        else:
            seconds = best_time(lambda: (remove_caches(path), TsvFile(path)), repeats)
        row("index build", cache, seconds, rows)
    index_bytes = os.path.getsize(f"{path}.index")
    for cache in ("cold", "warm"):  # the index is current: the stamp (stat and 16 sampled blocks) is checked
        if cache == "cold":
            drop_from_cache(path)
            seconds, _ = timed(lambda: TsvFile(path))
        else:
            seconds = best_time(lambda: TsvFile(path), repeats)
        row("open, index current", cache, seconds, rows)
    for cache in ("cold", "warm"):
        if cache == "cold":
            drop_from_cache(path)
            seconds, read = timed(lambda: random_rows(path, random_count))
        else:
            seconds = best_time(lambda: random_rows(path, random_count), repeats)
            read = random_rows(path, random_count)
        table.append([f"{name}: {random_count:,} random rows (TsvFile)", cache, seconds, random_count / seconds,
                      read / MB / seconds])
    for what, call in (("in order, plain readline", readline_loop),
                       ("in order, plain readline + decode + split", readline_split_loop),
                       ("in order, TsvFile.fields", tsv_in_order)):
        for cache in ("cold", "warm"):
            if cache == "cold":
                drop_from_cache(path)
                seconds, _ = timed(lambda: call(path))
            else:
                seconds = best_time(lambda: call(path), repeats)
            row(what, cache, seconds, rows)
    summary = (f"{name}: {size / MB:,.0f} MB, {rows:,} rows ({size / rows:,.0f} B a row); index "
               f"{index_bytes:,} B = {index_bytes / rows:.3f} B a row")
    return summary, table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0, help="size of the TSV of base64 photos")
    parser.add_argument("--caption-gigabytes", type=float, default=0.25, help="size of the text-only TSV (0: none)")
    parser.add_argument("--dir", default="/tmp", help="where the files are written (and deleted)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--random-rows", type=int, default=2000)
    args = parser.parse_args(argv)
    print(machine_line())
    files = [("photos", os.path.join(args.dir, "uniground-bench-photos.tsv"), write_image_tsv, args.gigabytes)]
    if args.caption_gigabytes:
        files.append(("captions", os.path.join(args.dir, "uniground-bench-captions.tsv"), write_caption_tsv,
                      args.caption_gigabytes))
    summaries, table = [], []
    try:
        for name, path, write, gigabytes in files:
            rows = write(path, gigabytes)
            summary, rows_table = measure(name, path, rows, args.repeats, args.random_rows)
            summaries.append(summary)
            table += rows_table
            remove_caches(path)
            os.remove(path)
    finally:
        for _, path, _, _ in files:
            if os.path.exists(path):
                remove_caches(path)
                os.remove(path)
    for summary in summaries:
        print(summary)
    print_table(["workload", "cache", "seconds", "rows/s", "MB/s"], table)


if __name__ == "__main__":
    main()
