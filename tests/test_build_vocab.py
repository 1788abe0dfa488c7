"""build_vocab.py's own checks."""
import pytest

from data.vocab import MissingVocabularyError, Vocabulary
from helpers import write_tsv
from preprocess import build_vocab


def test_too_small_vocab_size_names_the_minimum_in_one_line(tmp_path, capsys):
    rows = write_tsv(tmp_path / "text.tsv", ["a\tGrüße aus Köln, ñandú, 漢字 テスト", "b\tøre ß Ü"])
    with pytest.raises(SystemExit) as stop:
        build_vocab.main(["--input", f"{rows}:1", "--out-dir", str(tmp_path / "vocab"), "--vocab-size", "100"])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    needed = int(error.rsplit(" ", 1)[1])
    assert "error: --vocab-size 100 is too small" in error and needed > 256 + 20
    assert not (tmp_path / "vocab").exists()
    build_vocab.main(["--input", f"{rows}:1", "--out-dir", str(tmp_path / "vocab"), "--vocab-size", str(needed)])
    assert (tmp_path / "vocab" / "dict.txt").exists()


def test_a_folder_without_the_vocabulary_files_is_named_with_the_option_to_give(tmp_path, vocab_dir):
    (tmp_path / "dict.txt").write_text((vocab_dir / "dict.txt").read_text())
    with pytest.raises(MissingVocabularyError, match=f"vocabulary folder {tmp_path} .* has no spm.model: point --vocab-dir"):
        Vocabulary(str(tmp_path), num_bins=100)


def test_a_bad_row_is_named_by_file_line_and_column_and_writes_nothing(tmp_path, capsys):
    rows = write_tsv(tmp_path / "text.tsv", ["a\tfirst caption", "b"])
    with pytest.raises(SystemExit) as stop:
        build_vocab.main(["--input", f"{rows}:1", "--out-dir", str(tmp_path / "vocab"), "--vocab-size", "400"])
    assert stop.value.code == f"error: {rows}:2: column 2: expected at least 2 tab-separated columns, found 1"
    assert not (tmp_path / "vocab").exists()


def test_a_missing_input_file_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as stop:
        build_vocab.main(["--input", f"{tmp_path}/absent.tsv:1", "--out-dir", str(tmp_path / "vocab")])
    assert stop.value.code == f"error: {tmp_path}/absent.tsv: no such file"
    assert not (tmp_path / "vocab").exists()
