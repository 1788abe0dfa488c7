"""Convert MUIE/REAMO-style tuple strings to records and to generic-layout TSV.

The tuple strings, one record each, any number in a string, separated by whitespace, ``,`` or ``;``:

    NER  (entity, type)                        e.g. (Barack Obama, person)
    RE   (subject, relation, object)           e.g. (Obama, born in, Hawaii)
    EE   (Type: T, Trigger: t, Role: a, ...)   e.g. (Type: Attack, Trigger: fired, Attacker: soldiers)

An entity's type is after its last comma, so a mention may hold commas. A relation with more than
three comma-separated parts is read with the schema's relation labels: exactly one inner part must
be a label. An event's fields are ``key: value`` pairs split at commas that start a new key;
``Type`` and ``Trigger`` (any case) appear once, every other key is a role, a role may repeat, and a
role whose value is ``None`` is no argument. An empty string, ``None`` or ``[]`` holds no record.
Tuple strings carry text only, so the records have no grounds.

``parse_tuple_string`` reads one string; strict, a malformed tuple raises TupleError with its
character offset; lenient, it is skipped and counted (a decoder's ``malformed`` for
ie/scoring.py).

The converter reads JSON lines ``{"id", "text"?, "image"?, "video"?, "audio"?, "task": "ner" | "re" |
"ee", "output"}`` (``label`` is read for ``output``, ``subtask`` for ``task``; --task sets a default),
media paths relative to --source-dir (default: the JSON lines file's folder). Output: one row per
line; the schema is the labels found, sorted, unless --schema is given. A missing media file stops
the run, or with --text-only-missing empties that cell (a row left with nothing is dropped); both
counted. Bad input is a BadInputError whose column is the 1-based character position in the line
(of the bad tuple where it can be found in the line, else of the offending key).
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ie.records import SUBTASK_KEYS, Argument, Entity, Event, Mention, Relation  # noqa: E402
from preprocess.ie_convert_common import (CHARACTER, Sample, Where, add_output_args, conversion_from_args,  # noqa: E402
                                          dataset_schema, load_schema, new_parser, read_text, run,
                                          schema_from_records)

EMPTY_OUTPUTS = ("", "none", "[]", "null")
SEPARATORS = " \t\r\n,;"
EVENT_KEY = re.compile(r"(?:^|,)\s*([^,:()]+?)\s*:")


class TupleError(ValueError):
    """A malformed tuple string; ``offset`` is the 0-based character where the problem is."""

    def __init__(self, offset, message):
        super().__init__(f"character {offset + 1}: {message}")
        self.offset, self.reason = offset, message


def split_tuples(text):
    """[(offset of '(', inner text)] of the top-level tuples of a string."""
    if text.strip().lower() in EMPTY_OUTPUTS:
        return []
    tuples, depth, start = [], 0, None
    for i, c in enumerate(text):
        if c == "(":
            if depth == 0:
                start = i
            depth += 1
        elif c == ")":
            if depth == 0:
                raise TupleError(i, "')' without its '('")
            depth -= 1
            if depth == 0:
                tuples.append((start, text[start + 1:i]))
        elif depth == 0 and c not in SEPARATORS:
            raise TupleError(i, f"{c!r} outside a tuple: tuples are (...) separated by spaces, ',' or ';'")
    if depth:
        raise TupleError(start, "'(' never closed")
    return tuples


def _clean(value):
    return " ".join(value.split())


def _parts_with_offsets(inner):
    parts, start = [], 0
    for piece in inner.split(","):
        parts.append((start, piece))
        start += len(piece) + 1
    return parts


def parse_entity(inner, offset, schema=None):
    mention, comma, type_ = inner.rpartition(",")
    if not comma or not _clean(mention) or not _clean(type_):
        raise TupleError(offset, f"an entity is (mention, type), got ({inner})")
    return Entity(_clean(type_), Mention(_clean(mention)))


def parse_relation(inner, offset, schema=None):
    parts = [_clean(p) for _, p in _parts_with_offsets(inner)]
    if len(parts) == 3:
        head, label, tail = parts
    elif len(parts) > 3 and schema is not None:
        labels = {_clean(label).casefold() for label in schema.relation}
        found = [i for i in range(1, len(parts) - 1) if parts[i].casefold() in labels]
        if len(found) != 1:
            raise TupleError(offset, f"({inner}): {len(parts)} comma-separated parts and {len(found)} of the inner "
                                     f"ones are relation labels; need exactly one")
        i = found[0]
        head, label, tail = ", ".join(parts[:i]), parts[i], ", ".join(parts[i + 1:])
    else:
        raise TupleError(offset, f"a relation is (subject, relation, object), got ({inner})")
    if not (head and label and tail):
        raise TupleError(offset, f"empty subject, relation or object in ({inner})")
    return Relation(label, Mention(head), Mention(tail))


def parse_event(inner, offset, schema=None):
    keys = list(EVENT_KEY.finditer(inner))
    if not keys or keys[0].start() != 0:
        raise TupleError(offset, f"an event is (Type: T, Trigger: t, Role: argument, ...), got ({inner})")
    fields = []
    for k, match in enumerate(keys):
        end = keys[k + 1].start() if k + 1 < len(keys) else len(inner)
        value = _clean(inner[match.end():end])
        if not value:
            raise TupleError(offset + 1 + match.start(1), f"{match.group(1)!r} has no value in ({inner})")
        fields.append((_clean(match.group(1)), value, offset + 1 + match.start(1)))
    special = {name: [f for f in fields if f[0].casefold() == name] for name in ("type", "trigger")}
    for name, found in special.items():
        if len(found) != 1:
            raise TupleError(offset, f"an event needs one {name.capitalize()}, found {len(found)} in ({inner})")
    arguments = tuple(Argument(role, Mention(value)) for role, value, _ in fields
                      if role.casefold() not in special and value.casefold() != "none")
    return Event(special["type"][0][1], Mention(special["trigger"][0][1]), arguments)


PARSERS = {"ner": parse_entity, "re": parse_relation, "ee": parse_event}


def parse_tuple_string(text, subtask, schema=None, strict=True):
    """(records, number of malformed tuples skipped) of a tuple string of ``subtask`` (ner, re, ee).

    Strict, the first malformed tuple raises TupleError; lenient, malformed tuples are skipped and
    counted, and text outside tuples is one malformed count."""
    parse = PARSERS[subtask]
    try:
        tuples = split_tuples(text)
    except TupleError:
        if strict:
            raise
        return _lenient_records(text, parse, schema)
    records, malformed = [], 0
    for offset, inner in tuples:
        try:
            records.append(parse(inner, offset, schema))
        except TupleError:
            if strict:
                raise
            malformed += 1
    return records, malformed


def _lenient_records(text, parse, schema):
    """Records of the well-formed '(...)' groups of a string that is malformed as a whole."""
    records, malformed = [], 1
    for match in re.finditer(r"\(([^()]*)\)", text):
        try:
            records.append(parse(match.group(1), match.start(), schema))
        except TupleError:
            malformed += 1
    return records, malformed


# ---- the converter ---------------------------------------------------------------------------------

def _column_of(line, value, offset):
    """1-based column in a JSON line of character ``offset`` of its string ``value``, or None."""
    for ascii_only in (True, False):
        quoted = json.dumps(value, ensure_ascii=ascii_only)
        found = line.find(quoted)
        if found >= 0:
            return found + 1 + len(json.dumps(value[:offset], ensure_ascii=ascii_only)) - 1
    return None


def _key_column(line, key):
    found = line.find(f'"{key}"')
    return found + 1 if found >= 0 else 1


def parse_line(path, number, line, default_task, source_dir, schema):
    where = Where(path, number, 1, CHARACTER)
    try:
        item = json.loads(line)
    except json.JSONDecodeError as e:
        raise Where(path, number, e.colno, CHARACTER).error(f"invalid JSON: {e.msg}") from None
    if not isinstance(item, dict):
        raise where.error("each line must be a JSON object")

    def at(key):
        return Where(path, number, _key_column(line, key), CHARACTER)
    uid = item.get("id")
    if isinstance(uid, bool) or not isinstance(uid, (str, int)) or not str(uid).strip():
        raise at("id").error(f"'id' must be a non-empty string or number, got {uid!r}")
    task_key = "task" if "task" in item else "subtask"
    task = item.get(task_key, default_task)
    if task not in PARSERS:
        raise at(task_key).error(f"'task' must be one of {', '.join(PARSERS)} (or give --task), got {task!r}")
    text = item.get("text", "")
    if not isinstance(text, str):
        raise at("text").error("'text' must be a string")
    media = {}
    for medium in ("image", "video", "audio"):
        value = item.get(medium)
        if value in (None, ""):
            continue
        if not isinstance(value, str) or os.path.isabs(value) or os.pardir in value.replace("\\", "/").split("/"):
            raise at(medium).error(f"'{medium}' must be a path relative to the source folder, got {value!r}")
        media[medium] = os.path.join(source_dir, value)
    output_key = "output" if "output" in item else "label"
    output = item.get(output_key)
    if not isinstance(output, str):
        raise at(output_key).error("'output' (or 'label') must be a tuple string")
    try:
        records, _ = parse_tuple_string(output, task, schema)
    except TupleError as e:
        column = _column_of(line, output, e.offset) or _key_column(line, output_key)
        raise Where(path, number, column, CHARACTER).error(f"{output_key}: {e.reason}") from None
    sample = Sample(str(uid).strip(), _clean(text), where, lambda available, r=records: r, **media)
    sample.keys = [SUBTASK_KEYS[task]]
    return sample


def convert(args):
    source_dir = args.source_dir or os.path.dirname(os.path.abspath(args.tuples))
    conversion = conversion_from_args(args, os.path.splitext(os.path.basename(args.tuples))[0],
                                      default_media_dir=source_dir)
    schema = load_schema(args.schema) if args.schema else None
    lines = [(n, line.rstrip("\r")) for n, line in enumerate(read_text(args.tuples).split("\n"), start=1)
             if line.strip()]
    samples = conversion.gather(lines, lambda item: parse_line(args.tuples, *item, args.task, source_dir, schema))
    schema = dataset_schema(args, lambda: schema_from_records([r for sample in samples for r in sample.records(True)]))
    conversion.write(samples, schema, ["entities"])
    return conversion


def parse_args(argv):
    parser = new_parser(__doc__)
    parser.add_argument("--tuples", required=True, help="JSON lines with id, text, media paths, task and output")
    parser.add_argument("--task", choices=tuple(PARSERS), help="the task of lines that name none")
    parser.add_argument("--source-dir", help="folder the lines' media paths are relative to "
                                             "(default: the JSON lines file's folder)")
    return add_output_args(parser, default_dataset="the file's name without extension",
                           media_help="folder the TSV's media paths are relative to "
                                      "(default: the source folder)").parse_args(argv)


def main(argv=None):
    return run(convert, parse_args(argv))


if __name__ == "__main__":
    main()
