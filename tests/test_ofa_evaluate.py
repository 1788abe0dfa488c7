"""evaluate.py on an OFA checkpoint (the oracle's random ofa_tiny) with OFA's vocabulary (--bpe-dir)."""
import base64
import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import pytest
import torch

import evaluate
import predict
from conftest import ROOT, SHARED_DATA
from helpers import read_lines, write_tsv
from models.ofa import OFACheckpointError
from tasks.ofa_checkpoint import load_ofa_model_and_task
from test_ofa_vocab import write_bpe_files
from utils.checkpoint import load_state

ORACLE = os.path.join(SHARED_DATA, "ofa-oracle")
CHECKPOINT = os.path.join(ORACLE, "ofa_tiny_random.pt")
pytestmark = pytest.mark.skipif(not os.path.isdir(ORACLE), reason=f"the OFA oracle fixture {ORACLE} is absent")


@pytest.fixture
def bpe_dir(tmp_path):
    folder = tmp_path / "bpe"
    folder.mkdir()
    write_bpe_files(folder)
    shutil.copy(os.path.join(ORACLE, "dict.txt"), folder / "dict.txt")
    return folder


@pytest.fixture
def refcoco_rows(demo_dir, tmp_path):
    return write_tsv(tmp_path / "refcoco.tsv", read_lines(demo_dir / "refcoco_valid.tsv", 4))


@pytest.mark.slow
def test_evaluate_runs_an_ofa_checkpoint_on_a_refcoco_tsv(bpe_dir, refcoco_rows, tmp_path):
    results = tmp_path / "results"
    metrics = evaluate.main(["--path", CHECKPOINT, "--bpe-dir", str(bpe_dir), "--data", refcoco_rows,
                             "--results-dir", str(results), "--batch-size", "4", "--num-workers", "0",
                             "--beam", "2", "--cpu"])
    predictions = [json.loads(line) for line in (results / "predictions.jsonl").read_text().splitlines()]
    assert metrics["rows"] == len(predictions) == 4 and "acc@0.5" in metrics
    assert all(len(p["box"]) == 4 for p in predictions)  # four bins, as the refcoco constraint demands


def test_ofa_task_starts_sources_and_decoder_inputs_with_bos(bpe_dir, refcoco_rows):
    [model], task = load_ofa_model_and_task(CHECKPOINT, str(bpe_dir), {"data": refcoco_rows})
    assert task.cfg.patch_image_size == 256 and len(task.vocab.dictionary) == 9697  # from OFA's task options
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[i] for i in range(2)])
    bos, eos = task.vocab.dictionary.bos(), task.vocab.dictionary.eos()
    assert (batch["net_input"]["src_tokens"][:, 0] == bos).all()
    assert (batch["net_input"]["prev_output_tokens"][:, 0] == bos).all()
    assert torch.equal(batch["net_input"]["prev_output_tokens"][:, 1:], batch["target"][:, :-1])
    assert (batch["target"][:, -1] == eos).all() and task.vocab.to_bin(int(batch["target"][0, 0])) is not None
    with torch.no_grad():
        logits = model(**batch["net_input"])[0]
    assert logits.shape == (*batch["target"].shape, 9697)


def test_vocabulary_that_does_not_fit_the_checkpoint_names_both_sizes(tmp_path, refcoco_rows):
    write_bpe_files(tmp_path)  # its own dict.txt: 262 GPT-2 ids, not the checkpoint's 500
    with pytest.raises(OFACheckpointError, match="has 9459 entries but the checkpoint's embeddings have 9697 rows"):
        load_ofa_model_and_task(CHECKPOINT, str(tmp_path), {"data": refcoco_rows})


def test_ofa_task_without_a_uniground_counterpart_is_an_error(tmp_path, bpe_dir):
    state = load_state(CHECKPOINT)
    state["cfg"]["task"]["_name"] = "image_gen"
    torch.save(state, tmp_path / "image_gen.pt")
    with pytest.raises(OFACheckpointError, match="OFA task 'image_gen' has no UniGround counterpart"):
        load_ofa_model_and_task(str(tmp_path / "image_gen.pt"), str(bpe_dir))


@pytest.mark.slow
def test_train_fine_tunes_from_an_ofa_checkpoint(bpe_dir, demo_dir, tmp_path):
    """--finetune-from-model with OFA's flags (--scale-attn ...): the weights load and the loss falls."""
    data = write_tsv(tmp_path / "refcoco.tsv", read_lines(demo_dir / "refcoco_train.tsv", 8))
    result = subprocess.run(
        [sys.executable, "train.py", f"{data},{data}", "--task", "refcoco", "--bpe-dir", str(bpe_dir),
         "--arch", "ofa_tiny", "--scale-attn", "--scale-fc", "--scale-heads", "--disable-entangle",
         "--finetune-from-model", CHECKPOINT, "--patch-image-size", "64", "--dropout", "0",
         "--criterion", "constrained_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-3",
         "--batch-size", "8", "--max-update", "4", "--no-save", "--disable-validation", "--num-workers", "0",
         "--seed", "1", "--log-format", "simple", "--log-interval", "1", "--save-dir", str(tmp_path / "ckpt"),
         "--cpu"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"loaded checkpoint {CHECKPOINT}" in output.lower()
    losses = [float(m) for m in re.findall(r"train_inner .* loss=([0-9.]+)", output)]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0], losses


def test_an_ofa_checkpoint_without_its_bpe_files_is_one_line_naming_them_and_the_option(refcoco_rows, tmp_path):
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--path", CHECKPOINT, "--data", refcoco_rows, "--results-dir", str(results), "--cpu"])
    assert str(stop.value).startswith("MissingBPEFilesError: utils/BPE: OFA's BPE files missing: dict.txt")
    assert "--bpe-dir" in str(stop.value) and not results.exists()


@pytest.mark.slow
def test_predict_runs_an_ofa_checkpoint_with_no_data_its_limits_the_models_positions(bpe_dir, refcoco_rows, tmp_path):
    """No --data to size the length limits to: they are the model's positions; another task with its own
    options (OFA's VQA: answers, the question as decoder prompt) on the same weights."""
    predictor = predict.Predictor.from_checkpoint(CHECKPOINT, bpe_dir=str(bpe_dir), device="cpu")
    task, _ = predictor.task()
    assert (task.cfg.max_src_length, task.cfg.max_tgt_length) == (1024, 1024)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(base64.b64decode(read_lines(refcoco_rows, 1)[0].split("\t")[4]))
    flags = ["--path", CHECKPOINT, "--bpe-dir", str(bpe_dir), "--image", str(photo), "--cpu", "--beam", "2"]
    box = predict.main([*flags, "--text", "the man"])
    assert box["kind"] == "box" and len(box["box"]) == 4
    answers = tmp_path / "ans2label.pkl"
    answers.write_bytes(pickle.dumps({"no": 0, "two": 1}))
    answer = predict.main([*flags, "--text", "how many?", "--task", "vqa", "--task-option", f"answers_file={answers}",
                           "--task-option", "decoder_prompt=true"])
    assert answer["kind"] == "answer" and answer["answer"] in ("no", "two")


@pytest.mark.parametrize("task", [None, "vqa"])
def test_an_unknown_task_option_is_one_line_naming_it(bpe_dir, refcoco_rows, tmp_path, task):
    results = tmp_path / "results"
    with pytest.raises(SystemExit, match=f"^UnknownTaskOptionError: the {task or 'refcoco'} task has no option "
                                         "'answer_file'"):
        evaluate.main(["--path", CHECKPOINT, "--bpe-dir", str(bpe_dir), "--data", refcoco_rows, "--results-dir",
                       str(results), "--cpu", "--task-option", "answer_file=x"] + (["--task", task] if task else []))
    assert not results.exists()
