"""The entity catalogue of entity recognition: id, name, optional description and aliases.

Two formats, told apart by the file name:

- ``*.jsonl``: one JSON object a line, ``{"id": ..., "name": ..., "description": ...,
  "aliases": [...]}``; ``description`` and ``aliases`` are optional, other keys are ignored;
- anything else is TSV: ``id<TAB>name[<TAB>description[<TAB>alias&&alias...]]``, with an
  optional header line ``id<TAB>name...``.

Catalogues of 10^5-10^6 entities load in seconds; the entries live in parallel lists.
Duplicate ids, empty names or aliases, and malformed lines stop the load with a
``BadInputError`` naming the file, line and column (for JSONL, the character column
where the bad value or key starts).
"""
import json
from dataclasses import dataclass

from data.errors import BadInputError
from data.tsv import bom_length

ALIAS_SEPARATOR = "&&"
TSV_FIELDS = ("id", "name", "description", "aliases")


@dataclass(frozen=True)
class Entity:
    id: str
    name: str
    description: str
    aliases: tuple


class Catalogue:
    def __init__(self, path, ids, names, descriptions, aliases):
        self.path = str(path)
        self.ids, self.names, self.descriptions, self.aliases = ids, names, descriptions, aliases
        self.position = {entity_id: i for i, entity_id in enumerate(ids)}

    def __len__(self):
        return len(self.ids)

    def __contains__(self, entity_id):
        return entity_id in self.position

    def __getitem__(self, i):
        return Entity(self.ids[i], self.names[i], self.descriptions[i], self.aliases[i])

    def entity(self, entity_id):
        return self[self.position[entity_id]]


def clean(text):
    return " ".join(text.split())


def read_catalogue(path):
    """Read a catalogue file (TSV or JSONL, see the module docstring)."""
    path = str(path)
    reader = _jsonl_entries if path.endswith(".jsonl") else _tsv_entries
    ids, names, descriptions, aliases = [], [], [], []
    first_line = {}
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            if line_number == 1:
                raw = raw[bom_length(raw, path):]
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise BadInputError(path, line_number, 1, f"not valid UTF-8: {error.reason}") from None
            entry = reader(path, line_number, line)
            if entry is None:
                continue
            (entity_id, id_column), name, description, entity_aliases = entry
            if entity_id in first_line:
                raise BadInputError(path, line_number, id_column,
                                    f"duplicate id {entity_id!r} (first on line {first_line[entity_id]})", "id")
            first_line[entity_id] = line_number
            ids.append(entity_id)
            names.append(name)
            descriptions.append(description)
            aliases.append(entity_aliases)
    if not ids:
        raise BadInputError(path, 1, 1, "the catalogue holds no entities")
    return Catalogue(path, ids, names, descriptions, aliases)


def _tsv_entries(path, line_number, line):
    cells = line.split("\t")
    if line_number == 1 and [c.strip().lower() for c in cells[:2]] == ["id", "name"]:
        return None  # header
    if not line.strip():
        raise BadInputError(path, line_number, 1, "empty line")
    if not 2 <= len(cells) <= len(TSV_FIELDS):
        raise BadInputError(path, line_number, min(len(cells), len(TSV_FIELDS)) + 1,
                            f"expected 2 to {len(TSV_FIELDS)} tab-separated columns ({', '.join(TSV_FIELDS)}), "
                            f"found {len(cells)}")
    cells += [""] * (len(TSV_FIELDS) - len(cells))
    entity_id, name, description, alias_cell = (clean(c) for c in cells)
    if not entity_id:
        raise BadInputError(path, line_number, 1, "empty id", "id")
    if not name:
        raise BadInputError(path, line_number, 2, f"empty name for id {entity_id!r}", "name")
    aliases = ()
    if alias_cell:
        aliases = tuple(clean(a) for a in alias_cell.split(ALIAS_SEPARATOR))
        if not all(aliases):
            raise BadInputError(path, line_number, 4, f"empty alias in {alias_cell!r}", "aliases")
    return (entity_id, 1), name, description, aliases


def _jsonl_entries(path, line_number, line):
    if not line.strip():
        raise BadInputError(path, line_number, 1, "empty line")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise BadInputError(path, line_number, error.colno, f"not valid JSON: {error.msg}") from None
    if not isinstance(record, dict):
        raise BadInputError(path, line_number, 1, f"expected a JSON object, got {type(record).__name__}")

    def column(key):
        at = line.find(f'"{key}"')
        return at + 1 if at >= 0 else 1

    def fail(key, message):
        raise BadInputError(path, line_number, column(key), message, key)

    entity_id = record.get("id")
    if isinstance(entity_id, int) and not isinstance(entity_id, bool):
        entity_id = str(entity_id)
    if not isinstance(entity_id, str) or not clean(entity_id):
        fail("id", f"missing or empty id: {entity_id!r}")
    entity_id = clean(entity_id)
    name = record.get("name")
    if not isinstance(name, str) or not clean(name):
        fail("name", f"missing or empty name for id {entity_id!r}: {name!r}")
    description = record.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        fail("description", f"description must be a string, got {type(description).__name__}")
    aliases = record.get("aliases", [])
    if aliases is None:
        aliases = []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and clean(a) for a in aliases):
        fail("aliases", f"aliases must be a list of non-empty strings, got {aliases!r}")
    return (entity_id, column("id")), clean(name), description.strip(), tuple(clean(a) for a in aliases)
