"""What every IE dataset converter shares: generic-layout rows, media cells, the annotation JSON,
locating bad input, the missing-image policy and the summary.

A converter parses its dataset into ``Sample``s (annotations only, so the label set is known before
any row is written), then ``Conversion.write`` streams the rows into one TSV through an atomic
write: a run that stops on bad input leaves no partial output.

One schema per dataset: the converter writes the label set it used (``--schema FILE``, else the one
it found) to ``schema.json`` beside the TSV. Convert the training split first, then the others
with ``--schema DIR/schema.json``, so that every split offers the same labels in its prompts; a
split that finds another label set where a ``schema.json`` already lies stops with that advice
rather than replacing it. Every row's annotation names its source dataset (``"dataset"``), for
scores per dataset in a mixture.

Rows are ``uniq-id, image, video, audio, text, annotation-json`` (DESIGN.md section 4). A media cell
is the file's path relative to ``--media-dir`` or, with ``--embed-media``, base64 of its bytes.
"""
import argparse
import base64
import json
import logging
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

from data.errors import BadInputError
from data.tsv import format_row
from ie.records import (AnnotationError, Entity, Relation, Schema, mentions_of, parse_schema,
                      schema_json, to_annotation)
from utils.files import atomic_open
from utils.progress import track

FIELD = "field"  # column_name of a BadInputError whose column is a 1-based tab-separated field
CHARACTER = "character"  # ... whose column is a 1-based character position in the line


# ---- annotation JSON -------------------------------------------------------------------------------

def annotation_json(records, schema, keys, dataset):
    """The annotation cell: ``keys`` (of "entities", "relations", "events") the dataset annotates, each
    a list even when empty (so "none here" differs from "not annotated"), the schema and the name of
    the source dataset."""
    annotation = {**to_annotation(records, keys), "schema": schema_json(schema), "dataset": dataset}
    return json.dumps(annotation, ensure_ascii=False, separators=(",", ":"))


def labels_of(records):
    """The schema a list of records uses, each label list in first-seen order."""
    found = {"entity": [], "relation": [], "event": [], "role": []}

    def add(key, label):
        if label not in found[key]:
            found[key].append(label)
    for record in records:
        if isinstance(record, Entity):
            add("entity", record.type)
        elif isinstance(record, Relation):
            add("relation", record.label)
        else:
            add("event", record.type)
            for argument in record.arguments:
                add("role", argument.role)
    return found


def schema_from_records(records):
    """The label set found in a dataset, each list sorted (stable prompts across runs)."""
    return Schema(**{key: sorted(labels) for key, labels in labels_of(records).items()})


def load_schema(path):
    """A schema file: JSON of the shape ie.records.parse_schema reads."""
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_schema(json.load(handle), where=path)
    except json.JSONDecodeError as e:
        raise BadInputError(path, e.lineno, e.colno, f"invalid JSON: {e.msg}", CHARACTER) from None
    except AnnotationError as e:
        raise BadInputError(path, 1, 1, str(e), CHARACTER) from None
    except OSError as e:
        raise BadInputError(path, 1, 1, f"cannot read the schema: {e.strerror}", CHARACTER) from None


SCHEMA_FILE = "schema.json"


def schema_beside(out_path):
    return os.path.join(os.path.dirname(os.path.abspath(out_path)), SCHEMA_FILE)


def dataset_schema(args, found):
    """The schema every row gets: --schema's, else ``found()`` (the labels of this split), refused when
    the schema.json beside the output holds another label set (see the module doc)."""
    if args.schema:
        return load_schema(args.schema)
    schema = found()
    beside = schema_beside(args.out)
    if os.path.isfile(beside) and schema_json(load_schema(beside)) != schema_json(schema):
        raise BadInputError(beside, 1, 1, f"holds another label set than the one found in this split: convert "
                                          f"the training split first and the others with --schema {beside} "
                                          f"(or remove {beside})", CHARACTER)
    return schema


def unknown_labels(records, schema):
    """'kind label' strings for labels of ``records`` missing from ``schema``."""
    missing = []
    for key, labels in labels_of(records).items():
        allowed = set(getattr(schema, key))
        missing += [f"{key} {label!r}" for label in labels if label not in allowed]
    return missing


# ---- locating bad input ----------------------------------------------------------------------------

def position(text, offset):
    """1-based (line, column) of a character offset in a text."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def locate(text, needle, start=0):
    """1-based (line, column) where ``needle`` first occurs at or after ``start``; (1, 1) if nowhere."""
    offset = text.find(needle, start)
    return position(text, offset) if offset >= 0 else (1, 1)


def value_positions(text, key):
    """{value: (line, column)} of the first ``"key": "value"`` of each string value in a JSON text,
    in one pass (locating each value on its own is quadratic in a large file)."""
    found, line, scanned = {}, 1, 0
    for match in re.finditer(rf'"{re.escape(key)}"\s*:\s*("(?:[^"\\]|\\.)*")', text):
        offset = match.start(1)
        line += text.count("\n", scanned, offset)
        scanned = offset
        found.setdefault(json.loads(match.group(1)), (line, offset - text.rfind("\n", 0, offset)))
    return found


def read_text(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError as e:
        raise BadInputError(path, 1, 1, f"not UTF-8 text: {e}", CHARACTER) from None


def load_json_file(path):
    """(parsed JSON, its text); a syntax error is a BadInputError at its line and character."""
    text = read_text(path)
    try:
        return json.loads(text), text
    except json.JSONDecodeError as e:
        raise BadInputError(path, e.lineno, e.colno, f"invalid JSON: {e.msg}", CHARACTER) from None


# ---- samples and rows ------------------------------------------------------------------------------

@dataclass
class Where:
    """Where a sample comes from, for messages: a file, a 1-based line and column, and what the
    column counts (FIELD or CHARACTER)."""

    path: str
    line: int
    column: int = 1
    unit: str = FIELD

    def error(self, message):
        return BadInputError(self.path, self.line, self.column, message, self.unit)

    def __str__(self):
        return f"{self.path}:{self.line}"


@dataclass
class Sample:
    """One row to be: its id, text, media files on disk, and how to build its records.

    ``records(image_available)`` gives the records; when the image is missing and the row is kept
    text-only it is called with False and must leave out grounds on the image and mentions that
    live only there.
    """

    uid: str
    text: str
    where: Where
    records: Callable[[bool], list]
    image: Optional[str] = None
    video: Optional[str] = None
    audio: Optional[str] = None
    notes: Counter = field(default_factory=Counter)
    keys: Optional[list] = None  # annotation keys of this row, when they differ from the dataset's


def grounded(records):
    return sum(m.ground is not None for r in records for m in mentions_of(r))


class Conversion:
    """Writes samples as generic-layout rows and keeps the counts for the summary."""

    def __init__(self, out_path, dataset, media_dir=None, embed_media=False, text_only_missing=False,
                 skip_bad_rows=0):
        self.out_path, self.dataset, self.media_dir, self.embed_media = out_path, dataset, media_dir, embed_media
        self.text_only_missing, self.skip_bad_rows = text_only_missing, skip_bad_rows
        self.counts = Counter()
        self.messages = []

    # -- bad input -----------------------------------------------------------------------------------

    def bad(self, error):
        """A bad sample: raise it, or with budget left under --skip-bad-rows log it and count it."""
        if self.counts["bad rows skipped"] >= self.skip_bad_rows:
            raise error
        self.counts["bad rows skipped"] += 1
        self.note(f"skipped bad input: {error}")

    def note(self, message):
        self.messages.append(message)
        print(f"warning: {message}", file=sys.stderr)

    def gather(self, items, parse):
        """``parse(item)`` over items; a BadInputError skips the item when the budget allows."""
        out = []
        for item in items:
            try:
                out.append(parse(item))
            except BadInputError as error:
                self.bad(error)
        return out

    # -- media ---------------------------------------------------------------------------------------

    def media_cell(self, path, where):
        if self.embed_media:
            with open(path, "rb") as handle:
                return base64.b64encode(handle.read()).decode("ascii")
        root = os.path.realpath(self.media_dir if self.media_dir is not None else os.path.dirname(path))
        relative = os.path.relpath(os.path.realpath(path), root)
        if relative.startswith(os.pardir + os.sep) or relative == os.pardir or os.path.isabs(relative):
            raise where.error(f"media file {path} lies outside --media-dir {self.media_dir}")
        if "." not in relative:  # a cell without "." reads as base64 (data/media.py)
            raise where.error(f"media file {path} needs an extension to be told from base64 in a TSV cell")
        return relative.replace(os.sep, "/")

    # -- rows ----------------------------------------------------------------------------------------

    def row(self, sample, schema, keys):
        """The TSV line of a sample, or None when it is dropped (image missing, nothing else left)."""
        cells, missing = {}, []
        for medium in ("image", "video", "audio"):
            path = getattr(sample, medium)
            if path is not None and not os.path.isfile(path):
                if not self.text_only_missing:
                    raise sample.where.error(f"{medium} file not found: {path} (sample {sample.uid}); "
                                             f"--text-only-missing keeps such rows without it")
                self.note(f"{sample.where}: {medium} file not found: {path} (sample {sample.uid})")
                missing.append(medium)
            cells[medium] = self.media_cell(path, sample.where) if path is not None and medium not in missing else ""
        records = sample.records("image" not in missing)
        if missing:
            lost = grounded(sample.records(True)) - grounded(records)
            self.counts["grounds left out with their missing media"] += lost
        if not sample.text and not any(cells.values()):
            self.counts["rows dropped: media missing and no text"] += 1
            return None
        for medium in missing:
            self.counts[f"rows without their missing {medium}"] += 1
        unknown = unknown_labels(records, schema)
        if unknown:
            raise sample.where.error(f"labels not in the schema: {', '.join(unknown)}")
        self.counts.update(sample.notes)
        self.counts["grounded mentions"] += grounded(records)
        return format_row([sample.uid, cells["image"], cells["video"], cells["audio"], sample.text,
                           annotation_json(records, schema, sample.keys or keys, self.dataset)])

    def write(self, samples, schema, keys):
        """Write every sample's row atomically, then the schema beside them; returns the number of rows
        written."""
        os.makedirs(os.path.dirname(os.path.abspath(self.out_path)), exist_ok=True)
        for sample, uid in zip(samples, unique_ids([sample.uid for sample in samples])):
            if uid != sample.uid:
                self.counts["repeated row ids given a '#N' suffix"] += 1
                sample.uid = uid
        with atomic_open(self.out_path) as handle:
            for sample in track(samples, f"wrote {self.out_path}", unit="samples"):
                try:
                    line = self.row(sample, schema, keys)
                except BadInputError as error:
                    self.bad(error)
                    continue
                if line is not None:
                    handle.write(line)
                    self.counts["rows"] += 1
        with atomic_open(schema_beside(self.out_path)) as handle:
            json.dump(schema_json(schema), handle, ensure_ascii=False, indent=1)
            handle.write("\n")
        return self.counts["rows"]

    def summary(self):
        extra = "; ".join(f"{count} {what}" for what, count in sorted(self.counts.items()) if what != "rows" and count)
        return (f"wrote {self.out_path} ({self.counts['rows']} rows)" + (f"; {extra}" if extra else "")
                + f"\nschema: {schema_beside(self.out_path)}")


def unique_ids(bases):
    """Ids from base names, a repeated base getting '#2', '#3', ... in order."""
    seen = Counter()
    out = []
    for base in bases:
        seen[base] += 1
        out.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return out


# ---- command line ----------------------------------------------------------------------------------

def dataset_name(value):
    """A --dataset value: scores are reported under dataset/<name>/..., so a name holds no '/'."""
    if not value.strip() or "/" in value:
        raise argparse.ArgumentTypeError(f"a dataset name is non-empty and holds no '/', got {value!r}")
    return value.strip()


def add_output_args(parser, default_dataset,
                    media_help="folder the TSV's media paths are relative to (default: the images folder)"):
    parser.add_argument("--out", required=True, help="output TSV (generic layout)")
    parser.add_argument("--media-dir", help=media_help)
    parser.add_argument("--embed-media", action="store_true",
                        help="write media cells as base64 of the file bytes instead of relative paths")
    parser.add_argument("--text-only-missing", action="store_true",
                        help="keep a row whose image file is missing without its image (and its image "
                             "grounds) and count it, instead of stopping")
    parser.add_argument("--skip-bad-rows", type=int, default=0, metavar="N",
                        help="tolerate up to N malformed samples, each reported and counted (default 0: stop)")
    parser.add_argument("--schema", help="JSON label set {entity, relation, event, role: [...]} for every row, "
                                         "e.g. the schema.json that converting the training split wrote; "
                                         "default: the labels found in this split")
    parser.add_argument("--dataset", type=dataset_name,
                        help=f"source dataset named in every row's annotation (default: {default_dataset})")
    return parser


def new_parser(doc):
    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def conversion_from_args(args, default_dataset, default_media_dir=None):
    return Conversion(args.out, args.dataset or default_dataset, args.media_dir or default_media_dir, args.embed_media,
                      args.text_only_missing, args.skip_bad_rows)


def run(convert, args):
    """Run a converter, turning bad input into an error exit with its location; print the summary."""
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    try:
        conversion = convert(args)
    except BadInputError as error:
        sys.exit(f"error: {error}")
    print(conversion.summary())
    return conversion
