"""Validation of the single IE tasks: metric reduction, and run_scripts/{ner,re,ee} train.sh then eval.sh as written."""
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from helpers import build_task, read_lines, tiny_model_args, validated, write_tsv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ie_validation_reports_the_f1_of_the_whole_set_not_a_mean_of_batches(demo_dir, vocab_dir):
    """Validation in batches of 4 gives the F1s (and malformed count) that scoring all the predictions at
    once gives, as evaluate.py does; a mean of the batches' F1s differs."""
    task = build_task("ner", f"{demo_dir}/ner_valid.tsv", vocab_dir)
    task.load_dataset("valid")
    metas = [task.dataset("valid")[i]["meta"] for i in range(24)]
    predictions = [{"mix": m["mix"], "dataset": m["dataset"], "size": list(m["size"]) if m["size"] else None,
                    "malformed": int(i % 3 == 0), "reference": m["reference"],
                    "prediction": m["reference"] if i % 4 else metas[(i + 1) % len(metas)]["reference"]}
                   for i, m in enumerate(metas)]
    expected = task.score(predictions)
    values = validated(task, predictions, batch_size=4)
    assert {"entity/f1", "entity/grounded_f1", "malformed"} <= set(values)
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, abs=1e-4), name
    batch_means = sum(task.score(predictions[s:s + 4])["entity/f1"] for s in range(0, 24, 4)) / 6
    assert abs(batch_means - expected["entity/f1"]) > 1e-3


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
