"""Convert RefCOCO, RefCOCO+ or RefCOCOg (``refs(unc).p`` / ``refs(umd).p`` and the ``instances.json``
beside it) into refcoco TSVs (boxes) and refseg TSVs (masks), one pair per split of the refs file.

Writes ``<prefix>_refcoco_<split>.tsv`` (sent_id, image_id, expression, x0,y0,x1,y1, image) and
``<prefix>_refseg_<split>.tsv`` on the generic layout (sent_id, image, video, audio, expression,
{"regions": [the referred object's polygons or RLE]}): one row per referring expression, as the
papers score them, split by the refs' own ``split`` field (train, val, testA, testB, test).
Image cells are the COCO file names under --media-dir (the train2014 folder).

The pickles are read as plain data: one naming any class is refused, nothing in it runs.

  python preprocess/refcoco_to_tsv.py --refs refcoco/refs(unc).p --instances refcoco/instances.json \\
      --media-dir coco/train2014 --out-dir data/refcoco --prefix refcoco
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.plain_pickle import load_plain_pickle  # noqa: E402
from preprocess.benchmark_common import ConversionError, file_part, new_parser, required, run  # noqa: E402
from preprocess.coco_to_tsv import clean_caption, format_box, segmentation_region, xywh_to_xyxy  # noqa: E402
from preprocess.ie_convert_common import load_json_file  # noqa: E402
from utils.progress import track  # noqa: E402

REGION_JSON = {"separators": (",", ":")}


def index_instances(path):
    """({image_id: image}, {annotation_id: annotation}) of a COCO instances JSON."""
    data, _ = load_json_file(path)
    images = {required(image, "id", path, f"image {i + 1}"): image
              for i, image in enumerate(required(data, "images", path, "top level"))}
    annotations = {required(a, "id", path, f"annotation {i + 1}"): a
                   for i, a in enumerate(required(data, "annotations", path, "top level"))}
    return images, annotations


def expressions(ref, path, item):
    """(sent_id, text) of a ref's sentences: the tokenised ``sent`` the papers train on, else ``raw``."""
    for sentence in required(ref, "sentences", path, item):
        text = (sentence.get("sent") or sentence.get("raw")) if isinstance(sentence, dict) else None
        yield required(sentence, "sent_id", path, item), clean_caption(text or "")


def convert(args, output):
    refs = load_plain_pickle(args.refs)
    if not isinstance(refs, list):
        raise ConversionError(args.refs, "top level", f"expected a list of refs, got {type(refs).__name__}")
    images, annotations = index_instances(args.instances)
    for number, ref in enumerate(track(refs, "converted", unit="refs"), start=1):
        item = f"ref {number} (ref_id {ref.get('ref_id') if isinstance(ref, dict) else '?'})"
        split = file_part(required(ref, "split", args.refs, item), args.refs, item)
        annotation = annotations.get(required(ref, "ann_id", args.refs, item))
        image = images.get(required(ref, "image_id", args.refs, item))
        if annotation is None or image is None:
            missing = "ann_id" if annotation is None else "image_id"
            raise ConversionError(args.refs, item, f"its {missing} {ref[missing]} is not in {args.instances}")
        image_cell = output.media_cell(required(image, "file_name", args.instances, f"image {ref['image_id']}"),
                                       args.refs, item)
        x0, y0, x1, y1 = box = xywh_to_xyxy(required(annotation, "bbox", args.instances, f"annotation {ref['ann_id']}"))
        region = segmentation_region(annotation) if annotation.get("segmentation") else None
        for sent_id, text in expressions(ref, args.refs, item):
            if not text:
                output.skip("empty expression")
                continue
            if x1 > x0 and y1 > y0:
                output.add(os.path.join(args.out_dir, f"{args.prefix}_refcoco_{split}.tsv"),
                           [sent_id, ref["image_id"], text, format_box(box), image_cell])
            else:
                output.skip("empty box (refcoco rows)")
            if region is not None:
                output.add(os.path.join(args.out_dir, f"{args.prefix}_refseg_{split}.tsv"),
                           [sent_id, image_cell, "", "", text, json.dumps({"regions": [region]}, **REGION_JSON)])
            else:
                output.skip("object without a segmentation (refseg rows)")


def parse_args(argv=None):
    parser = new_parser(__doc__)
    parser.add_argument("--refs", required=True, help="refs(unc).p (RefCOCO, RefCOCO+) or refs(umd).p (RefCOCOg)")
    parser.add_argument("--instances", required=True, help="the instances.json shipped beside the refs file")
    parser.add_argument("--prefix", default="refcoco", help="output file name prefix (refcoco, refcoco+, refcocog)")
    return parser.parse_args(argv)


def main(argv=None):
    return run(convert, parse_args(argv))


if __name__ == "__main__":
    main()
