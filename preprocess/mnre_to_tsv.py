"""Convert MNRE (multimodal relation extraction on tweets) to generic-layout TSV: relations.

Input, as released at github.com/thecharm/MNRE (mnre_txt/mnre_{train,val,test}.txt): one instance
per line, a Python dict literal (single-quoted; JSON is read too) with ``token`` (the tweet's
tokens), ``h`` and ``t`` (head and tail: ``name`` and ``pos`` [start, end) token indices),
``img_id`` (the image file name; the README calls it ``image_id``, also read) and ``relation``
(e.g. ``/per/org/member_of``, or ``None`` for a pair without relation). A tweet with several
entity pairs spans several lines. The first release (Version-1/mnre_txt_org.zip, txt/ours_*.txt)
has the same lines, with two quirks read and counted: an ``img_id`` that is an integer (657157)
names ``<id>.jpg``, as its other ids are written; a ``name`` that differs from its tokens only in
whitespace ('#AQAST' for the tokens '# AQAST') stands for those tokens; a pair without relation is
``none`` there.

Output: one row per tweet (lines grouped by image and tokens, in first-seen order), text = tokens
joined by single spaces, annotation ``{"relations": [...], "schema": {"relation": [...]}}``. Labels
are kept as MNRE writes them; ``None`` pairs give no record (the row still says that the tweet has
no relation between them by omission). A mention's text is its ``pos`` tokens joined by spaces and
must equal ``name`` up to whitespace. A relation listed twice for one tweet is kept once and
counted. The schema is the labels found in the input, sorted, unless --schema is given;
--labels-from adds the labels of other splits (Version-1's test holds /per/per/relative and
/per/per/neighbor, which its train lacks).

Bad input is a BadInputError whose column is the 1-based character position in the line (of the
syntax error, or of the offending key).
"""
import ast
import json
import os
import sys
from collections import Counter
from typing import NamedTuple, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ie.records import Mention, Relation  # noqa: E402
from preprocess.ie_convert_common import (CHARACTER, Sample, Where, add_output_args, conversion_from_args,  # noqa: E402
                                          dataset_schema, new_parser, read_text, run, schema_from_records)

DATASET = "mnre"
NO_RELATION = "none"  # in any case: the second release writes None, the first none


def parse_literal(line, where):
    """A line's dict: JSON, or else a Python literal (never evaluated as code)."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as json_error:
        try:
            value = ast.literal_eval(line)
        except (SyntaxError, ValueError) as error:
            column = getattr(error, "offset", None) or json_error.colno
            raise Where(where.path, where.line, column, CHARACTER).error(
                f"not a JSON object or Python dict literal: {getattr(error, 'msg', error)}") from None
    if not isinstance(value, dict):
        raise where.error(f"expected an object, got {type(value).__name__}")
    return value


def key_where(line, where, key):
    """Where a key appears in the line (its quote), for messages about its value."""
    for quoted in (f"'{key}'", f'"{key}"'):
        found = line.find(quoted)
        if found >= 0:
            return Where(where.path, where.line, found + 1, CHARACTER)
    return where


def parse_argument(instance, key, tokens, line, where, notes):
    """The mention text of 'h' or 't'."""
    value = instance.get(key)
    here = key_where(line, where, key)
    if not isinstance(value, dict):
        raise here.error(f"'{key}' must be an object with 'name' and 'pos'")
    pos, name = value.get("pos"), value.get("name")
    if (not isinstance(pos, list) or len(pos) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) for p in pos)
            or not 0 <= pos[0] < pos[1] <= len(tokens)):
        raise here.error(f"'{key}' pos must be [start, end) token indices within 0..{len(tokens)}, got {pos!r}")
    text = " ".join(tokens[pos[0]:pos[1]])
    if not isinstance(name, str) or "".join(name.split()) != "".join(text.split()):
        raise here.error(f"'{key}' name {name!r} differs from its tokens {text!r} at pos {pos}")
    if " ".join(name.split()) != text:
        notes["names differing from their tokens only in whitespace"] += 1
    return text


def image_file(instance, line, where, notes):
    """The image file name of a line: 'img_id' (or 'image_id'), an integer id naming '<id>.jpg'."""
    key = "img_id" if "img_id" in instance else "image_id"
    image = instance.get(key)
    if isinstance(image, int) and not isinstance(image, bool) and image >= 0:
        notes["integer img_id read as <id>.jpg"] += 1
        return f"{image}.jpg"
    if not isinstance(image, str) or not image.strip() or os.path.basename(image) != image or image in (".", ".."):
        raise key_where(line, where, key).error(f"'{key}' must be an image file name, got {image!r}")
    return image


class Pair(NamedTuple):
    """One line: an entity pair of a tweet."""

    tokens: tuple
    image: str
    relation: Optional[Relation]  # None: no relation between them
    where: Where
    notes: Counter  # quirks read


def parse_instance(path, number, line):
    """The Pair of one line."""
    where = Where(path, number, 1, CHARACTER)
    notes = Counter()
    instance = parse_literal(line, where)
    tokens = instance.get("token")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t.strip() for t in tokens):
        raise key_where(line, where, "token").error("'token' must be a non-empty list of non-empty strings")
    tokens = [" ".join(t.split()) for t in tokens]
    image = image_file(instance, line, where, notes)
    label = instance.get("relation")
    if not isinstance(label, str) or not label.strip():
        raise key_where(line, where, "relation").error(f"'relation' must be a non-empty label, got {label!r}")
    head = parse_argument(instance, "h", tokens, line, where, notes)
    tail = parse_argument(instance, "t", tokens, line, where, notes)
    relation = None if label.strip().lower() == NO_RELATION else Relation(label.strip(), Mention(head), Mention(tail))
    return Pair(tuple(tokens), image, relation, where, notes)


def read_mnre(path, conversion):
    """{(image, tokens): [Pair]} in first-seen order; bad lines go through the --skip-bad-rows budget."""
    lines = [(n, line.rstrip("\r")) for n, line in enumerate(read_text(path).split("\n"), start=1) if line.strip()]
    groups = {}
    for pair in conversion.gather(lines, lambda item: parse_instance(path, *item)):
        groups.setdefault((pair.image, pair.tokens), []).append(pair)
    return groups


def samples_from(groups, images):
    samples = []
    for (image, tokens), pairs in groups.items():
        relations = [pair.relation for pair in pairs if pair.relation is not None]
        unique = list(dict.fromkeys(relations))
        sample = Sample(os.path.splitext(image)[0], " ".join(tokens), pairs[0].where,
                        lambda image_available, r=unique: r, image=os.path.join(images, image))
        for pair in pairs:
            sample.notes.update(pair.notes)
        sample.notes["repeated relations kept once"] = len(relations) - len(unique)
        sample.notes["pairs without relation"] = len(pairs) - len(relations)
        samples.append(sample)
    return samples


def convert(args):
    conversion = conversion_from_args(args, DATASET, default_media_dir=args.images)
    samples = samples_from(read_mnre(args.mnre, conversion), args.images)
    schema = dataset_schema(args, lambda: schema_from_records(
        [r for sample in samples for r in sample.records(True)]
        + [pair.relation for path in args.labels_from for pairs in read_mnre(path, conversion).values()
           for pair in pairs if pair.relation is not None]))
    conversion.write(samples, schema, ["relations"])
    return conversion


def parse_args(argv):
    parser = new_parser(__doc__)
    parser.add_argument("--mnre", required=True, help="an MNRE text file (mnre_train.txt, mnre_val.txt, mnre_test.txt)")
    parser.add_argument("--images", required=True, help="folder holding the img_id files")
    parser.add_argument("--labels-from", nargs="*", default=[], metavar="FILE",
                        help="other splits whose relation labels join the schema found (not with --schema)")
    args = add_output_args(parser, default_dataset=DATASET).parse_args(argv)
    if args.labels_from and args.schema:
        parser.error("--labels-from adds to the labels found; --schema gives them all")
    return args


def main(argv=None):
    return run(convert, parse_args(argv))


if __name__ == "__main__":
    main()
