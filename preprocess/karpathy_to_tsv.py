"""Convert a Karpathy split file (``dataset_coco.json``; ``dataset_flickr30k.json`` alike) into caption
TSVs ``<prefix>_caption_<split>.tsv`` (uniq_id, image_id, caption, objects, image).

Each image goes to the file of its ``split`` field (train, restval, val, test); with --restval-in-train
the restval images join train (113,287 training images for COCO, as the Karpathy-split results train).
The train file gives one row per sentence (uniq_id its ``sentid``); the others one row per image with its
references as written (``raw``) joined by ``&&``, as captions are scored. The image id is ``cocoid`` (or
``imgid`` where there is none); image cells are ``<filepath>/<filename>`` under --media-dir (the
folder holding COCO's train2014/ and val2014/).

  python preprocess/karpathy_to_tsv.py --karpathy dataset_coco.json --media-dir coco --restval-in-train \\
      --out-dir data/coco_karpathy
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from preprocess.benchmark_common import ConversionError, file_part, new_parser, required, run  # noqa: E402
from preprocess.coco_to_tsv import caption_lines, clean_caption  # noqa: E402
from preprocess.ie_convert_common import load_json_file  # noqa: E402
from utils.progress import track  # noqa: E402


def image_captions(image, path, item):
    """[{"id": sentid, "caption": raw}, ...] of an image; an empty caption is an error."""
    captions = []
    for number, sentence in enumerate(required(image, "sentences", path, item), start=1):
        where = f"{item}, sentence {number}"
        caption = clean_caption(str(required(sentence, "raw", path, where)))
        if not caption:
            raise ConversionError(path, where, "empty caption")
        captions.append({"id": required(sentence, "sentid", path, where), "caption": caption})
    return captions


def convert(args, output):
    data, _ = load_json_file(args.karpathy)
    for number, image in enumerate(track(required(data, "images", args.karpathy, "top level"), "converted",
                                         unit="images"), start=1):
        item = f"image {number}"
        image_id = image["cocoid"] if isinstance(image, dict) and "cocoid" in image else required(
            image, "imgid", args.karpathy, item)
        split = file_part(required(image, "split", args.karpathy, item), args.karpathy, item)
        if split == "restval" and args.restval_in_train:
            split = "train"
        captions = image_captions(image, args.karpathy, f"{item} (id {image_id})")
        if not captions:
            output.skip("image without sentences")
            continue
        name = os.path.join(image.get("filepath", ""), required(image, "filename", args.karpathy, item))
        cell = output.media_cell(name, args.karpathy, f"{item} (id {image_id})")
        output.add_lines(os.path.join(args.out_dir, f"{args.prefix}_caption_{split}.tsv"),
                         caption_lines(image_id, captions, split, cell))


def parse_args(argv=None):
    parser = new_parser(__doc__)
    parser.add_argument("--karpathy", required=True, help="the Karpathy split JSON (dataset_coco.json)")
    parser.add_argument("--restval-in-train", action="store_true",
                        help="write the restval images into the train file instead of their own")
    parser.add_argument("--prefix", default="coco", help="output file name prefix (default coco)")
    return parser.parse_args(argv)


def main(argv=None):
    return run(convert, parse_args(argv))


if __name__ == "__main__":
    main()
