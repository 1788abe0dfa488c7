"""The fairseq dataset over TSV rows: epochs, shards, workers, collation."""
import pytest
import torch

from helpers import build_task


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
