"""fairseq-train with this repository as --user-dir, then evaluate.py on its checkpoint."""
import json
import os
import subprocess
import sys

import pytest
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from helpers import tiny_model_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model_flags():
    return [f"--{k.replace('_', '-')}={v}" for k, v in tiny_model_args().items()]


def run(command, cwd):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_fairseq_train_user_dir_then_evaluate_cider_matches_pycocoevalcap(demo_dir, vocab_dir, tmp_path):
    fairseq_train = os.path.join(os.path.dirname(sys.executable), "fairseq-train")
    run([fairseq_train, "--user-dir", ROOT, "--ignore-unused-valid-subsets",
         f"{demo_dir}/caption_train.tsv,{demo_dir}/caption_valid.tsv", "--task", "caption",
         "--vocab-dir", str(vocab_dir), "--patch-image-size", "64", *model_flags(),
         "--criterion", "constrained_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "3e-3",
         "--batch-size", "16", "--max-update", "150", "--num-workers", "0", "--save-dir", str(tmp_path / "ckpt"),
         "--no-epoch-checkpoints", "--disable-validation", "--log-format", "simple"], cwd=tmp_path)
    checkpoint = tmp_path / "ckpt" / "checkpoint_last.pt"
    assert checkpoint.exists()

    results = tmp_path / "results"
    run([sys.executable, os.path.join(ROOT, "evaluate.py"), "--path", str(checkpoint),
         "--data", f"{demo_dir}/caption_valid.tsv", "--results-dir", str(results), "--beam", "2",
         "--max-len-b", "16"], cwd=tmp_path)
    predictions = [json.loads(line) for line in open(results / "predictions.jsonl")]
    metrics = json.load(open(results / "metrics.json"))
    assert len(predictions) == metrics["rows"] == 12
    assert set(metrics) >= {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}

    tokenizer = PTBTokenizer()
    res = tokenizer.tokenize({p["uniq_id"]: [{"caption": p["caption"]}] for p in predictions})
    gts = tokenizer.tokenize({p["uniq_id"]: [{"caption": r} for r in p["references"]] for p in predictions})
    cider, _ = Cider().compute_score(gts, res)
    assert metrics["CIDEr"] == pytest.approx(cider, abs=1e-9)
    assert cider > 0  # 150 updates already learn the shape and colour words
