"""Convert COCO caption and/or instance annotations into caption, refcoco-format and refseg TSVs.

Writes ``<prefix>_caption_<split>.tsv`` (uniq_id, image_id, caption, objects, image) from a
captions JSON and ``<prefix>_refcoco_<split>.tsv`` (uniq_id, image_id, category name, x0,y0,x1,y1,
image) with one row per non-crowd instance from an instances JSON. Train captions give one row per
caption; other splits one row per image with its references joined by ``&&``. Images are embedded
as base64 of the original file bytes, each file read once.

The instances also give ``<prefix>_refseg_<split>.tsv`` on the generic layout (uniq_id, image,
video, audio, text, annotation-json): one row per (image, category), uniq_id
``<image_id>-<category_id>``, the category name as the referring expression and, as its mask, every
instance of that category in the image (``{"regions": [{"polygons": ...}, {"rle": ...}]}``, crowds
as compressed RLE). A category name alone cannot single out one of several instances, so the
expression refers to all of them, and each row has exactly one right mask.
"""
import argparse
import base64
import contextlib
import json
import logging
import os
import sys
from collections import defaultdict

from pycocotools import mask as mask_utils

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.tsv import format_row  # noqa: E402
from utils.files import atomic_open  # noqa: E402
from utils.progress import track  # noqa: E402


def clean_caption(text):
    """Single-spaced caption without tabs or newlines (they would break the TSV row) or '&&'."""
    return " ".join(text.split()).replace("&&", "&")


def format_box(box):
    """'x0,y0,x1,y1' with at most two decimals and no spaces."""
    return ",".join(f"{v:.2f}".rstrip("0").rstrip(".") for v in box)


def xywh_to_xyxy(bbox):
    x, y, width, height = bbox
    return [x, y, x + width, y + height]


def load_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def group_by_image(annotations):
    """{image_id: [annotation, ...]} keeping the file order."""
    groups = defaultdict(list)
    for annotation in annotations:
        groups[annotation["image_id"]].append(annotation)
    return groups


def caption_lines(image_id, captions, split, image_b64):
    """One row per caption for train, else one row per image with '&&'-joined references."""
    if split == "train":
        return [format_row([c["id"], image_id, clean_caption(c["caption"]), "", image_b64])
                for c in captions]
    references = "&&".join(clean_caption(c["caption"]) for c in captions)
    return [format_row([image_id, image_id, references, "", image_b64])] if captions else []


def refcoco_lines(image_id, instances, category_names, image_b64):
    """One row per non-crowd instance, its category name as the expression."""
    return [format_row([a["id"], image_id, category_names[a["category_id"]],
                      format_box(xywh_to_xyxy(a["bbox"])), image_b64])
            for a in instances if not a.get("iscrowd", 0)]


def segmentation_region(annotation):
    """An instance's segmentation as a refseg region: its polygons, or its RLE compressed (crowds)."""
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):
        return {"polygons": segmentation}
    height, width = segmentation["size"]
    counts = segmentation["counts"]
    if isinstance(counts, list):  # uncompressed, as COCO stores crowds
        counts = mask_utils.frPyObjects(segmentation, height, width)["counts"].decode("ascii")
    return {"rle": {"size": [height, width], "counts": counts}}


def refseg_lines(image_id, instances, category_names, image_b64):
    """One generic-layout row per category in the image, its mask all the category's instances."""
    by_category = defaultdict(list)
    for annotation in instances:
        if annotation.get("segmentation"):
            by_category[annotation["category_id"]].append(segmentation_region(annotation))
    return [format_row([f"{image_id}-{category_id}", image_b64, "", "", category_names[category_id],
                        json.dumps({"regions": regions}, separators=(",", ":"))])
            for category_id, regions in by_category.items()]


def read_image_base64(path):
    with open(path, "rb") as handle:
        return base64.b64encode(handle.read()).decode("ascii")


def missing_image_message(path, image_id, captions, instances):
    """Name the missing file and the first annotation that needs it."""
    first = captions[0] if captions else instances[0]
    kind = "caption" if captions else "instance"
    return f"image file not found: {path} (image_id {image_id}, needed by {kind} annotation {first['id']})"


def convert(images_dir, out_dir, split, prefix="coco", captions_json=None, instances_json=None,
            skip_missing=False):
    """Write the TSVs; returns ({path: rows written}, number of missing images skipped).

    Raises FileNotFoundError for a missing image unless ``skip_missing``.
    """
    captions_data = load_json(captions_json) if captions_json else {"images": [], "annotations": []}
    instances_data = load_json(instances_json) if instances_json else {"images": [], "annotations": []}
    images = {image["id"]: image for image in captions_data["images"] + instances_data["images"]}
    captions = group_by_image(captions_data["annotations"])
    instances = group_by_image(instances_data["annotations"])
    category_names = {c["id"]: c["name"] for c in instances_data.get("categories", [])}

    paths = {}
    if captions_json:
        paths["caption"] = os.path.join(out_dir, f"{prefix}_caption_{split}.tsv")
    if instances_json:
        paths["refcoco"] = os.path.join(out_dir, f"{prefix}_refcoco_{split}.tsv")
        paths["refseg"] = os.path.join(out_dir, f"{prefix}_refseg_{split}.tsv")
    counts = dict.fromkeys(paths.values(), 0)
    skipped = 0
    with contextlib.ExitStack() as stack:
        handles = {kind: stack.enter_context(atomic_open(path)) for kind, path in paths.items()}
        for image_id, image in track(images.items(), "converted", unit="images"):
            if image_id not in captions and image_id not in instances:
                continue
            path = os.path.join(images_dir, image["file_name"])
            if not os.path.isfile(path):
                if not skip_missing:
                    raise FileNotFoundError(missing_image_message(
                        path, image_id, captions[image_id], instances[image_id]))
                skipped += 1
                continue
            image_b64 = read_image_base64(path)
            lines = {"caption": caption_lines(image_id, captions[image_id], split, image_b64),
                     "refcoco": refcoco_lines(image_id, instances[image_id], category_names, image_b64),
                     "refseg": refseg_lines(image_id, instances[image_id], category_names, image_b64)}
            for kind, handle in handles.items():
                handle.writelines(lines[kind])
                counts[paths[kind]] += len(lines[kind])
    return counts, skipped


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="folder holding the images' file_name paths")
    parser.add_argument("--captions", help="COCO captions JSON")
    parser.add_argument("--instances", help="COCO instances JSON")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--split", required=True, choices=("train", "valid"))
    parser.add_argument("--prefix", default="coco", help="output file name prefix")
    parser.add_argument("--skip-missing", action="store_true",
                        help="skip images whose file is missing instead of stopping")
    args = parser.parse_args(argv)
    if not args.captions and not args.instances:
        parser.error("give --captions, --instances or both")
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    os.makedirs(args.out_dir, exist_ok=True)
    try:
        counts, skipped = convert(args.images, args.out_dir, args.split, args.prefix,
                                  args.captions, args.instances, args.skip_missing)
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    written = ", ".join(f"{path} ({rows} rows)" for path, rows in counts.items())
    skipped_note = f"; skipped {skipped} images with missing files" if skipped else ""
    print(f"wrote {written}{skipped_note}")


if __name__ == "__main__":
    main()
