"""Convert Twitter-2015 / Twitter-2017 multimodal NER (CoNLL files with image ids) to generic-layout TSV.

Input, as released with UMT (github.com/jefferyYu/UMT, data/twitter2015|twitter2017/{train,valid,test}.txt)
and reused by Twitter-GMNER: sentences separated by blank lines, each starting with an
``IMGID:<id>`` line, then one ``token<TAB>tag`` line per token with BIO tags over the types PER, LOC,
ORG and OTHER (MISC in some releases). A ``-DOCSTART-`` line is skipped; with more than two
tab-separated fields the first is the token and the last the tag. The image is ``<images>/<id>.jpg``.

An ``I-X`` tag that follows ``O`` or another type starts an entity, as conlleval and fastNLP's iob2
read it (the 2015 files hold a few such tags, e.g. "J . Cole/I-PER"). A token that is only
whitespace (Twitter-2015 valid.txt holds a no-break space tagged ``O``) cannot stand in a text whose
tokens are joined by spaces: tagged ``O`` it is dropped and counted; inside an entity it is an error.
A repeated image id gets a ``#2``, ``#3``, ... row id (counted).

Output: one row per sentence, text = tokens joined by single spaces, annotation
``{"entities": [...], "schema": {"entity": [...]}, "dataset": ...}`` with entity types named person,
location, organization and miscellaneous (OTHER and MISC), and text mentions without grounds. The
dataset is named after the CoNLL file's folder (twitter2015, twitter2017) unless --dataset is given.

Bad input is a BadInputError whose column is the tab-separated field (1 the token or IMGID line,
2 the tag); a bad sentence is skipped whole under --skip-bad-rows.
"""
import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ie.records import Entity, Mention, Schema  # noqa: E402
from preprocess.ie_convert_common import (Sample, Where, add_output_args, conversion_from_args,  # noqa: E402
                                          dataset_schema, new_parser, read_text, run)

TYPE_NAMES = {"PER": "person", "LOC": "location", "ORG": "organization", "OTHER": "miscellaneous",
              "MISC": "miscellaneous"}
SCHEMA = Schema(entity=["person", "location", "organization", "miscellaneous"])
IMAGE_PREFIX = "IMGID:"


@dataclass
class Sentence:
    image_id: str
    tokens: list
    tags: list
    where: Where  # the IMGID line
    lines: list  # the line number of each token
    blank_tokens: int = 0  # whitespace-only tokens tagged O, dropped


def read_conll(path, conversion):
    """The sentences of a Twitter CoNLL file; a malformed sentence goes through --skip-bad-rows."""
    blocks, current = [], []
    for number, raw in enumerate(read_text(path).split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.startswith("-DOCSTART"):
            if current:
                blocks.append(current)
                current = []
            continue
        current.append((number, line))
    if current:
        blocks.append(current)
    return conversion.gather(blocks, lambda block: parse_sentence(path, block))


def parse_sentence(path, block):
    """A Sentence from its [(line number, line)]: an IMGID line, then token lines."""
    (number, line), token_lines = block[0], block[1:]
    if not line.startswith(IMAGE_PREFIX):
        raise Where(path, number).error(f"a sentence must start with an '{IMAGE_PREFIX}<id>' line, got {line[:40]!r}")
    image_id = line[len(IMAGE_PREFIX):].strip()
    if not image_id or any(c.isspace() for c in image_id) or "/" in image_id or "\\" in image_id:
        raise Where(path, number).error(f"bad image id {image_id!r}")
    sentence = Sentence(image_id, [], [], Where(path, number), [])
    for number, line in token_lines:
        if line.startswith(IMAGE_PREFIX):
            raise Where(path, number).error("IMGID line inside a sentence: sentences are separated by a blank line")
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2:
            raise Where(path, number, 2 if fields[0].strip() else 1).error(
                f"expected 'token<TAB>tag', got {line[:60]!r}")
        token, tag = fields[0].strip(), fields[-1].strip()
        if not token:
            if tag != "O":
                raise Where(path, number).error(f"a whitespace-only token cannot be part of an entity ({tag}): "
                                                f"{line[:60]!r}")
            sentence.blank_tokens += 1
            continue
        sentence.tokens.append(token)
        sentence.tags.append(tag)
        sentence.lines.append(number)
    return sentence


def entity_spans(sentence, tag_column=2):
    """(type, start, end) token spans of a sentence's BIO tags; unknown tags are BadInputErrors."""
    spans, start, kind = [], None, None
    for i, tag in enumerate(sentence.tags + ["O"]):
        if tag == "O":
            prefix, tag_type = "O", None
        else:
            prefix, _, tag_type = tag.partition("-")
            if prefix not in ("B", "I") or tag_type not in TYPE_NAMES:
                raise Where(sentence.where.path, sentence.lines[i], tag_column).error(
                    f"unknown tag {tag!r}: expected O or B-/I- with one of {', '.join(TYPE_NAMES)}")
        continues = prefix == "I" and kind is not None and TYPE_NAMES[tag_type] == kind
        if start is not None and not continues:
            spans.append((kind, start, i))
            start, kind = None, None
        if prefix in ("B", "I") and not continues:
            start, kind = i, TYPE_NAMES[tag_type]
    return spans


def sentence_entities(sentence):
    return [Entity(kind, Mention(" ".join(sentence.tokens[s:e]))) for kind, s, e in entity_spans(sentence)]


def image_path(images, image_id):
    return os.path.join(images, f"{image_id}.jpg")


def sentence_sample(sentence, records, image):
    """The Sample of a sentence, its dropped whitespace-only tokens counted."""
    sample = Sample(sentence.image_id, " ".join(sentence.tokens), sentence.where, records, image=image)
    sample.notes["whitespace-only tokens dropped"] = sentence.blank_tokens
    return sample


def samples_from(sentences, images, conversion):
    def parse(sentence):
        entities = sentence_entities(sentence)
        return sentence_sample(sentence, lambda image_available: entities, image_path(images, sentence.image_id))
    return conversion.gather(sentences, parse)


def convert(args):
    conversion = conversion_from_args(args, os.path.basename(os.path.dirname(os.path.abspath(args.conll))),
                                      default_media_dir=args.images)
    schema = dataset_schema(args, lambda: SCHEMA)
    samples = samples_from(read_conll(args.conll, conversion), args.images, conversion)
    conversion.write(samples, schema, ["entities"])
    return conversion


def parse_args(argv):
    parser = new_parser(__doc__)
    parser.add_argument("--conll", required=True, help="a Twitter-2015/2017 CoNLL file (train.txt, valid.txt, test.txt)")
    parser.add_argument("--images", required=True, help="folder holding <IMGID>.jpg")
    return add_output_args(parser, default_dataset="the CoNLL file's folder name, e.g. twitter2015").parse_args(argv)


def main(argv=None):
    return run(convert, parse_args(argv))


if __name__ == "__main__":
    main()
