"""TSV reading speed: building the row index, reading rows at random, against a plain readline loop.

    .venv/bin/python benchmarks/tsv.py [--gigabytes 1.0] [--dir /tmp] [--caption-gigabytes 0.25]

Writes a TSV of at least ``--gigabytes`` in the OFA caption layout (id, image id, caption, objects,
base64 of a COCO-mini JPEG, cycling through the photos) and, for a file with many short rows, one
of ``--caption-gigabytes`` of text only; both are deleted afterwards. For each it reports the
index build (MB/s and bytes per row), opening it again with the index current (the stamp check: a stat
and 16 sampled blocks), random access through the index, and reading the rows in order with
``TsvFile.fields`` and with plain loops: the reference is the readline loop of UnIVAL's and OFA's
reader (``data/file_dataset.py``: text-mode ``readline().rstrip("\n").split("\t")`` per row); also a
binary ``for line in f`` loop alone (the I/O floor) and with the decode and split ``fields`` does.
"x readline" is each in-order rate over the reference's, from the same interleaved rounds.

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


def readline_loop(path, columns=None):
    """UnIVAL's and OFA's way of reading rows in order (``FileDataset.__getitem__``): the selected columns
    (by default every column of the first row), each through its dtype (``str`` by default)."""
    rows = 0
    with open(path, encoding="utf-8") as f:
        if columns is None:
            columns = range(len(f.readline().split("\t")))
            f.seek(0)
        dtypes = [str] * len(columns)
        while line := f.readline():
            cells = line.rstrip("\n").split("\t")
            [dtype(cells[c]) for c, dtype in zip(columns, dtypes)]
            rows += 1
    return rows


def line_iteration(path, columns=None):
    rows = 0
    with open(path, "rb") as f:
        for _ in f:
            rows += 1
    return rows


def readline_split_loop(path, columns=None):
    """The same work per row as ``TsvFile.fields``: decode and split into cells, then select."""
    rows = 0
    with open(path, "rb") as f:
        for line in f:
            cells = line.rstrip(b"\n").decode("utf-8").split("\t")
            if columns is not None:
                cells = [cells[c] for c in columns]
            rows += 1
    return rows


def tsv_in_order(path, columns=None):
    tsv = TsvFile(path, selected_cols=columns)
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


CAPTION_COLUMNS = [0, 4, 2]  # the caption task's --selected-cols
IN_ORDER = (("in order, plain readline loop (UnIVAL's reader)", readline_loop),
            ("in order, binary line iteration alone", line_iteration),
            ("in order, binary line iteration + decode + split", readline_split_loop),
            ("in order, TsvFile.fields", tsv_in_order))


def in_order(name, path, rows, repeats):
    """Reading every row in order: cold once each, then warm in ``repeats`` interleaved rounds (the best
    CPU time of each), so that the ratios compare runs under the same load; all columns, then the
    caption task's (``CAPTION_COLUMNS``)."""
    size = os.path.getsize(path)
    table = []
    for what, call in IN_ORDER:
        drop_from_cache(path)
        seconds, _ = timed(lambda: call(path))
        table.append([f"{name}: {what}", "cold", seconds, rows / seconds, size / MB / seconds, ""])
    for columns in (None, CAPTION_COLUMNS):
        best = {what: float("inf") for what, _ in IN_ORDER}
        for _ in range(repeats):
            for what, call in IN_ORDER:
                start = time.process_time()
                call(path, columns)
                best[what] = min(best[what], time.process_time() - start)
        reference = best[IN_ORDER[0][0]]
        chosen = "all columns" if columns is None else f"columns {','.join(map(str, columns))}"
        for what, _ in IN_ORDER:
            seconds = best[what]
            table.append([f"{name}: {what}, {chosen}", "warm, cpu", seconds, rows / seconds, size / MB / seconds,
                          reference / seconds])
    return table


def measure(name, path, rows, repeats, random_count):
    size = os.path.getsize(path)
    table = []

    def row(what, cache, seconds, count, unit="rows"):
        table.append([f"{name}: {what}", cache, seconds, count / seconds, size / MB / seconds if unit == "rows" else
                      count / MB / seconds, ""])

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
                      read / MB / seconds, ""])
    table += in_order(name, path, rows, repeats)
    summary = (f"{name}: {size / MB:,.0f} MB, {rows:,} rows ({size / rows:,.0f} B a row); index "
               f"{index_bytes:,} B = {index_bytes / rows:.3f} B a row")
    return summary, table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0, help="size of the TSV of base64 photos")
    parser.add_argument("--caption-gigabytes", type=float, default=0.25, help="size of the text-only TSV (0: none)")
    parser.add_argument("--dir", default="/tmp", help="where the files are written (and deleted)")
    parser.add_argument("--repeats", type=int, default=5)
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
    print_table(["workload", "cache", "seconds", "rows/s", "MB/s", "x readline"], table)


if __name__ == "__main__":
    main()
