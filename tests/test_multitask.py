"""The multitask mixture: sampling ratios, one task per batch, per-task metrics and a combined score."""
from argparse import Namespace
from collections import Counter

import pytest
import torch
from fairseq import metrics

from helpers import build_criterion, build_model, build_task


@pytest.fixture(scope="module")
def mixture(demo_dir, vocab_dir):
    data = (f"caption={demo_dir}/caption_train.tsv,{demo_dir}/caption_valid.tsv;"
            f"refcoco={demo_dir}/refcoco_train.tsv,{demo_dir}/refcoco_valid.tsv")
    return build_task("multitask", data, vocab_dir, tasks="caption:0.25,refcoco:0.75",
                      eval_metrics=True, eval_args='{"beam": 1, "max_len_b": 8}')


def batches(task, split, epoch):
    return list(task.get_batch_iterator(dataset=task.dataset(split), max_sentences=6, seed=1, epoch=epoch,
                                        disable_iterator_cache=True).next_epoch_itr(shuffle=split == "train"))


def test_each_epoch_samples_tasks_in_the_asked_ratios(mixture):
    mixture.load_dataset("train")
    total = len(mixture.dataset("train"))
    rows = Counter()
    for batch in batches(mixture, "train", epoch=1):
        rows[batch["task"]] += len(batch["id"])
    assert rows["caption"] == round(0.25 * total) and rows["refcoco"] == round(0.75 * total)
    # refcoco has fewer rows than its share: it is cycled, each of its rows used evenly
    refcoco_rows = len(mixture.subtasks["refcoco"].dataset("train"))
    assert rows["refcoco"] > refcoco_rows


def test_batches_keep_one_task_and_its_constraint(mixture):
    mixture.load_dataset("train")
    for batch in batches(mixture, "train", epoch=2)[:20]:
        if batch["task"] == "refcoco":
            assert batch["constraint_masks"].shape[:2] == batch["target"].shape
        else:
            assert "constraint_masks" not in batch
        assert batch["net_input"]["src_tokens"].size(0) == len(batch["meta"])


def test_validation_covers_every_row_once(mixture):
    mixture.load_dataset("valid")
    seen = Counter()
    for batch in batches(mixture, "valid", epoch=1):
        seen[batch["task"]] += len(batch["id"])
    assert seen == {name: len(task.dataset("valid")) for name, task in mixture.subtasks.items()}


def test_validation_reports_each_task_and_the_weighted_score(mixture):
    mixture.load_dataset("valid")
    torch.manual_seed(0)
    model = build_model(mixture).eval()
    for task in mixture.subtasks.values():
        task.sequence_generator = task.build_generator([model], Namespace(beam=1, max_len_b=8))
    criterion = build_criterion(mixture)
    firsts = {}
    for batch in batches(mixture, "valid", epoch=1):
        firsts.setdefault(batch["task"], batch)
    with metrics.aggregate(new_root=True) as aggregator:
        logs = []
        with torch.no_grad():
            for batch in firsts.values():
                logs.append(mixture.valid_step(batch, model, criterion)[2])
        mixture.reduce_metrics(logs, criterion)
        values = aggregator.get_smoothed_values()
    assert {"caption/cider", "refcoco/acc@0.5", "refcoco/mean_iou", "score"} <= set(values)
    expected = (0.25 * values["caption/cider"] + 0.75 * values["refcoco/acc@0.5"]) / 1.0
    assert values["score"] == pytest.approx(expected, abs=1e-3)


def test_unknown_or_unlisted_tasks_are_refused(demo_dir, vocab_dir):
    with pytest.raises(ValueError, match="no data given"):
        build_task("multitask", f"caption={demo_dir}/caption_valid.tsv", vocab_dir, tasks="caption:1,refcoco:1")
    with pytest.raises(ValueError, match="not a UniGround task"):
        build_task("multitask", f"translation={demo_dir}/caption_valid.tsv", vocab_dir, tasks="translation:1")


@pytest.mark.slow
def test_train_py_multitask_then_evaluate_each_task(demo_dir, vocab_dir, tmp_path):
    import json
    import os
    import subprocess
    import sys

    import evaluate
    from conftest import ROOT, model_flags

    data = (f"caption={demo_dir}/caption_train.tsv,{demo_dir}/caption_valid.tsv;"
            f"refcoco={demo_dir}/refcoco_train.tsv,{demo_dir}/refcoco_valid.tsv")
    result = subprocess.run(
        [sys.executable, "train.py", data, "--task", "multitask", "--tasks", "caption:1,refcoco:1",
         "--vocab-dir", str(vocab_dir), *model_flags(), "--patch-image-size", "64",
         "--criterion", "constrained_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-3",
         "--batch-size", "8", "--max-update", "4", "--num-workers", "0", "--eval-metrics",
         "--eval-args", '{"beam": 1, "max_len_b": 6}', "--best-checkpoint-metric", "score",
         "--maximize-best-checkpoint-metric", "--validate-interval-updates", "4", "--no-epoch-checkpoints",
         "--log-format", "simple", "--save-dir", str(tmp_path / "ckpt")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "caption/cider" in result.stdout + result.stderr and "| score " in result.stdout + result.stderr
    checkpoint = str(tmp_path / "ckpt" / "checkpoint_best.pt")
    with pytest.raises(ValueError, match="--task"):
        evaluate.main(["--path", checkpoint, "--data", f"{demo_dir}/refcoco_valid.tsv",
                       "--results-dir", str(tmp_path / "none")])
    for task, metric in (("caption", "CIDEr"), ("refcoco", "acc@0.5")):
        metrics = evaluate.main(["--path", checkpoint, "--task", task, "--data", f"{demo_dir}/{task}_valid.tsv",
                                 "--results-dir", str(tmp_path / task), "--beam", "1", "--num-workers", "0"])
        assert metric in metrics and metrics["rows"] == len(open(f"{demo_dir}/{task}_valid.tsv").readlines())
        assert json.load(open(os.path.join(tmp_path, task, "metrics.json")))[metric] == metrics[metric]


def test_checkpointed_state_brings_back_each_sub_tasks_own(demo_dir, vocab_dir):
    """VQA's candidate answers, read from its training rows, travel in the mixture's task state to a
    mixture loaded from the checkpoint and to the sub-task evaluated alone (evaluate.py --task)."""
    from evaluate import select_task
    data = (f"video_qa={demo_dir}/video_qa_train.tsv,{demo_dir}/video_qa_valid.tsv;"
            f"caption={demo_dir}/caption_train.tsv,{demo_dir}/caption_valid.tsv")
    trained = build_task("multitask", data, vocab_dir, tasks="video_qa:0.5,caption:0.5")
    trained.load_dataset("valid")
    answers = trained.subtasks["video_qa"].choices
    assert "video_qa/answers" in trained.state_dict() and len(answers) > 3
    # as fairseq loads a checkpoint, on a machine without the training files
    moved = data.replace("_train.tsv", "_train_elsewhere.tsv")
    loaded = build_task("multitask", moved, vocab_dir, tasks="video_qa:0.5,caption:0.5", from_checkpoint=True)
    loaded.load_state_dict(trained.state_dict())
    assert loaded.subtasks["video_qa"].state_dict()["answers"] == answers
    args = Namespace(task="video_qa", data=f"{demo_dir}/video_qa_valid.tsv", selected_cols=None, path=["ckpt.pt"],
                     task_option=["eval_mode=candidates"])
    alone = select_task(loaded, args)
    alone.load_dataset("valid")
    assert alone.cfg.eval_mode == "candidates" and alone.choices == answers


def test_a_short_generation_limit_is_weighed_against_the_generated_files_targets(demo_dir, vocab_dir, caplog):
    """A sub-task's --max-tgt-length is the mixture's (NER's long targets here); whether max_len_b cuts
    outputs short depends on the targets of the file it generates for, caption's."""
    data = (f"caption={demo_dir}/caption_train.tsv,{demo_dir}/caption_valid.tsv;"
            f"ner={demo_dir}/ner_train.tsv,{demo_dir}/ner_valid.tsv")
    caption = build_task("multitask", data, vocab_dir, tasks="caption:0.5,ner:0.5").subtasks["caption"]
    longest = int(caption.measured_lengths(caption.tsv_file(f"{demo_dir}/caption_valid.tsv"))[:, 1].max()) - 1
    assert caption.cfg.max_tgt_length - 1 > longest
    model = build_model(caption)
    with caplog.at_level("WARNING"):
        caption.build_generator([model], Namespace(beam=1, max_len_b=longest))
        assert "generation stops" not in caplog.text
        caption.build_generator([model], Namespace(beam=1, max_len_b=longest - 1))
    assert (f"generation stops after max_len_b {longest - 1} tokens, fewer than the {longest} of the longest target "
            f"in {demo_dir}/caption_valid.tsv") in caplog.text
