"""Validation of the single IE tasks: metric reduction, and run_scripts/{ner,re,ee} train.sh then eval.sh as written."""
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
from fairseq import metrics

from helpers import build_criterion, build_task, read_lines, tiny_model_args, write_tsv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_single_ie_task_validation_reduces_slash_named_metrics_over_its_own_count(demo_dir, vocab_dir):
    """ner alone logs ``_eval:entity/f1`` with ``_eval_count:`` (no task prefix): each value is the
    count-weighted mean over the logging outputs, not a division by a count looked up under 'entity/'."""
    task = build_task("ner", f"{demo_dir}/ner_valid.tsv", vocab_dir)
    logs = [{"_eval_count:": 3, "_eval:entity/f1": 3 * 0.5, "_eval:entity/grounded_f1": 3 * 0.25, "_eval:malformed": 3},
            {"_eval_count:": 1, "_eval:entity/f1": 1 * 1.0, "_eval:entity/grounded_f1": 0.0, "_eval:malformed": 0}]
    with metrics.aggregate() as aggregated:
        task.reduce_metrics(logs, build_criterion(task))
    values = aggregated.get_smoothed_values()
    assert values["entity/f1"] == pytest.approx((1.5 + 1.0) / 4, abs=1e-4)
    assert values["entity/grounded_f1"] == pytest.approx(0.75 / 4, abs=1e-4)
    assert values["malformed"] == pytest.approx(0.75, abs=1e-4)


def run_script(script, env):
    result = subprocess.run(["sh", f"run_scripts/{script}"] + env.pop("ARGS", []), cwd=ROOT,
                            env={**os.environ, "PYTHON": sys.executable, **env},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("task, metric", [("ner", "entity"), ("re", "relation"), ("ee", "trigger")])
def test_ie_train_script_validates_and_eval_script_scores(task, metric, demo_dir, vocab_dir, tmp_path):
    """train.sh as written (2 updates, validation with --eval-metrics on 4 rows), then eval.sh on its
    best checkpoint: both report finite MUIE scores."""
    valid = tmp_path / f"{task}_valid.tsv"
    write_tsv(valid, read_lines(demo_dir / f"{task}_valid.tsv", 4))
    model = [f"--{key.replace('_', '-')}={value}" for key, value in tiny_model_args().items() if key != "arch"]
    log = run_script(f"{task}/train.sh", {
        "DATA": f"{demo_dir}/{task}_train.tsv,{valid}", "VOCAB": str(vocab_dir), "SAVE_DIR": str(tmp_path / "ckpt"),
        "MAX_UPDATE": "2", "VALID_EVERY": "2", "BATCH": "8", "WORKERS": "0", "WARMUP": "1", "FRAMES": "2",
        "ARGS": model})
    validation = re.search(rf"\| valid on 'valid' subset .*\| {metric}/f1 ([^ |]+) ", log)
    assert validation, log[-3000:]
    assert math.isfinite(float(validation.group(1)))
    # the limits were sized to the data and the checkpoint keeps them for evaluation
    sized = [int(re.search(rf"--{option} (\d+): the longest", log).group(1)) for option in ("max-src-length",
                                                                                           "max-tgt-length")]
    state = torch.load(tmp_path / "ckpt" / "checkpoint_best.pt", weights_only=True)["task_state"]
    assert [state["max_src_length"], state["max_tgt_length"]] == sized

    results = tmp_path / "results"
    log = run_script(f"{task}/eval.sh", {"CKPT": str(tmp_path / "ckpt" / "checkpoint_best.pt"), "DATA": str(valid),
                                         "RESULTS": str(results), "BEAM": "1"})
    assert "among the rows of" not in log  # not sized anew to the evaluated rows
    scores = json.load(open(results / "metrics.json"))
    assert scores["rows"] == 4
    assert all(math.isfinite(scores[f"{metric}/{name}"]) for name in ("precision", "recall", "f1", "grounded_f1"))
