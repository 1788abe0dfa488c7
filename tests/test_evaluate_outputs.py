"""evaluate.py's results: written as a pair or not at all, refused before any row is evaluated when they
cannot be written, and bad --data named in one line."""
import json
import os
import resource
import signal

import pytest

import evaluate

pytestmark = pytest.mark.slow


def run_evaluate(checkpoint, data, results_dir, *flags):
    return evaluate.main(["--path", str(checkpoint), "--data", str(data), "--results-dir", str(results_dir),
                          "--beam", "1", "--batch-size", "8", "--num-workers", "0", "--cpu", *flags])


def file_size_limited(limit):
    """Writes beyond ``limit`` bytes fail with EFBIG, as on a full disk (the soft limit only, restored after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    return lambda: (resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard)), signal.signal(signal.SIGXFSZ, handler))


def test_a_failed_write_leaves_the_previous_pair_whole(tmp_path):
    evaluate.write_results(tmp_path, [{"uniq_id": "old"}], {"rows": 1})
    before = {name: (tmp_path / name).read_bytes() for name in evaluate.RESULT_FILES}
    restore = file_size_limited(4096)
    try:
        with pytest.raises(evaluate.OutputError, match="predictions.jsonl and .*metrics.json") as info:
            evaluate.write_results(tmp_path, [{"uniq_id": f"new-{i}", "caption": "x" * 100} for i in range(100)],
                                   {"rows": 100})
    finally:
        restore()
    assert "untouched" in str(info.value)
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before


def test_read_only_results_folder_fails_before_any_row_is_evaluated(checkpoints, tmp_path):
    """The data are a FIFO, which evaluation would refuse on opening: the folder's error comes first."""
    results = tmp_path / "results"
    results.mkdir()
    os.mkfifo(tmp_path / "rows.tsv")
    results.chmod(0o555)
    try:
        with pytest.raises(SystemExit, match=f"OutputError: the output folder {results} is not writable"):
            run_evaluate(checkpoints[0], tmp_path / "rows.tsv", results)
    finally:
        results.chmod(0o755)
    assert os.listdir(results) == []


def test_results_that_would_overwrite_the_data_are_refused(checkpoints, demo_dir, tmp_path):
    data = tmp_path / "predictions.jsonl"
    data.write_bytes((demo_dir / "refcoco_valid.tsv").read_bytes())
    with pytest.raises(SystemExit, match=f"{data} would overwrite the input {data}"):
        run_evaluate(checkpoints[0], data, tmp_path)
    assert data.read_bytes() == (demo_dir / "refcoco_valid.tsv").read_bytes()


@pytest.mark.parametrize("what", ["missing", "folder", "fifo", "empty"])
def test_unreadable_data_is_one_line_naming_it(what, checkpoints, tmp_path):
    data = {"missing": tmp_path / "nowhere.tsv", "folder": tmp_path, "fifo": tmp_path / "pipe.tsv",
            "empty": tmp_path / "empty.tsv"}[what]
    if what == "fifo":
        os.mkfifo(data)
    if what == "empty":
        data.write_bytes(b"")
    with pytest.raises(SystemExit, match="DataFileError") as info:
        run_evaluate(checkpoints[0], data, tmp_path / "out")
    assert str(data) in str(info.value)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_results_are_written_as_a_pair(checkpoints, demo_dir, tmp_path):
    metrics = run_evaluate(checkpoints[0], demo_dir / "refcoco_valid.tsv", tmp_path)
    lines = (tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == metrics["rows"] == json.loads((tmp_path / "metrics.json").read_text())["rows"] > 0
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "predictions.jsonl"]


def test_a_result_format_of_another_task_is_refused_before_evaluating(checkpoints, demo_dir, tmp_path):
    with pytest.raises(SystemExit, match=r"--result-format vqa is for the multi_image_qa, video_qa, vqa tasks, not RefcocoTask"):
        run_evaluate(checkpoints[0], demo_dir / "refcoco_valid.tsv", tmp_path, "--result-format", "vqa")
    assert not list(tmp_path.iterdir())
