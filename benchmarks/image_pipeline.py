"""Image decoding and transforms: COCO photos to the model's input, images per second on one core.

    .venv/bin/python benchmarks/image_pipeline.py [--size 384] [--repeats 5] [--device cpu|cuda] [--batch 32]

Every JPEG of /work/shared/data/coco-mini (in memory, so the disk is out of it) goes through
  - plain PIL: ``Image.open(...).convert("RGB").resize((size, size))``, with PIL's default filter
    (bicubic) and with bilinear, the filter of ours; it stops at a PIL image;
  - ours: ``data.media.decode_image`` then ``data.transforms.ImageTransform`` to uint8 pixels, as a
    task does at evaluation, stacked into batches of ``--batch`` as the loader delivers them, then
    normalised a batch at a time on ``--device`` (``models.image_encoder.model_pixels``, the model's
    first step) into the float tensor the model takes; also without JPEG draft decoding, and the
    loader's part alone (the uint8 batches).
The same at half the size, where JPEG draft decoding applies to these 640-pixel photos, and on the
photos re-encoded at twice their size (quality 90), like the large originals of many datasets.

One process, one torch thread. "img/s" is per wall-clock second, "img/cpu-s" per second of the
process's CPU time, which other work on a shared machine disturbs less (each the best of
``--repeats``); the ratios are over plain PIL's default in the same run.
"""
import argparse
import glob
import io
import os

import torch
from PIL import Image

from common import SHARED_DATA, best_times, machine_line, print_table

from data.media import decode_image  # noqa: E402  (common puts the repository on the path)
from data.transforms import ImageTransform  # noqa: E402
from models.image_encoder import model_pixels  # noqa: E402

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


def ours(blobs, size, batch, device=None, draft=True):
    """Decoded and transformed to uint8 pixels, stacked by ``batch``; normalised on ``device`` (None: not)."""
    transform = ImageTransform(size, train=False)
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else lambda: None

    def run():
        for start in range(0, len(blobs), batch):
            images = [decode_image(b, WHERE, draft_size=size if draft else None) for b in blobs[start:start + batch]]
            pixels = torch.stack([transform(image.pixels, frame=image.size).pixels for image in images])
            if device is not None:
                model_pixels(pixels.to(device, non_blocking=True))
        sync()
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384, help="the model's input side")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32, help="images a batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where batches are normalised")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    photos = coco_jpegs()
    sets = [(f"COCO-mini ({len(photos)} photos, 640 px)", photos, args.size),
            (f"COCO-mini ({len(photos)} photos, 640 px)", photos, args.size // 2),
            ("COCO-mini re-encoded at 2x (1280 px)", enlarged(photos), args.size)]
    print(machine_line(device))
    table = []
    for name, blobs, size in sets:
        baseline = None
        for what, call in (("plain PIL, bicubic (PIL's default)", plain_pil(blobs, size, Image.BICUBIC)),
                           ("plain PIL, bilinear", plain_pil(blobs, size, Image.BILINEAR)),
                           (f"ours, no draft, normalised on {device.type}", ours(blobs, size, args.batch, device,
                                                                                 draft=False)),
                           (f"ours, normalised on {device.type}", ours(blobs, size, args.batch, device)),
                           ("ours, the loader's part (uint8 batches)", ours(blobs, size, args.batch))):
            wall, cpu = (len(blobs) / seconds for seconds in best_times(call, args.repeats))
            baseline = baseline or (wall, cpu)
            table.append([f"{name} -> {size} px: {what}", wall, cpu, wall / baseline[0], cpu / baseline[1]])
    print_table(["workload", "img/s", "img/cpu-s", "x PIL default (wall)", "x PIL default (cpu)"], table)


if __name__ == "__main__":
    main()
