"""Random access to the rows of TSV files far larger than memory, through a cached byte-offset index."""

import hashlib
import json
import logging
import mmap
import os
import re
import stat
from operator import itemgetter

import numpy as np

from data.errors import BadInputError, DataFileError
from utils.files import atomic_open, writable_folder

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 2 << 20
# Rows read in order come in blocks of about this many bytes (at most _BLOCK_ROWS rows), decoded and cut
# into rows at once: per row, that leaves a list lookup where a map slice, a decode and a strip were.
_BLOCK_BYTES, _BLOCK_ROWS = 1 << 20, 8192
# Every cached array starts with the file's stamp, 5 int64 viewed in its dtype: size, mtime_ns, ctime_ns,
# inode, and a hash of sampled blocks. A rewrite that keeps size and mtime (``touch -r``, a copy that
# preserves times) changes the ctime, which no user call can set back, or the inode; the sampled
# blocks catch it on filesystems with coarse or unreliable ctimes.
_STAMP_BYTES = 40
_SAMPLED_BLOCKS, _SAMPLE_BYTES = 16, 4096
BOM = b"\xef\xbb\xbf"
# Names a header row would hold (lower case, "-" and " " as "_"). A data row of every layout has a media,
# box or JSON cell, none of which can be such a bare name, so a row of these names only is a header.
HEADER_NAMES = frozenset(
    "id uniq_id image_id question_id entity_id image video audio media text caption captions question answer "
    "answers objects region region_coord box boxes hypothesis premise label annotation annotations name "
    "description aliases schema".split())


_BOX = re.compile(r"\s*-?[\d.]+(\s*,\s*-?[\d.]+){3}\s*")


def cell_kind(cell):
    """What a cell holds, as far as telling task layouts apart goes: "box" (four numbers), "json" (an
    object) or "-" (text, media, ids, nothing)."""
    if _BOX.fullmatch(cell):
        return "box"
    return "json" if cell.startswith("{") and cell.endswith("}") else "-"


def regular_file_stat(path):
    """``os.stat`` of a data file, refusing what cannot be read as one: missing, a folder, a FIFO (which
    would block), a device or a socket."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise DataFileError(f"{path}: no such file") from None
    except OSError as error:
        raise DataFileError(f"{path}: cannot read it: {error.strerror}") from None
    if not stat.S_ISREG(status.st_mode):
        kind = "a folder" if stat.S_ISDIR(status.st_mode) else "not a regular file (a FIFO, device or socket)"
        raise DataFileError(f"{path}: {kind}; give a TSV file")
    return status


def bom_length(start, path):
    """How many bytes of a UTF-8 byte order mark the file's first bytes ``start`` hold (3 or 0); a
    mark is reported."""
    if not start.startswith(BOM):
        return 0
    logger.warning("%s: starts with a UTF-8 byte order mark, ignored", path)
    return len(BOM)


def _stamp(path):
    status = regular_file_stat(path)
    return np.array([status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino,
                     _sampled_hash(path, status.st_size)], dtype=np.int64)


def _sampled_hash(path, size):
    """A hash of ``_SAMPLED_BLOCKS`` blocks spread evenly over the file, first and last included: a few
    reads, whatever the file's size."""
    digest = hashlib.blake2b(digest_size=8)
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in sorted({int(k * max(size - _SAMPLE_BYTES, 0) / (_SAMPLED_BLOCKS - 1))
                              for k in range(_SAMPLED_BLOCKS)}):
            digest.update(os.pread(fd, _SAMPLE_BYTES, offset))
    finally:
        os.close(fd)
    return int.from_bytes(digest.digest(), "little", signed=True)


def _without_stamp(cached):
    """The values of a cached array, as a plain ndarray view of the map (indexing a memmap costs more)."""
    return np.asarray(cached)[_STAMP_BYTES // cached.dtype.itemsize:]


def _scan_row_starts(path, size):
    """Byte offsets where rows start: 0 and after every newline except one that ends the file."""
    starts = [np.zeros(1 if size else 0, dtype=np.int64)]
    # One reused buffer of a few MB: no allocation per chunk, and the compare stays in the CPU cache.
    buffer = bytearray(_CHUNK_BYTES)
    view = np.frombuffer(buffer, np.uint8)
    with open(path, "rb") as f:
        base = 0
        while read := f.readinto(buffer):
            starts.append(np.flatnonzero(view[:read] == 10) + (base + 1))
            base += read
    starts = np.concatenate(starts)
    return starts[starts < size]


def _cache_locations(path, suffix, index_dir):
    """Where a cached array may live, preferred first: beside the TSV, then a per-user cache."""
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()
    cache_dir = index_dir or os.path.join(os.path.expanduser("~"), ".cache", "uniground", "tsv-index")
    return [f"{path}{suffix}", os.path.join(cache_dir, f"{digest}{suffix}")]


def _load_if_current(cache_path, stamp):
    try:
        cached = np.load(cache_path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    header = stamp.view(cached.dtype)
    current = cached.ndim == 1 and len(cached) >= len(header) and np.array_equal(cached[:len(header)], header)
    return cached if current else None


def _save_atomically(cache_path, array):
    """Readers never see half an array: it is written beside its final name, then renamed."""
    folder = os.path.dirname(cache_path) or "."
    os.makedirs(folder, exist_ok=True)
    if not writable_folder(folder):
        raise PermissionError(f"{folder} is not writable")
    with atomic_open(cache_path, "wb") as f:
        np.save(f, array)


def _open_cached(path, suffix, build, index_dir):
    """(cache path, mmapped array): the file's stamp then ``build(stamp)``'s values, taken from the
    cache while the stamp matches the file, else built and cached."""
    stamp = _stamp(path)
    locations = _cache_locations(path, suffix, index_dir)
    for cache_path in locations:
        if (cached := _load_if_current(cache_path, stamp)) is not None:
            return cache_path, cached
    values = build(stamp)
    array = np.concatenate([stamp.view(values.dtype), values])
    for cache_path in locations:
        try:
            _save_atomically(cache_path, array)
        except OSError:
            continue  # folder not writable: fall back to the next location
        return cache_path, np.load(cache_path, mmap_mode="r")
    raise OSError(f"cannot write a TSV index for {path} to any of {locations}")


def _column_picker(columns):
    """cells -> the cells at ``columns``, in C: an ``itemgetter`` (of a slice for fewer than two columns,
    where it would return a bare cell), which pickles, unlike a lambda."""
    if len(columns) >= 2:
        return itemgetter(*columns)
    return itemgetter(slice(columns[0], columns[0] + 1) if columns else slice(0, 0))


class TsvFile:
    """Random access to rows of a UTF-8 TSV (one sample per line, no header) through a byte-offset index."""

    def __init__(self, path, selected_cols=None, index_dir=None):
        self.path = str(path)
        self.selected_cols = None if selected_cols is None else [int(c) for c in selected_cols]
        self._min_columns = 0 if not self.selected_cols else max(self.selected_cols) + 1
        self._pick = None if self.selected_cols is None else _column_picker(self.selected_cols)
        self.index_dir = index_dir
        self._index_path, index = _open_cached(
            self.path, ".index", lambda stamp: _scan_row_starts(self.path, int(stamp[0])), index_dir)
        self._starts = _without_stamp(index)
        self._mapping = None
        self._skip = 0  # bytes before the first row's text: a byte order mark
        # Rows read ahead in a sequential pass: the texts of rows _block_start to _block_stop - 1.
        self._block_start, self._block_stop, self._block, self._next_row = 0, 0, [], None
        self._check_start()

    def __len__(self):
        return len(self._row_starts())

    def fields(self, i):
        """The selected cells of row ``i`` (0-based)."""
        start = self._block_start
        cells = (self._block[i - start] if start <= i < self._block_stop else self._row_text(i)).split("\t")
        if self._pick is None:
            return cells
        if len(cells) < self._min_columns:
            raise BadInputError(
                self.path, self.line_number(i), len(cells) + 1,
                f"expected at least {self._min_columns} tab-separated columns, found {len(cells)}")
        return list(self._pick(cells))

    def _row_text(self, i):
        """Row ``i``'s text, read with the rows after it (``_read_block``) when the previous read was of
        row i - 1, the order of a sequential pass; alone otherwise, as random access reads."""
        if i == self._next_row and (block := self._read_block(i)) is not None:
            self._block_start, self._block_stop, self._block = i, i + len(block), block
            self._next_row = self._block_stop
            return block[0]
        self._next_row = i + 1
        return self._decode(i, self._read_line(i))

    def _check_start(self):
        """Refuse an empty file or a header row; skip (and report) a byte order mark."""
        if len(self._starts):
            self._skip = bom_length(self._map()[:len(BOM)], self.path)
        if not len(self._starts) or len(self._map()) == self._skip:
            raise DataFileError(f"{self.path}: the file is empty: no rows to read")
        cells = self._first_row_cells()
        names = [cell.strip().lower().replace("-", "_").replace(" ", "_") for cell in cells if cell.strip()]
        if len(names) >= 2 and set(names) <= HEADER_NAMES:
            raise BadInputError(self.path, 1, 1, f"a header row ({', '.join(cells)}), not a sample: remove it; "
                                                 "rows have no header")

    def first_row_layout(self):
        """``cell_kind`` of every cell of the first row, selected or not."""
        return [cell_kind(cell) for cell in self._first_row_cells()]

    def _first_row_cells(self):
        # Decoded leniently: a first row that is not UTF-8 is no header, and is reported as a bad row
        # when it is read, where --skip-bad-rows applies.
        return self._read_line(0).decode("utf-8", errors="replace").split("\t")

    def line_number(self, i):
        return i + 1

    def column_number(self, k):
        """1-based file column of selected field ``k``."""
        return (k if self.selected_cols is None else self.selected_cols[k]) + 1

    def cached_array(self, name, build):
        """A 1-D array derived from the file (one value per row, or any other, such as text as uint8),
        cached beside its index as ``<file>.<name>.index`` (or in the same fallback folder) and rebuilt when
        the file changes: ``build()`` makes it."""
        _, values = _open_cached(self.path, f".{name}.index", lambda stamp: build(), self.index_dir)
        return _without_stamp(values)

    def _row_starts(self):
        if self._starts is None:  # dropped by pickling
            self._starts = _without_stamp(np.load(self._index_path, mmap_mode="r"))
        return self._starts

    def _map(self):
        # A row is one slice of a read-only map: no system call per row. A map stays valid across fork.
        if self._mapping is None:
            with open(self.path, "rb") as f:
                self._mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mapping

    def _read_block(self, i):
        """The texts of rows i, i + 1, ... up to about ``_BLOCK_BYTES``, decoded at once (split into cells
        as each is asked for: lists of many rows held at once would keep Python's cycle collector busy);
        None where the block is not valid UTF-8, whose rows are then read alone to name the bad one."""
        starts = self._row_starts()
        if not 0 <= i < len(starts) - 1:
            return None
        first = int(starts[i])
        stop = min(len(starts), i + _BLOCK_ROWS, max(i + 2, int(np.searchsorted(starts, first + _BLOCK_BYTES))))
        mapping = self._map()
        end = int(starts[stop]) if stop < len(starts) else len(mapping)
        try:
            text = mapping[first + (self._skip if i == 0 else 0):end].decode("utf-8")
        except UnicodeDecodeError:
            return None
        count = stop - i
        lines = text.split("\n", count)[:count]  # a final row may end the file without a newline
        if "\r" in text:  # CRLF: a carriage return before a row's newline is not part of the row
            ended = count if text.endswith("\n") else count - 1
            lines = [line[:-1] if k < ended and line.endswith("\r") else line for k, line in enumerate(lines)]
        return lines

    def _read_line(self, i):
        starts = self._row_starts()
        if not 0 <= i < len(starts):
            raise IndexError(f"row {i} out of range for {self.path} with {len(starts)} rows")
        mapping = self._map()
        start = int(starts[i]) + (self._skip if i == 0 else 0)
        line = mapping[start:int(starts[i + 1]) if i + 1 < len(starts) else len(mapping)]
        return line[:-2] if line.endswith(b"\r\n") else line.rstrip(b"\n")

    def _decode(self, i, line):
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as e:
            column = line.count(b"\t", 0, e.start) + 1
            raise BadInputError(self.path, self.line_number(i), column, f"not valid UTF-8: {e.reason}") from None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_starts=None, _mapping=None, _block_stop=0, _block=[], _next_row=None)  # a block is read again
        return state


def format_row(cells):
    """One TSV line; a cell holding a tab or a line break would corrupt the file, so it is refused."""
    cells = [str(cell) for cell in cells]
    for k, cell in enumerate(cells):
        if any(c in cell for c in "\t\r\n"):
            raise ValueError(f"column {k + 1} holds a tab or line break: {cell[:80]!r}")
    return "\t".join(cells) + "\n"


def settings_digest(settings):
    """A short digest of JSON-ready ``settings``, naming the cache (``TsvFile.cached_array``) of what they
    determine."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
