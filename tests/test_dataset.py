"""The fairseq dataset over TSV rows: epochs, shards, workers, collation."""
import numpy as np
import pytest
import torch

from helpers import build_task, read_lines, set_cell, write_tsv


@pytest.fixture(scope="module")
def caption_task(demo_dir, vocab_dir):
    task = build_task("caption", f"{demo_dir}/caption_train.tsv,{demo_dir}/caption_valid.tsv", vocab_dir)
    task.load_dataset("train")
    return task


def epoch_ids(task, epoch, num_shards=1, shard_id=0, num_workers=0):
    iterator = task.get_batch_iterator(
        dataset=task.dataset("train"), max_sentences=5, seed=1, num_shards=num_shards, shard_id=shard_id,
        num_workers=num_workers, epoch=epoch, disable_iterator_cache=True,
    ).next_epoch_itr(shuffle=True)
    return [i for batch in iterator if batch for i in batch["id"].tolist()]


def test_every_row_once_per_epoch_across_two_shards(caption_task):
    n = len(caption_task.dataset("train"))
    for epoch in (1, 2):
        shards = [epoch_ids(caption_task, epoch, num_shards=2, shard_id=k) for k in (0, 1)]
        assert not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(n))


def test_fresh_order_every_epoch(caption_task):
    first, second = epoch_ids(caption_task, 1), epoch_ids(caption_task, 2)
    assert sorted(first) == sorted(second) == list(range(len(caption_task.dataset("train"))))
    assert first != second
    assert epoch_ids(caption_task, 1) == first  # same seed and epoch, same order


def test_dataloader_workers_yield_the_same_rows(caption_task):
    assert sorted(epoch_ids(caption_task, 1, num_workers=2)) == sorted(epoch_ids(caption_task, 1))


def test_collated_batch_shapes(caption_task):
    dataset = caption_task.dataset("train")
    batch = dataset.collater([dataset[i] for i in range(4)])
    net_input = batch["net_input"]
    pad, eos = caption_task.vocab.dictionary.pad(), caption_task.vocab.dictionary.eos()
    assert net_input["image"].shape == (4, 3, 64, 64)
    assert net_input["image_present"].tolist() == [True] * 4
    assert net_input["src_tokens"].size(0) == 4 and batch["target"].size(0) == 4
    # teacher forcing: the decoder input is the target shifted right behind EOS (fairseq's BOS)
    for target, prev in zip(batch["target"], net_input["prev_output_tokens"]):
        length = int(target.ne(pad).sum())
        assert target[length - 1] == eos and prev[0] == eos
        assert torch.equal(prev[1:length], target[: length - 1])
    assert batch["ntokens"] == int(batch["target"].ne(pad).sum())
    assert batch["bad_rows"] == []


def test_max_tokens_batches_hold_similar_lengths_and_every_row_once(tmp_path, demo_dir, vocab_dir):
    rows = read_lines(f"{demo_dir}/caption_train.tsv")
    words = np.random.default_rng(0).integers(1, 30, size=240).tolist()
    captions = [" ".join(["a small red triangle"] * w) for w in words]
    train = write_tsv(tmp_path / "train.tsv", [set_cell(rows[i % len(rows)], 3, c) for i, c in enumerate(captions)])
    task = build_task("caption", f"{train},{demo_dir}/caption_valid.tsv", vocab_dir)
    task.load_dataset("train")
    dataset = task.dataset("train")
    # A row's size is its measured prompt and target, EOS included; the longest sets --max-tgt-length.
    tokens = np.array([len(task.vocab.encode_text(c)) for c in captions])
    prompt = len(task.vocab.encode_text(task.prompt))
    assert dataset.sizes.tolist() == (prompt + 1 + tokens + 1).tolist()
    assert (task.cfg.max_src_length, task.cfg.max_tgt_length) == (prompt + 1, tokens.max() + 1)
    orders = []
    for epoch in (1, 2):
        shards = []
        for shard in (0, 1):
            iterator = task.get_batch_iterator(dataset=dataset, max_tokens=400, seed=1, num_shards=2, shard_id=shard,
                                               epoch=epoch, disable_iterator_cache=True).next_epoch_itr(shuffle=True)
            batches = [batch["id"].numpy() for batch in iterator if batch]
            shards.append(np.concatenate(batches))
            for ids in batches:
                low, high = dataset.sizes[ids].min(), dataset.sizes[ids].max()
                assert len(ids) * high <= 400
                # neighbours in length: no other row has a size strictly between the batch's extremes
                between = (low < dataset.sizes) & (dataset.sizes < high)
                between[ids] = False
                assert not between.any()
        assert sorted(np.concatenate(shards).tolist()) == list(range(len(captions)))
        orders.append(np.concatenate(shards).tolist())
    assert orders[0] != orders[1]


def test_validation_batches_keep_a_last_batch_smaller_than_the_required_multiple(caption_task):
    """fairseq-train asks for batches in multiples of 8 (--required-batch-size-multiple); validation
    still scores all 12 rows, where fairseq alone would drop the last 4."""
    caption_task.load_dataset("valid")
    batches = caption_task.get_batch_iterator(dataset=caption_task.dataset("valid"), max_sentences=8,
                                              required_batch_size_multiple=8).frozen_batches
    assert sorted(i for batch in batches for i in batch) == list(range(12))
