"""Convert Twitter-GMNER (grounded multimodal NER) to generic-layout TSV: entities grounded by boxes.

Input, as released at github.com/NUSTM/GMNER (Twitter10000/txt/{train,dev,test}.txt and
Twitter10000/xml/<IMGID>.xml): the text is Twitter CoNLL (see twitter_mner_to_tsv.py); each image
with groundable entities has a Pascal-VOC XML file whose ``<object>``s name an entity by its text
(``<name>Bill Walton</name>``) and give its box (``<bndbox><xmin>..<ymin>..<xmax>..<ymax>``, pixels
of the original image, whose size is ``<size><width>/<height>``). A tweet without an XML file, or
an entity whose text names no object, is ungroundable: its mention has no ground, and a prediction
for it must give none either (ie/scoring.py). Names match entity texts exactly after
whitespace is collapsed, as GMNER's own loader joins the entity's tokens with spaces and looks the
result up among the names; an object whose name matches no entity of its tweet is reported and
counted, not used.

Several boxes under one name (a group photo, a team) cannot be one box without losing some:
``--multi-box polygons`` (default) grounds the entity with a mask made of one rectangle per box, the
union of the regions the name refers to (mask IoU scores it); ``--multi-box enclosing`` uses the
smallest box around them all. GMNER's metric accepts a predicted box that overlaps any one of the
gold boxes; neither ground here reproduces that exactly.

Boxes must lie inside the image (1 pixel of slack, then clipped) and be non-empty. An XML error is a
BadInputError at its line and character in the XML file; CoNLL errors are located by line and field.
"""
import os
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ie.records import Entity, Ground, Mention  # noqa: E402
from preprocess.ie_convert_common import (CHARACTER, Where, add_output_args, conversion_from_args,  # noqa: E402
                                          dataset_schema, locate, new_parser, position, read_text, run)
from preprocess.twitter_mner_to_tsv import (SCHEMA, image_path, read_conll, sentence_entities,  # noqa: E402
                                            sentence_sample)

BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")
DATASET = "twitter-gmner"
SLACK = 1.0  # pixels a box may overrun the image before it is an error


def _object_where(path, text, index, tag="<object"):
    """Where the index-th <object> (or a tag inside it) starts in the XML text."""
    offset = -1
    for _ in range(index + 1):
        offset = text.find("<object", offset + 1)
    if offset < 0:
        return Where(path, 1, 1, CHARACTER)
    if tag != "<object":
        found = text.find(tag, offset)
        offset = found if found >= 0 else offset
    return Where(path, *position(text, offset), CHARACTER)


def read_boxes(path):
    """[(name, (x0, y0, x1, y1), Where)] of a GMNER VOC XML file."""
    text = read_text(path)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        line, column = e.position
        raise Where(path, line, column + 1, CHARACTER).error(f"invalid XML: {e}") from None
    size = _image_size(root, path, text)
    boxes = []
    for index, obj in enumerate(root.findall("object")):
        name = " ".join((obj.findtext("name") or "").split())
        if not name:
            raise _object_where(path, text, index, "<name").error("object without a <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise _object_where(path, text, index).error(f"object {name!r} has no <bndbox>")
        values = []
        for tag in BOX_TAGS:
            raw = bndbox.findtext(tag)
            try:
                values.append(float(raw))
            except (TypeError, ValueError):
                raise _object_where(path, text, index, f"<{tag}").error(
                    f"object {name!r}: <{tag}> must be a number, got {raw!r}") from None
        boxes.append((name, _checked_box(values, size, _object_where(path, text, index, "<bndbox"), name),
                      _object_where(path, text, index)))
    return boxes


def _image_size(root, path, text):
    width, height = root.findtext("size/width"), root.findtext("size/height")
    try:
        size = (float(width), float(height)) if width is not None and height is not None else None
    except ValueError:
        raise Where(path, *locate(text, "<size"), CHARACTER).error(
            f"<size> must hold numbers, got width {width!r}, height {height!r}") from None
    return size if size and size[0] > 0 and size[1] > 0 else None


def _checked_box(values, size, where, name):
    x0, y0, x1, y1 = values
    if size is not None:
        width, height = size
        if min(x0, y0) < -SLACK or x1 > width + SLACK or y1 > height + SLACK:
            raise where.error(f"object {name!r}: box {values} lies outside the {width:g}x{height:g} image")
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)
    if not (x0 < x1 and y0 < y1):
        raise where.error(f"object {name!r}: empty box {values}: need xmin < xmax and ymin < ymax")
    return (x0, y0, x1, y1)


def ground_of(boxes, multi_box):
    """One ground for the distinct boxes of an entity (see --multi-box)."""
    boxes = list(dict.fromkeys(boxes))
    if len(boxes) == 1:
        return Ground("box", boxes[0])
    if multi_box == "enclosing":
        return Ground("box", (min(b[0] for b in boxes), min(b[1] for b in boxes),
                              max(b[2] for b in boxes), max(b[3] for b in boxes)))
    return Ground("polygons", tuple((x0, y0, x1, y0, x1, y1, x0, y1) for x0, y0, x1, y1 in boxes))


def grounded_entities(entities, boxes, multi_box):
    """(entities with grounds where a box names them, [(name, Where)] of boxes naming none)."""
    by_name = {}
    for name, box, _ in boxes:
        by_name.setdefault(name, []).append(box)
    texts = {e.mention.text for e in entities}
    unmatched = [(name, where) for name, _, where in boxes if name not in texts]
    out = [Entity(e.type, Mention(e.mention.text, ground_of(by_name[e.mention.text], multi_box)))
           if e.mention.text in by_name else e for e in entities]
    return out, unmatched


def samples_from(sentences, args, conversion):
    def parse(sentence):
        entities = sentence_entities(sentence)
        xml_path = os.path.join(args.xml_dir, f"{sentence.image_id}.xml")
        boxes = read_boxes(xml_path) if os.path.isfile(xml_path) else []
        grounded, unmatched = grounded_entities(entities, boxes, args.multi_box)
        for name, where in unmatched:
            conversion.note(f"{where}: box named {name!r} matches no entity of the tweet at {sentence.where}")
        sample = sentence_sample(sentence, lambda image_available: grounded if image_available else entities,
                                 image_path(args.images, sentence.image_id))
        sample.notes["boxes naming no entity (unused)"] = len(unmatched)
        return sample
    return conversion.gather(sentences, parse)


def convert(args):
    conversion = conversion_from_args(args, DATASET, default_media_dir=args.images)
    schema = dataset_schema(args, lambda: SCHEMA)
    samples = samples_from(read_conll(args.conll, conversion), args, conversion)
    conversion.write(samples, schema, ["entities"])
    return conversion


def parse_args(argv):
    parser = new_parser(__doc__)
    parser.add_argument("--conll", required=True, help="Twitter10000/txt/{train,dev,test}.txt")
    parser.add_argument("--xml-dir", required=True, help="Twitter10000/xml, holding <IMGID>.xml")
    parser.add_argument("--images", required=True, help="folder holding <IMGID>.jpg")
    parser.add_argument("--multi-box", choices=("polygons", "enclosing"), default="polygons",
                        help="ground of an entity named by several boxes: a mask of one rectangle per box "
                             "(default) or the box enclosing them all")
    return add_output_args(parser, default_dataset=DATASET).parse_args(argv)


def main(argv=None):
    return run(convert, parse_args(argv))


if __name__ == "__main__":
    main()
