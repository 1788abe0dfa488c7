"""The weight_average task through evaluate.py: metrics along the interpolation path, CSV and PNG."""
import csv
import json

import pytest
from PIL import Image

import evaluate

pytestmark = pytest.mark.slow


def run_evaluate(paths, results, data, extra=()):
    return evaluate.main(["--path", *map(str, paths), "--data", data, "--results-dir", str(results),
                          "--beam", "1", "--batch-size", "8", "--num-workers", "0", *extra])


def test_curve_endpoints_match_each_checkpoint_and_files_are_written(checkpoints, demo_dir, tmp_path):
    data = f"{demo_dir}/refcoco_valid.tsv"
    a, b = checkpoints[0], checkpoints[2]
    rows = run_evaluate([a, b], tmp_path / "curve", data, ["--lambdas", "0", "0.5", "1"])
    assert [row["lambda"] for row in rows] == [0.0, 0.5, 1.0]

    alone_a = run_evaluate([a], tmp_path / "a", data)
    alone_b = run_evaluate([b], tmp_path / "b", data)
    for row, alone in ((rows[0], alone_a), (rows[2], alone_b)):
        assert row["acc@0.5"] == alone["acc@0.5"] and row["mean_iou"] == alone["mean_iou"]
    predictions = lambda d: [json.loads(line) for line in open(d / "predictions.jsonl")]  # noqa: E731
    assert predictions(tmp_path / "curve" / "lambda_0") == predictions(tmp_path / "a")
    assert predictions(tmp_path / "curve" / "lambda_1") == predictions(tmp_path / "b")

    with open(tmp_path / "curve" / "curve.csv") as f:
        table = list(csv.DictReader(f))
    assert [float(r["lambda"]) for r in table] == [0.0, 0.5, 1.0]
    assert float(table[1]["mean_iou"]) == pytest.approx(rows[1]["mean_iou"])
    with Image.open(tmp_path / "curve" / "curve.png") as image:
        assert image.format == "PNG" and image.width > 200


def test_lambdas_need_two_checkpoints_and_stay_in_range(checkpoints, demo_dir, tmp_path):
    data = f"{demo_dir}/refcoco_valid.tsv"
    with pytest.raises(SystemExit):
        run_evaluate([checkpoints[0]], tmp_path / "x", data, ["--lambdas", "0", "1"])
    with pytest.raises(ValueError, match="outside"):
        run_evaluate(checkpoints[:2], tmp_path / "x", data, ["--lambdas", "0", "1.5"])
    assert not (tmp_path / "x").exists()
