"""Self-critical sequence training: CIDEr-D against pycocoevalcap and by hand, the training document
frequencies and their cache, the baseline, the direction of the update, the IoU reward, and a short
run from a cross-entropy checkpoint that raises validation CIDEr."""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from fairseq.distributed import LegacyDistributedDataParallel, ModuleProxyWrapper
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from conftest import ROOT, SHARED_DATA, model_flags
from criterions.self_critical import baseline_advantages, reduces_in_forward, unwrapped
from helpers import build_criterion, build_model, build_task, read_lines, write_tsv
from criterions.cider_reward import REWARD_END
from tasks.caption import normalise_caption
from evaluation.metrics import CiderD, document_frequencies, ptb_words


def images_tsv(demo_dir, out, name="caption_train.tsv"):
    """The demo's per-caption training rows as one row per image with its captions joined by &&, as
    self-critical training reads them."""
    images = {}
    for line in read_lines(demo_dir / name):
        _, image_id, caption, objects, media = line.split("\t")
        images.setdefault(image_id, (objects, media, []))[2].append(caption)
    return write_tsv(out, ["\t".join([i, i, "&&".join(c), o, m]) for i, (o, m, c) in images.items()])


def build_self_critical(task, **options):
    return build_criterion(task, 0.0, "self_critical", **options)


def batch_of(task, split, rows):
    dataset = task.dataset(split)
    return dataset.collater([dataset[i] for i in rows])


@pytest.fixture(scope="module")
def coco_captions():
    """COCO-mini's references per image, tokenised as validation scores them (PTB)."""
    with open(os.path.join(SHARED_DATA, "coco-mini", "captions.json")) as f:
        annotations = json.load(f)["annotations"]
    references = {}
    for a, words in zip(annotations, ptb_words([a["caption"] for a in annotations])):
        references.setdefault(a["image_id"], []).append(" ".join(words))
    return references


def test_cider_d_equals_pycocoevalcap_given_the_scored_references_frequencies(coco_captions):
    ids = sorted(coco_captions)
    # Each image's hypothesis: another image's first caption, a cut-down own caption, its own first caption.
    hypotheses = {k: [coco_captions[ids[(n + 1) % len(ids)]][0] if n % 3 == 0 else
                      " ".join(coco_captions[k][1].split()[:4]) if n % 3 == 1 else coco_captions[k][0]]
                  for n, k in enumerate(ids)}
    _, expected = Cider().compute_score({k: coco_captions[k] for k in ids}, hypotheses)  # scored in key order
    references = [[r.split() for r in coco_captions[k]] for k in ids]
    scorer = CiderD(*document_frequencies(references))
    ours = scorer.scores([hypotheses[k][0].split() for k in ids], references)
    assert len(ids) >= 20 and expected.std() > 0.1
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_cider_d_by_hand():
    # Two documents, every n-gram in one of them: each weighs log 2 (idf) times its count.
    scorer = CiderD(*document_frequencies([[["a", "b"]], [["c", "d"]]]))
    # identical: cosine 1 for unigrams and bigrams, no 3- or 4-grams: 10 * (1 + 1 + 0 + 0) / 4
    # one of two unigrams shared: cosine 1/2, bigrams 0: 10 * 0.5 / 4
    assert scorer.scores([["a", "b"], ["a", "c"]], [[["a", "b"]], [["a", "b"]]]) == pytest.approx([5.0, 1.25])
    # against "a b c d": unigram cosine 2/(sqrt 2 * 2), bigram 1/sqrt 3, Gaussian penalty of 2 fewer bigrams
    scorer = CiderD(*document_frequencies([[list("abcd")], [["x"]]]))
    expected = 10 / 4 * (1 / math.sqrt(2) + 1 / math.sqrt(3)) * math.exp(-4 / (2 * 6.0 ** 2))
    assert scorer.scores([["a", "b"]], [[list("abcd")]])[0] == pytest.approx(expected)
    # references shared by several hypotheses: averaged over the references, scored once each
    two = scorer.scores([["a", "b"], ["a", "b"]], [[list("abcd"), ["x"]]] * 2)
    assert two == pytest.approx([expected / 2] * 2)


def test_the_caption_reward_is_cider_d_with_the_training_references_frequencies(demo_dir, vocab_dir, tmp_path):
    """Scored on the training rows themselves, the reward's frequencies are those pycocoevalcap computes from
    the scored references, so both agree; the end token is part of every caption."""
    train = images_tsv(demo_dir, tmp_path / "train.tsv")
    task = build_task("caption", f"{train},{demo_dir}/caption_valid.tsv", vocab_dir)
    task.load_dataset("train")
    rows = [task.dataset("train")[i]["meta"] for i in range(len(task.dataset("train")))]
    predictions = [{"caption": rows[(i + 1) % len(rows)]["references"][i % 3], "references": meta["references"]}
                   for i, meta in enumerate(rows)]
    rewards = task.sequence_rewards(predictions)
    def with_end(texts):  # tokenised by pycocoevalcap itself
        tokenised = PTBTokenizer().tokenize({i: [{"caption": t} for t in v] for i, v in enumerate(texts)})
        return {i: [f"{t} {REWARD_END}" for t in v] for i, v in tokenised.items()}
    _, expected = Cider().compute_score(with_end([p["references"] for p in predictions]),
                                        with_end([[p["caption"]] for p in predictions]))
    assert rewards.std() > 0.1
    np.testing.assert_allclose(rewards, expected, rtol=1e-12)


def test_document_frequencies_are_cached_beside_the_tsv_and_counted_again_when_it_changes(demo_dir, vocab_dir,
                                                                                           tmp_path, caplog):
    train = images_tsv(demo_dir, tmp_path / "train.tsv")
    task = build_task("caption", f"{train},{demo_dir}/caption_valid.tsv", vocab_dir)
    frequencies, documents = task.cider_reward.reference_frequencies(task.tsv_file(train))
    cache, = tmp_path.glob("train.tsv.cider-df-*.index")
    captions = [line.split("\t")[2].split("&&") for line in read_lines(train)]
    words = iter(ptb_words([c for row in captions for c in row]))
    expected = document_frequencies([[next(words) + [REWARD_END] for _ in row] for row in captions])
    assert (frequencies, documents) == (dict(expected[0]), expected[1]) and documents == 48
    written = cache.stat().st_mtime_ns
    assert task.cider_reward.reference_frequencies(task.tsv_file(train)) == (frequencies, documents)  # read back
    assert cache.stat().st_mtime_ns == written
    # Same size and times, other words: the file's stamp changes, the frequencies are counted again.
    lines = read_lines(train)
    stat = os.stat(train)
    write_tsv(tmp_path / "train.tsv", [lines[0].replace("a ", "e ", 1)] + lines[1:])
    os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed, _ = task.cider_reward.reference_frequencies(task.tsv_file(train))
    assert changed != frequencies and changed[("e",)] == 1
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    # Rows of one caption each (the cross-entropy stage's layout): counted, with a warning naming the file.
    task.cider_reward.reference_frequencies(task.tsv_file(demo_dir / "caption_train.tsv"))
    assert any("every row holds one reference" in r.getMessage() and "caption_train.tsv" in r.getMessage()
               for r in caplog.records)


def test_the_baseline_is_the_mean_reward_of_the_rows_other_outputs():
    rewards = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 2.0]])
    advantages = baseline_advantages(rewards).reshape(2, 3)
    np.testing.assert_allclose(advantages, [[1 - 2.5, 2 - 2.0, 3 - 1.5], [0.5 - 1.25, 0.5 - 1.25, 2 - 0.5]])
    np.testing.assert_allclose(advantages.sum(1), 0.0, atol=1e-12)


@pytest.fixture(scope="module")
def caption_task(demo_dir, vocab_dir, tmp_path_factory):
    train = images_tsv(demo_dir, tmp_path_factory.mktemp("scst") / "train.tsv")
    task = build_task("caption", f"{train},{demo_dir}/caption_valid.tsv", vocab_dir)
    task.load_dataset("train")
    return task


def test_an_update_makes_better_rewarded_outputs_likelier(caption_task):
    """Four outputs of one row, from its own caption to another image's, one small step on the loss:
    the best rewarded output gains log-probability, the worst loses it."""
    torch.manual_seed(0)
    model = build_model(caption_task).train()
    criterion = build_self_critical(caption_task, scst_args='{"beam": 4}')
    batch = batch_of(caption_task, "train", [0])
    meta, other = batch["meta"][0], caption_task.dataset("train")[5]["meta"]
    own = normalise_caption(meta["references"][0])  # as the model writes captions
    captions = [own, " ".join(own.split()[:3]), normalise_caption(other["references"][0]), "a a a"]
    eos = torch.tensor([caption_task.vocab.dictionary.eos()])
    outputs = caption_task.target_entries([torch.cat([torch.tensor(caption_task.vocab.encode_text(c)), eos])
                                           for c in captions], [meta] * 4)
    rewards = caption_task.sequence_rewards([{"caption": c, "references": meta["references"]} for c in captions])
    advantages = baseline_advantages(rewards[None])
    assert rewards[0] > rewards[1] > max(rewards[2:]) and advantages.argmax() == 0, rewards
    before = criterion.output_log_probs(model, batch, outputs).detach()
    loss = -(torch.as_tensor(advantages, dtype=torch.float32) * criterion.output_log_probs(model, batch, outputs)).sum()
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad
    change = (criterion.output_log_probs(model, batch, outputs).detach() - before).numpy()
    assert change[advantages.argmax()] > 0 > change[advantages.argmin()], (advantages, change)
    assert float(np.dot(advantages, change)) > 0


@pytest.mark.parametrize("name", ["caption", "video_caption", "audio_caption"])
def test_the_criterion_trains_every_caption_task_and_validates_by_cross_entropy(name, demo_dir, vocab_dir, tmp_path):
    train = images_tsv(demo_dir, tmp_path / "train.tsv", f"{name}_train.tsv")
    task = build_task(name, f"{train},{demo_dir}/{name}_valid.tsv", vocab_dir)
    task.load_dataset("train")
    task.load_dataset("valid")
    torch.manual_seed(0)
    model = build_model(task).train()
    criterion = build_self_critical(task, scst_args='{"beam": 3, "max_len_b": 6}')
    batch = batch_of(task, "train", [0, 1])
    loss, sample_size, log = criterion(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and log["outputs"] == 6 and 0 <= log["reward"] and sample_size == log["ntokens"] > 6
    # (an untrained model's outputs all score 0, so their advantages and the gradient are 0: finite is all to ask)
    assert model.training and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # Each row encoded once for its outputs gives what the inputs repeated once per output give.
    outputs, _ = criterion.rewarded_outputs(model, batch)
    with torch.no_grad():
        once, repeated = (criterion.output_log_probs(model, batch, outputs, repeat_inputs=r) for r in (False, True))
    torch.testing.assert_close(once, repeated, rtol=1e-5, atol=1e-5)
    model.eval()
    valid = batch_of(task, "valid", [0, 1])
    with torch.no_grad():
        assert criterion(model, valid)[0] == pytest.approx(build_criterion(task, 0.0)(model, valid)[0].item())


def test_only_wrappers_that_reduce_gradients_in_their_forward_get_the_inputs_repeated(caption_task, tmp_path):
    model = build_model(caption_task)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        legacy = ModuleProxyWrapper(LegacyDistributedDataParallel(model, torch.distributed.group.WORLD))
        torch_ddp = ModuleProxyWrapper(torch.nn.parallel.DistributedDataParallel(model))
        assert [reduces_in_forward(m) for m in (model, legacy, torch_ddp)] == [False, False, True]
        assert unwrapped(legacy) is unwrapped(torch_ddp) is model
    finally:
        torch.distributed.destroy_process_group()


def test_refcoco_is_rewarded_by_iou_and_mixes_in_cross_entropy(demo_dir, vocab_dir):
    task = build_task("refcoco", f"{demo_dir}/refcoco_train.tsv,{demo_dir}/refcoco_valid.tsv", vocab_dir)
    reference = [10.0, 10.0, 30.0, 30.0]
    rewards = task.sequence_rewards([{"box": box, "reference": reference}
                                     for box in ([10, 10, 30, 30], [20, 10, 40, 30], None, [50, 50, 60, 60])])
    np.testing.assert_allclose(rewards, [1.0, 1 / 3, 0.0, 0.0])

    task.load_dataset("train")
    batch = batch_of(task, "train", [0, 1, 2])
    losses = {}
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        model = build_model(task).train()
        criterion = build_self_critical(task, scst_args='{"beam": 3, "max_len_b": 4}', ce_weight=weight)
        losses[weight] = criterion(model, batch)
    (plain, size, log), (mixed, _, mixed_log) = losses[0.0], losses[0.5]
    ce, _ = build_criterion(task, 0.0).compute_loss(model, model(**batch["net_input"]), batch)
    assert size == log["ntokens"] == 3 * 3 * 5  # three boxes of four bins and EOS per row
    assert mixed.item() == pytest.approx(plain.item() + 0.5 * ce.item() * size / batch["ntokens"], rel=1e-5)
    assert mixed_log["reward"] == pytest.approx(log["reward"]) and 0 <= log["reward"] <= 9


def test_the_criterion_refuses_tasks_without_a_reward_and_a_single_output(demo_dir, vocab_dir, caption_task):
    task = build_task("vqa", f"{demo_dir}/vqa_train.tsv,{demo_dir}/vqa_valid.tsv", vocab_dir)
    with pytest.raises(ValueError, match="needs a task that rewards its outputs.*VqaTask"):
        build_self_critical(task)
    with pytest.raises(ValueError, match="beam must be at least 2"):
        build_self_critical(caption_task, scst_args='{"beam": 1}')


@pytest.mark.slow
def test_self_critical_training_raises_validation_cider_of_a_cross_entropy_checkpoint(demo_dir, vocab_dir, tmp_path):
    """100 cross-entropy updates, then 20 self-critical ones validated every 5 (seeded): the best validation
    CIDEr (beam 3), the checkpoint that --best-checkpoint-metric cider keeps, gains at least 0.2. When written:
    0.93 after cross entropy, 0.81, 0.86, 0.95, 1.24 during self-critical training (validation CIDEr of the
    whole file; as means of per-batch figures these were 0.48, then 0.47, 0.47, 0.75, 0.86): the tiny
    model's captions jump between a few modes, so single validations are noisy."""
    train = images_tsv(demo_dir, tmp_path / "train.tsv")
    common = ["--task", "caption", "--vocab-dir", str(vocab_dir), *model_flags(), "--patch-image-size", "64",
              "--optimizer", "adam", "--num-workers", "0", "--seed", "1", "--log-format", "simple",
              "--eval-metrics", "--eval-args", '{"beam": 3, "max_len_b": 24}', "--no-epoch-checkpoints",
              "--validate-interval", "1000", "--save-interval", "1000"]

    def validation_ciders(data, save_dir, updates, every, *options):
        result = subprocess.run(
            [sys.executable, "train.py", f"{data},{demo_dir}/caption_valid.tsv", *common, "--max-update", str(updates),
             "--validate-interval-updates", str(every), "--save-interval-updates", str(updates),
             "--save-dir", str(save_dir), *options],
            cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return [float(v) for v in re.findall(r"\| valid on 'valid' subset .*?\| cider ([\d.]+)", result.stdout)]

    before, = validation_ciders(demo_dir / "caption_train.tsv", tmp_path / "ce", 100, 100, "--lr", "3e-3",
                                "--batch-size", "16", "--criterion", "constrained_label_smoothed_cross_entropy")
    during = validation_ciders(train, tmp_path / "scst", 20, 5, "--lr", "1e-4", "--batch-size", "8",
                               "--criterion", "self_critical", "--scst-args", '{"beam": 5, "max_len_b": 24}',
                               "--finetune-from-model", str(tmp_path / "ce" / "checkpoint_last.pt"))
    assert len(during) == 4 and max(during) >= before + 0.2, (before, during)
