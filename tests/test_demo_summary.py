"""The quickstart's table: each task's metrics beside its trivial baseline (run_scripts/demo_summary.py)."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run_scripts"))

import demo_summary  # noqa: E402


def write_results(folder, metrics):
    os.makedirs(folder)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    open(os.path.join(folder, "predictions.jsonl"), "w").close()


def test_refseg_is_scored_beside_the_mean_training_box_as_a_mask(demo_dir, tmp_path, capsys):
    write_results(tmp_path / "refseg", {"mIoU": 0.625, "acc@0.5": 0.75, "cIoU": 0.5})
    rows = demo_summary.main(["--demo-dir", str(demo_dir), "--results-dir", str(tmp_path)])
    assert [row[:3] for row in rows] == [("refseg", "mIoU", 0.625), ("refseg", "acc@0.5", 0.75)]
    baseline_miou, baseline_accuracy = rows[0][3], rows[1][3]
    # one box for every shape: it overlaps most of them a little and few by half
    assert 0 <= baseline_accuracy < baseline_miou < 0.5
    assert "refseg" in capsys.readouterr().out


def test_the_mask_baseline_box_bounds_every_polygon():
    assert demo_summary.bounding_box([[10, 20, 30, 5, 25, 40], [0, 50, 5, 60, 2, 55]]) == [0, 5, 30, 60]


def test_multi_image_tasks_are_scored_beside_their_baselines(demo_dir, tmp_path):
    labels = [line.split("\t")[3] for line in (demo_dir / "nlvr_valid.tsv").read_text().splitlines()]
    write_results(tmp_path / "nlvr", {"accuracy": 0.5})
    with open(tmp_path / "nlvr" / "predictions.jsonl", "w") as f:
        f.writelines(json.dumps({"label": label}) + "\n" for label in labels)
    write_results(tmp_path / "multi_image_refcoco", {"acc@0.5": 0.25, "mean_iou": 0.3})
    rows = {row[:2]: row[2:] for row in demo_summary.main(["--demo-dir", str(demo_dir), "--results-dir", str(tmp_path)])}
    train = [line.split("\t")[3] for line in (demo_dir / "nlvr_train.tsv").read_text().splitlines()]
    commonest = max(set(train), key=train.count)
    assert rows[("nlvr", "accuracy")] == (0.5, pytest.approx(labels.count(commonest) / len(labels)))
    model, baseline = rows[("multi_image_refcoco", "acc@0.5")]
    assert model == 0.25 and 0 <= baseline < 0.5  # one image of two: at most about half of the boxes
