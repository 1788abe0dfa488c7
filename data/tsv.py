"""Random access to the rows of TSV files far larger than memory, through a cached byte-offset index."""

import hashlib
import mmap
import os

import numpy as np

from data.errors import BadInputError
from utils.files import atomic_open

_CHUNK_BYTES = 2 << 20
_STAMP_BYTES = 16  # every cached array starts with the file's [size, mtime_ns] as int64, viewed in its dtype


def _stamp(path):
    stat = os.stat(path)
    return np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)


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


def _writable(folder):
    # Root passes os.access everywhere; a folder without any write bit is still meant to stay untouched
    # (shared read-only data), so honour the mode bits too.
    return os.access(folder, os.W_OK) and (os.stat(folder).st_mode & 0o222) != 0


def _save_atomically(cache_path, array):
    """Readers never see half an array: it is written beside its final name, then renamed."""
    folder = os.path.dirname(cache_path) or "."
    os.makedirs(folder, exist_ok=True)
    if not _writable(folder):
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


class TsvFile:
    """Random access to rows of a UTF-8 TSV (one sample per line, no header) through a byte-offset index."""

    def __init__(self, path, selected_cols=None, index_dir=None):
        self.path = str(path)
        self.selected_cols = None if selected_cols is None else [int(c) for c in selected_cols]
        self._min_columns = 0 if not self.selected_cols else max(self.selected_cols) + 1
        self.index_dir = index_dir
        self._index_path, index = _open_cached(
            self.path, ".index", lambda stamp: _scan_row_starts(self.path, int(stamp[0])), index_dir)
        self._starts = _without_stamp(index)
        self._mapping = None

    def __len__(self):
        return len(self._row_starts())

    def fields(self, i):
        """The selected cells of row ``i`` (0-based)."""
        cells = self._decode(i, self._read_line(i)).split("\t")
        if len(cells) < self._min_columns:
            raise BadInputError(
                self.path, self.line_number(i), len(cells) + 1,
                f"expected at least {self._min_columns} tab-separated columns, found {len(cells)}")
        if self.selected_cols is None:
            return cells
        return [cells[c] for c in self.selected_cols]

    def line_number(self, i):
        return i + 1

    def column_number(self, k):
        """1-based file column of selected field ``k``."""
        return (k if self.selected_cols is None else self.selected_cols[k]) + 1

    def cached_array(self, name, build):
        """A per-row array derived from the file, cached beside its index as ``<file>.<name>.index``
        (or in the same fallback folder) and rebuilt when the file changes: ``build()`` makes it."""
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

    def _read_line(self, i):
        starts = self._row_starts()
        if not 0 <= i < len(starts):
            raise IndexError(f"row {i} out of range for {self.path} with {len(starts)} rows")
        mapping = self._map()
        line = mapping[int(starts[i]):int(starts[i + 1]) if i + 1 < len(starts) else len(mapping)]
        return line[:-2] if line.endswith(b"\r\n") else line.rstrip(b"\n")

    def _decode(self, i, line):
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as e:
            column = line.count(b"\t", 0, e.start) + 1
            raise BadInputError(self.path, self.line_number(i), column, f"not valid UTF-8: {e.reason}") from None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_starts=None, _mapping=None)
        return state


def format_row(cells):
    """One TSV line; a cell holding a tab or a line break would corrupt the file, so it is refused."""
    cells = [str(cell) for cell in cells]
    for k, cell in enumerate(cells):
        if any(c in cell for c in "\t\r\n"):
            raise ValueError(f"column {k + 1} holds a tab or line break: {cell[:80]!r}")
    return "\t".join(cells) + "\n"
