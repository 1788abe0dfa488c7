"""Random access to the rows of TSV files far larger than memory, through a cached byte-offset index."""

import hashlib
import os

import numpy as np

from data.errors import BadInputError
from utils.files import atomic_open

_CHUNK_BYTES = 64 << 20
_STAMP_LEN = 2  # the index array is [file size, mtime_ns, row start offsets...]


def _stamp(path):
    stat = os.stat(path)
    return np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)


def _scan_row_starts(path, size):
    """Byte offsets where rows start: 0 and after every newline except one that ends the file."""
    starts = [np.zeros(1 if size else 0, dtype=np.int64)]
    with open(path, "rb") as f:
        base = 0
        while chunk := f.read(_CHUNK_BYTES):
            newlines = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10)
            starts.append(newlines.astype(np.int64) + base + 1)
            base += len(chunk)
    starts = np.concatenate(starts)
    return starts[starts < size]


def _index_locations(path, index_dir):
    """Where the index may live, preferred first: beside the TSV, then a per-user cache."""
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()
    cache_dir = index_dir or os.path.join(os.path.expanduser("~"), ".cache", "uniground", "tsv-index")
    return [f"{path}.index", os.path.join(cache_dir, f"{digest}.index")]


def _load_if_current(index_path, stamp):
    try:
        index = np.load(index_path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    current = index.ndim == 1 and len(index) >= _STAMP_LEN and np.array_equal(index[:_STAMP_LEN], stamp)
    return index if current else None


def _writable(folder):
    # Root passes os.access everywhere; a folder without any write bit is still meant to stay untouched
    # (shared read-only data), so honour the mode bits too.
    return os.access(folder, os.W_OK) and (os.stat(folder).st_mode & 0o222) != 0


def _save_atomically(index_path, index):
    """Readers never see half an index: it is written beside its final name, then renamed."""
    folder = os.path.dirname(index_path) or "."
    os.makedirs(folder, exist_ok=True)
    if not _writable(folder):
        raise PermissionError(f"{folder} is not writable")
    with atomic_open(index_path, "wb") as f:
        np.save(f, index)


def _open_index(path, index_dir):
    """Return (index_path, mmapped index), building and caching the index if none is current."""
    stamp = _stamp(path)
    locations = _index_locations(path, index_dir)
    for index_path in locations:
        if (index := _load_if_current(index_path, stamp)) is not None:
            return index_path, index
    index = np.concatenate([stamp, _scan_row_starts(path, int(stamp[0]))])
    for index_path in locations:
        try:
            _save_atomically(index_path, index)
        except OSError:
            continue  # folder not writable: fall back to the next location
        return index_path, np.load(index_path, mmap_mode="r")
    raise OSError(f"cannot write a TSV index for {path} to any of {locations}")


class TsvFile:
    """Random access to rows of a UTF-8 TSV (one sample per line, no header) through a byte-offset index."""

    def __init__(self, path, selected_cols=None, index_dir=None):
        self.path = str(path)
        self.selected_cols = None if selected_cols is None else [int(c) for c in selected_cols]
        self._min_columns = 0 if not self.selected_cols else max(self.selected_cols) + 1
        self._index_path, self._index = _open_index(self.path, index_dir)
        self._handle, self._handle_pid = None, None

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

    def _row_starts(self):
        if self._index is None:  # dropped by pickling
            self._index = np.load(self._index_path, mmap_mode="r")
        return self._index[_STAMP_LEN:]

    def _file(self):
        # A handle inherited through fork shares its file position with the parent: reopen per process.
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle, self._handle_pid = open(self.path, "rb"), os.getpid()
        return self._handle

    def _read_line(self, i):
        starts = self._row_starts()
        if not 0 <= i < len(starts):
            raise IndexError(f"row {i} out of range for {self.path} with {len(starts)} rows")
        f = self._file()
        f.seek(int(starts[i]))
        line = f.readline()
        return line[:-2] if line.endswith(b"\r\n") else line.rstrip(b"\n")

    def _decode(self, i, line):
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as e:
            column = line.count(b"\t", 0, e.start) + 1
            raise BadInputError(self.path, self.line_number(i), column, f"not valid UTF-8: {e.reason}") from None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_index=None, _handle=None, _handle_pid=None)
        return state


def format_row(cells):
    """One TSV line; a cell holding a tab or a line break would corrupt the file, so it is refused."""
    cells = [str(cell) for cell in cells]
    for k, cell in enumerate(cells):
        if any(c in cell for c in "\t\r\n"):
            raise ValueError(f"column {k + 1} holds a tab or line break: {cell[:80]!r}")
    return "\t".join(cells) + "\n"
