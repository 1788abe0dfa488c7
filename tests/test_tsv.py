import hashlib
import os
import pathlib
import pickle
import random
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from data.errors import BadInputError, DataFileError
from data.tsv import TsvFile
import data.tsv


def write(path, content):
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def all_rows(tsv):
    return [tsv.fields(i) for i in range(len(tsv))]


class Rows(torch.utils.data.Dataset):
    def __init__(self, tsv):
        self.tsv = tsv

    def __len__(self):
        return len(self.tsv)

    def __getitem__(self, i):
        return self.tsv.fields(i)[0]


def test_random_access_returns_every_row_in_shuffled_order(tmp_path):
    rng = random.Random(0)
    rows = [[f"id{i}", "é✓" * rng.randrange(40), "x" * rng.randrange(300)] for i in range(2000)]
    tsv = TsvFile(write(tmp_path / "file.tsv", "".join("\t".join(r) + "\n" for r in rows)))
    order = list(range(len(rows)))
    rng.shuffle(order)
    assert len(tsv) == len(rows)
    assert all(tsv.fields(i) == rows[i] for i in order)
    with pytest.raises(IndexError):
        tsv.fields(len(rows))


ROW_TEXT = st.text(st.characters(blacklist_characters="\t\n\r", blacklist_categories=["Cs"]), max_size=12)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.lists(ROW_TEXT, min_size=1, max_size=3), max_size=20),
       trailing_newline=st.booleans(), chunk_bytes=st.integers(1, 9))
def test_index_scan_agrees_with_split(rows, trailing_newline, chunk_bytes):
    content = "\n".join("\t".join(r) for r in rows) + ("\n" if trailing_newline else "")
    lines = content.removeprefix("\ufeff").split("\n")  # a byte order mark is not part of the first cell
    expected = [line.split("\t") for line in (lines[:-1] if lines[-1] == "" else lines)]
    old_chunk, data.tsv._CHUNK_BYTES = data.tsv._CHUNK_BYTES, chunk_bytes  # newlines across chunk edges
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = write(pathlib.Path(folder) / "file.tsv", content)
            if not content:
                with pytest.raises(DataFileError, match="empty"):
                    TsvFile(path)
            else:
                assert all_rows(TsvFile(path)) == expected
    finally:
        data.tsv._CHUNK_BYTES = old_chunk


def test_derived_arrays_are_cached_beside_the_index_and_rebuilt_with_the_file(tmp_path):
    path = write(tmp_path / "file.tsv", "a\tbb\n" * 1000)
    builds = []

    def lengths(tsv):
        builds.append(1)
        return np.array([len(tsv.fields(i)[1]) for i in range(len(tsv))], dtype=np.uint16)

    tsv = TsvFile(path)
    assert tsv.cached_array("widths", lambda: lengths(tsv)).tolist() == [2] * 1000
    cached = tmp_path / "file.tsv.widths.index"
    built = cached.stat().st_mtime_ns
    assert TsvFile(path).cached_array("widths", lambda: lengths(tsv)).tolist() == [2] * 1000
    assert len(builds) == 1 and cached.stat().st_mtime_ns == built
    assert cached.stat().st_size - 2 * 1000 <= 256
    write(path, "a\tbbb\n" * 1000)
    tsv = TsvFile(path)
    assert tsv.cached_array("widths", lambda: lengths(tsv)).tolist() == [3] * 1000 and len(builds) == 2


def test_line_endings_and_final_row(tmp_path):
    assert all_rows(TsvFile(write(tmp_path / "a.tsv", "a\tb\r\nc\td\r\n"))) == [["a", "b"], ["c", "d"]]
    assert all_rows(TsvFile(write(tmp_path / "b.tsv", "a\nb"))) == [["a"], ["b"]]
    assert all_rows(TsvFile(write(tmp_path / "c.tsv", "a\n\nb\n"))) == [["a"], [""], ["b"]]



@pytest.mark.parametrize("content", ["", "\ufeff"])
def test_empty_file_is_an_error_not_zero_rows(content, tmp_path):
    path = write(tmp_path / "empty.tsv", content)
    with pytest.raises(DataFileError, match="empty") as info:
        TsvFile(path)
    assert str(path) in str(info.value)


def test_fifo_device_folder_and_missing_file_are_refused_without_blocking_or_writing(tmp_path):
    fifo = tmp_path / "pipe.tsv"
    os.mkfifo(fifo)
    for path, reason in ((fifo, "not a regular file"), ("/dev/null", "not a regular file"), (tmp_path, "a folder"),
                         (tmp_path / "missing.tsv", "no such file")):
        with pytest.raises(DataFileError, match=reason) as info:
            TsvFile(path)  # a FIFO would block in open() for ever
        assert str(path) in str(info.value)
    assert not os.path.exists("/dev/null.index")
    assert sorted(os.listdir(tmp_path)) == ["pipe.tsv"]


def test_byte_order_mark_is_stripped_and_reported_once(tmp_path, caplog):
    path = write(tmp_path / "bom.tsv", "\ufeffid1\ta\nid2\tb\n")
    with caplog.at_level("WARNING"):
        tsv = TsvFile(path)
        rows = all_rows(tsv) + all_rows(tsv)
    assert rows == [["id1", "a"], ["id2", "b"]] * 2
    assert [r.message for r in caplog.records].count(f"{path}: starts with a UTF-8 byte order mark, ignored") == 1


@pytest.mark.parametrize("header", ["uniq_id\timage_id\tcaption\tobjects\timage", "\ufeffuniq-id\tImage\tText",
                                    "id\t\tvideo\taudio\ttext\tannotation"])
def test_header_row_is_an_error_naming_it(header, tmp_path):
    path = write(tmp_path / "header.tsv", f"{header}\n1\t2\tcat\t\tcat.jpg\n")
    with pytest.raises(BadInputError, match="header row") as info:
        TsvFile(path)
    assert (info.value.path, info.value.line) == (str(path), 1)


@pytest.mark.parametrize("first", ["1\t2\ta cat\t\tcat.jpg", "id\tcaption\ttext\t\tZm9v",
                                   'text\t\t\t\ttext\t{"entities": []}', "image\tvideo"[:5]])
def test_rows_that_hold_some_column_names_are_not_headers(first, tmp_path):
    """A data row has a media, box or JSON cell (or is one cell), which no header name can be."""
    assert TsvFile(write(tmp_path / "rows.tsv", f"{first}\n")).fields(0) == first.split("\t")


def test_selected_cols_reorder_and_column_numbers(tmp_path):
    tsv = TsvFile(write(tmp_path / "file.tsv", "a\tb\tc\td\n"), selected_cols=[3, 0, 2])
    assert tsv.fields(0) == ["d", "a", "c"]
    assert [tsv.column_number(k) for k in range(3)] == [4, 1, 3]
    assert tsv.line_number(0) == 1


def test_too_few_columns_names_file_line_and_column(tmp_path):
    tsv = TsvFile(write(tmp_path / "file.tsv", "a\tb\tc\na\tb\tc\na\tb\n"), selected_cols=[0, 2])
    assert tsv.fields(1) == ["a", "c"]
    with pytest.raises(BadInputError) as error:
        tsv.fields(2)
    assert "file.tsv:3:" in str(error.value)
    assert (error.value.line, error.value.column) == (3, 3)
    assert "expected at least 3 tab-separated columns, found 2" in str(error.value)


def test_invalid_utf8_row_is_bad_input_at_its_cell(tmp_path):
    tsv = TsvFile(write(tmp_path / "file.tsv", b"ok\tfine\nok\t\xff\xfe\n"))
    assert tsv.fields(0) == ["ok", "fine"]
    with pytest.raises(BadInputError) as error:
        tsv.fields(1)
    assert (error.value.line, error.value.column) == (2, 2)
    assert "UTF-8" in str(error.value)


def test_index_is_cached_beside_the_file_and_reused(tmp_path):
    path = write(tmp_path / "file.tsv", "a\nb\nc\n")
    TsvFile(path)
    index = tmp_path / "file.tsv.index"
    built = index.stat().st_mtime_ns
    assert len(TsvFile(path)) == 3
    assert index.stat().st_mtime_ns == built
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_index_is_rebuilt_when_the_file_changes(tmp_path):
    path = write(tmp_path / "file.tsv", "a\nb\nc\n")
    assert len(TsvFile(path)) == 3
    write(path, "abcde\n")  # same size, different rows: only the mtime tells
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    tsv = TsvFile(path)
    assert (len(tsv), tsv.fields(0)) == (1, ["abcde"])
    write(path, "x\ny\nz\nw\n")
    assert len(TsvFile(path)) == 4


@pytest.mark.parametrize("in_place", [True, False])
def test_rewrite_keeping_size_and_mtime_is_detected(in_place, tmp_path):
    """Two rows swapped, so the file keeps its size but rows move, and the mtime set back (touch -r, a copy
    that keeps times): the index is rebuilt, so each row is read whole, at its new place."""
    path = write(tmp_path / "file.tsv", "1\tshort\n2\tlonger row\n3\tsame size!\n")
    tsv = TsvFile(path)
    assert tsv.fields(1) == ["2", "longer row"] and second_cell_widths(tsv) == [5, 10, 10]
    before = path.stat()
    swapped = "2\tlonger row\n1\tshort\n3\tsame size!\n"
    if in_place:
        with open(path, "r+") as f:
            f.write(swapped)
    else:
        write(tmp_path / "new.tsv", swapped)
        os.replace(tmp_path / "new.tsv", path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    tsv = TsvFile(path)
    assert all_rows(tsv) == [["2", "longer row"], ["1", "short"], ["3", "same size!"]]
    assert second_cell_widths(tsv) == [10, 5, 10]  # arrays cached beside the index are rebuilt too


def second_cell_widths(tsv):
    return tsv.cached_array("widths", lambda: np.array([len(tsv.fields(i)[1]) for i in range(len(tsv))])).tolist()


def test_index_costs_eight_bytes_per_row(tmp_path):
    sizes = {}
    for rows in (10, 1010):
        path = write(tmp_path / f"{rows}.tsv", "row\n" * rows)
        TsvFile(path)
        sizes[rows] = os.path.getsize(f"{path}.index")
    assert sizes[1010] - sizes[10] == 8 * 1000
    assert sizes[10] - 8 * 10 <= 256


def test_read_only_folder_falls_back_to_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "readonly"
    folder.mkdir()
    path = write(folder / "file.tsv", "a\nb\n")
    folder.chmod(0o555)
    try:
        assert all_rows(TsvFile(path)) == [["a"], ["b"]]
        assert os.listdir(folder) == ["file.tsv"]
        digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()
        cached = tmp_path / "home" / ".cache" / "uniground" / "tsv-index" / f"{digest}.index"
        built = cached.stat().st_mtime_ns
        assert len(TsvFile(path)) == 2
        assert cached.stat().st_mtime_ns == built
    finally:
        folder.chmod(0o755)


def test_read_only_folder_uses_index_dir_when_given(tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    path = write(folder / "file.tsv", "a\n")
    folder.chmod(0o555)
    try:
        assert len(TsvFile(path, index_dir=tmp_path / "indexes")) == 1
        assert len(list((tmp_path / "indexes").glob("*.index"))) == 1
    finally:
        folder.chmod(0o755)


def test_pickled_file_reads_after_the_original_opened_its_handle(tmp_path):
    tsv = TsvFile(write(tmp_path / "file.tsv", "a\tb\nc\td\n"), selected_cols=[1])
    assert tsv.fields(0) == ["b"]
    clone = pickle.loads(pickle.dumps(tsv))
    assert all_rows(clone) == [["b"], ["d"]]


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_dataloader_workers_yield_every_row_once(tmp_path, start_method):
    rows = [f"row{i}" for i in range(2000)]
    # Long rows make each readline several reads, so a file position shared by the workers would show.
    tsv = TsvFile(write(tmp_path / "file.tsv", "".join(f"{r}\t{'x' * 20000}\n" for r in rows)))
    tsv.fields(0)  # the parent's handle is open before the workers fork
    loader = torch.utils.data.DataLoader(
        Rows(tsv), batch_size=4, shuffle=True, num_workers=2, multiprocessing_context=start_method,
        collate_fn=list)
    seen = [row for batch in loader for row in batch]
    assert sorted(seen) == sorted(rows)


class CountedReads(TsvFile):
    """A TsvFile that counts its reads of the map: single rows and blocks of rows."""

    def __init__(self, *args, **kwargs):
        self.reads = {"row": 0, "block": 0}
        super().__init__(*args, **kwargs)

    def _read_line(self, i):
        self.reads["row"] += 1
        return super()._read_line(i)

    def _read_block(self, i):
        self.reads["block"] += 1
        return super()._read_block(i)


def test_rows_read_in_order_come_in_blocks_and_random_rows_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(data.tsv, "_BLOCK_BYTES", 64)  # about 8 rows a block
    rows = [[f"{i}", "é" * (i % 5), "x" * (i % 7)] for i in range(200)]
    path = write(tmp_path / "file.tsv", "".join("\t".join(r) + "\n" for r in rows))
    tsv = CountedReads(path)
    tsv.reads.update(row=0, block=0)  # the header check read the first row
    assert all_rows(tsv) == rows
    assert tsv.reads["row"] <= 3 and 200 / 12 < tsv.reads["block"] < 200 / 4
    order = list(range(0, 200, 7))[::-1]
    tsv = CountedReads(path)
    tsv.reads.update(row=0, block=0)
    assert [tsv.fields(i) for i in order] == [rows[i] for i in order]
    assert tsv.reads == {"row": len(order), "block": 0}


@pytest.mark.parametrize("bom", ["", "\ufeff"])
@pytest.mark.parametrize("ending", ["\n", "\r\n"])
@pytest.mark.parametrize("last_ending", ["", "\n", "\r\n", "\r"])
def test_blocks_keep_row_text_as_single_reads_do(bom, ending, last_ending, tmp_path, monkeypatch):
    monkeypatch.setattr(data.tsv, "_BLOCK_BYTES", 16)
    rows = [f"a{i}\tb\r{i}\t" + "c" * (i % 9) for i in range(40)]
    path = write(tmp_path / "file.tsv", bom + ending.join(rows) + last_ending)
    alone = [TsvFile(path).fields(i) for i in reversed(range(len(rows)))][::-1]
    assert all_rows(TsvFile(path)) == alone
    assert alone[5] == ["a5", "b\r5", "ccccc"] and alone[0][0] == "a0"


def test_bad_rows_inside_a_block_are_named_and_the_pass_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(data.tsv, "_BLOCK_BYTES", 1 << 10)
    lines = [f"id{i}\tx\ty".encode() for i in range(30)]
    lines[12], lines[20] = b"id12\tonly two", b"id20\t\xff\ty"
    tsv = TsvFile(write(tmp_path / "file.tsv", b"\n".join(lines) + b"\n"), selected_cols=[2, 0])
    for i in range(30):
        if i in (12, 20):
            with pytest.raises(BadInputError) as error:
                tsv.fields(i)
            assert (error.value.line, error.value.column) == ((13, 3) if i == 12 else (21, 2))
        else:
            assert tsv.fields(i) == ["y", f"id{i}"]


def test_pickled_file_with_one_selected_column_reads_in_order(tmp_path):
    tsv = TsvFile(write(tmp_path / "file.tsv", "".join(f"{i}\tv{i}\n" for i in range(50))), selected_cols=[1])
    assert all_rows(tsv)[:2] == [["v0"], ["v1"]]
    assert all_rows(pickle.loads(pickle.dumps(tsv))) == [[f"v{i}"] for i in range(50)]
