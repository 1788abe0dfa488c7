"""What the published-benchmark converters share: media cells as checked paths, the TSVs of each split
written atomically (all or none), counts for the summary, jsonl reading and the command-line frame."""
import argparse
import contextlib
import json
import logging
import os
import re
import sys
from collections import Counter

from data.errors import BadInputError
from data.tsv import format_row
from utils.files import atomic_open


class ConversionError(ValueError):
    """Bad or inconsistent annotations, named by file and item (pickles and JSON objects have no
    useful line numbers: the item's id says where)."""

    def __init__(self, path, item, message):
        super().__init__(f"{path}: {item}: {message}")


class Output:
    """The output files, each written as its rows come and put in place only when the conversion
    ends without error (an error removes them all, leaving no file half-written); media cells checked;
    counts for the summary. Used as a context manager around the conversion."""

    def __init__(self, media_dir, allow_missing=False):
        self.media_dir, self.allow_missing = media_dir, allow_missing
        self.handles, self.rows = {}, Counter()
        self.counts = Counter()
        self.stack = contextlib.ExitStack()

    def __enter__(self):
        self.stack.__enter__()
        return self

    def __exit__(self, *error):
        return self.stack.__exit__(*error)

    def media_cell(self, relative_path, path, item):
        """A media cell: the file's path relative to --media-dir, which must exist unless
        --allow-missing (then the row keeps the path and the file is counted missing)."""
        if "." not in relative_path:  # a cell without "." reads as base64 (data/media.py)
            raise ConversionError(path, item, f"media file {relative_path!r} needs an extension")
        if not os.path.isfile(os.path.join(self.media_dir, relative_path)):
            if not self.allow_missing:
                raise ConversionError(path, item, f"media file not found: {os.path.join(self.media_dir, relative_path)}"
                                                  " (--allow-missing writes the row anyway)")
            self.counts["rows whose media file is missing"] += 1
        return relative_path

    def add(self, out_path, cells):
        self.add_lines(out_path, [format_row(cells)])

    def add_lines(self, out_path, lines):
        """Rows already formatted (coco_to_tsv.caption_lines)."""
        if out_path not in self.handles:
            os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
            self.handles[out_path] = self.stack.enter_context(atomic_open(out_path))
        self.handles[out_path].writelines(lines)
        self.rows[out_path] += len(lines)

    def skip(self, why):
        self.counts[f"skipped: {why}"] += 1

    def summary(self):
        lines = [f"wrote {path} ({rows} rows)" for path, rows in sorted(self.rows.items())]
        lines += [f"{count} {what}" for what, count in sorted(self.counts.items())]
        return "\n".join(lines)


def new_parser(doc):
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", required=True, help="folder for the TSVs")
    parser.add_argument("--media-dir", required=True,
                        help="folder the media cells are relative to; pass the same --media-dir to train.py")
    parser.add_argument("--allow-missing", action="store_true",
                        help="write rows whose media file is not under --media-dir (counted) instead of stopping")
    return parser


def run(convert, args):
    """Run a converter; bad input ends it with its location and no output written; print the summary."""
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    try:
        with Output(args.media_dir, args.allow_missing) as output:
            convert(args, output)
    except (ConversionError, BadInputError, OSError) as error:  # OSError: an input that cannot be read
        sys.exit(f"error: {error}")
    print(output.summary())
    return output


def required(record, key, path, item):
    """``record[key]``, or an error naming the item when the record is not an object holding it."""
    if not isinstance(record, dict) or key not in record:
        raise ConversionError(path, item, f"no {key!r} field")
    return record[key]


def jsonl_records(path):
    """(line number, object) of each non-empty line of a jsonl file; bad JSON is located."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as error:
                raise BadInputError(path, number, error.colno, f"invalid JSON: {error.msg}", "character") from None


def file_part(value, path, item):
    """A split name from the data, checked before it goes into an output file name."""
    value = str(value)
    if not re.fullmatch(r"[\w+-]+", value):
        raise ConversionError(path, item, f"split name {value!r} cannot name a file (letters, digits, _ + - only)")
    return value

