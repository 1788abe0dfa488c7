"""Image decoding and transforms: COCO photos to the model's input, images per second on one core.

    .venv/bin/python benchmarks/image_pipeline.py [--size 384] [--repeats 5]

Every JPEG of /work/shared/data/coco-mini (in memory, so the disk is out of it) goes through
  - plain PIL: ``Image.open(...).convert("RGB").resize((size, size))``, with PIL's default filter
    (bicubic) and with bilinear, the filter of ours; it stops at a PIL image;
  - ours: ``data.media.decode_image`` then ``data.transforms.ImageTransform``, as a task does at
    evaluation: it goes on to the normalised float tensor the model takes (also without JPEG draft
    decoding, and stopped where plain PIL stops: resized uint8 pixels).
The same at half the size, where JPEG draft decoding applies to these 640-pixel photos, and on the
photos re-encoded at twice their size (quality 90), like the large originals of many datasets.

One process, one torch thread. "img/s" is per wall-clock second (best of ``--repeats``), "img/cpu-s"
per second of the process's CPU time, which other work on a shared machine disturbs less.
"""
import argparse
import glob
import io
import os
import time

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from common import SHARED_DATA, best_time, machine_line, print_table

from data.media import decode_image  # noqa: E402  (common puts the repository on the path)
from data.transforms import ImageTransform  # noqa: E402

WHERE = ("benchmark.tsv", 1, 1, "image")


def coco_jpegs():
    blobs = []
    for path in sorted(glob.glob(os.path.join(SHARED_DATA, "coco-mini", "images", "*.jpg"))):
        with open(path, "rb") as f:
            blobs.append(f.read())
    return blobs


def enlarged(blobs, factor=2):
    out = []
    for blob in blobs:
        image = Image.open(io.BytesIO(blob))
        buffer = io.BytesIO()
        image.resize((image.width * factor, image.height * factor), Image.BICUBIC).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def plain_pil(blobs, size, resample):
    return lambda: [Image.open(io.BytesIO(b)).convert("RGB").resize((size, size), resample) for b in blobs]


def ours(blobs, size, draft=True):
    transform = ImageTransform(size, train=False)

    def run():
        for blob in blobs:
            image = decode_image(blob, WHERE, draft_size=size if draft else None)
            transform(image.pixels, frame=image.size)
    return run


def ours_to_uint8(blobs, size):
    """Where plain PIL stops: decoded and resized (the evaluation transform's resize), not yet normalised."""
    return lambda: [F.resize(decode_image(b, WHERE, draft_size=size).pixels, [size, size], antialias=True)
                    for b in blobs]


def rates(call, count, repeats):
    wall = best_time(call, repeats)
    cpu = best_time(call, repeats, clock=time.process_time)
    return count / wall, count / cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384, help="the model's input side")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    photos = coco_jpegs()
    sets = [(f"COCO-mini ({len(photos)} photos, 640 px)", photos, args.size),
            (f"COCO-mini ({len(photos)} photos, 640 px)", photos, args.size // 2),
            ("COCO-mini re-encoded at 2x (1280 px)", enlarged(photos), args.size)]
    print(machine_line())
    table = []
    for name, blobs, size in sets:
        baseline = None
        for what, call in (("plain PIL, bicubic (PIL's default)", plain_pil(blobs, size, Image.BICUBIC)),
                           ("plain PIL, bilinear", plain_pil(blobs, size, Image.BILINEAR)),
                           ("ours, no draft", ours(blobs, size, draft=False)),
                           ("ours", ours(blobs, size)),
                           ("ours, to uint8 pixels (where plain PIL stops)", ours_to_uint8(blobs, size))):
            wall, cpu = rates(call, len(blobs), args.repeats)
            baseline = baseline or (wall, cpu)
            table.append([f"{name} -> {size} px: {what}", wall, cpu, wall / baseline[0], cpu / baseline[1]])
    print_table(["workload", "img/s", "img/cpu-s", "x PIL default (wall)", "x PIL default (cpu)"], table)


if __name__ == "__main__":
    main()
