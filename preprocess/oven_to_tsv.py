"""Convert OVEN (``oven_entity_<split>.jsonl``, ``oven_query_<split>.jsonl``) into entity_recognition TSVs
and the entity catalogue.

Writes ``<name>.tsv`` per file on the generic layout (data_id, image, video, audio, question,
``{"entity_id": ..., "seen": ...}``), ``seen`` from the row's ``data_split`` (``val_seen``,
``test_unseen``, ...; left out where the split says neither, as in train), so evaluation reports seen
and unseen accuracy and their harmonic mean as OVEN does. ``catalogue.tsv`` (id, name) lists the
entities: every Wikipedia entity of --wiki (``Wiki6M_ver_1_0.jsonl``: wikidata_id, wikipedia_title),
else those the converted rows name (``entity_id``, ``entity_text``). Image cells are --image-name
filled with the row's fields (default ``{image_id}.jpg``) under --media-dir.

  python preprocess/oven_to_tsv.py --jsonl oven_entity_train.jsonl oven_entity_val.jsonl \\
      oven_query_val.jsonl --wiki Wiki6M_ver_1_0.jsonl --media-dir oven/images --out-dir data/oven
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from preprocess.benchmark_common import ConversionError, jsonl_records, new_parser, required, run  # noqa: E402
from preprocess.coco_to_tsv import clean_caption  # noqa: E402
from utils.progress import track  # noqa: E402

SEEN = {"seen": True, "unseen": False}


def seen_of(split):
    """True/False for a ``*_seen``/``*_unseen`` split, None otherwise (train)."""
    return SEEN.get(str(split).rsplit("_", 1)[-1])


def convert_file(path, args, output, entities):
    name = os.path.basename(path).rsplit(".", 1)[0]
    out_path = os.path.join(args.out_dir, f"{name}.tsv")
    for number, record in track(jsonl_records(path), name, unit="rows"):
        item = f"line {number}"
        entity_id = str(required(record, "entity_id", path, item))
        entities.setdefault(entity_id, clean_caption(str(record.get("entity_text") or "")))
        try:
            image = args.image_name.format(**record)
        except KeyError as error:
            raise ConversionError(path, "--image-name", f"no field {error} in the row") from None
        annotation = {"entity_id": entity_id}
        seen = seen_of(required(record, "data_split", path, item))
        if seen is not None:
            annotation["seen"] = seen
        output.add(out_path, [required(record, "data_id", path, item), output.media_cell(image, path, item), "", "",
                              clean_caption(str(record.get("question") or "")), json.dumps(annotation)])


def add_catalogue(args, output, entities):
    out_path = os.path.join(args.out_dir, "catalogue.tsv")
    if args.wiki:
        entities = {}
        for number, record in track(jsonl_records(args.wiki), "catalogue", unit="entities"):
            item = f"line {number}"
            entities[str(required(record, "wikidata_id", args.wiki, item))] = clean_caption(
                str(required(record, "wikipedia_title", args.wiki, item)))
    for entity_id, entity_name in entities.items():
        if not entity_name:
            raise ConversionError(args.wiki or "the rows", f"entity {entity_id}", "has no name (give --wiki)")
        output.add(out_path, [entity_id, entity_name])


def convert(args, output):
    entities = {}
    for path in args.jsonl:
        convert_file(path, args, output, entities)
    add_catalogue(args, output, entities)


def parse_args(argv=None):
    parser = new_parser(__doc__)
    parser.add_argument("--jsonl", nargs="+", required=True, help="oven_entity_*.jsonl and oven_query_*.jsonl files")
    parser.add_argument("--wiki", help="Wiki6M_ver_1_0.jsonl: the catalogue of every entity (default: the rows' own)")
    parser.add_argument("--image-name", default="{image_id}.jpg",
                        help="image file name from the row's fields (default {image_id}.jpg)")
    return parser.parse_args(argv)


def main(argv=None):
    return run(convert, parse_args(argv))


if __name__ == "__main__":
    main()
