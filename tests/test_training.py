"""A few optimisation steps lower the loss for every task."""
import math

import pytest
import torch

from helpers import build_criterion, build_model, build_task, losses_over_steps


@pytest.mark.parametrize("name, data", [
    ("caption", "caption"), ("refcoco", "refcoco"), ("video_caption", "video_caption"),
    ("audio_caption", "audio_caption"), ("video_qa", "video_qa"), ("temporal_grounding", "temporal"),
    ("ner", "ner"), ("re", "re"), ("ee", "ee")])
def test_a_few_steps_lower_the_loss(demo_dir, vocab_dir, name, data):
    task = build_task(name, f"{demo_dir}/{data}_train.tsv,{demo_dir}/{data}_valid.tsv", vocab_dir)
    task.load_dataset("train")
    dataset = task.dataset("train")
    batch = dataset.collater([dataset[i] for i in range(8)])
    losses = losses_over_steps(task, batch, 25)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.6 * losses[0], losses


def test_constraint_masks_confine_the_loss_to_bins(demo_dir, vocab_dir):
    """refcoco's training softmax runs over bin tokens only, x1 and y1 no lower than x0 and y0, then
    EOS, as generation does."""
    task = build_task("refcoco", f"{demo_dir}/refcoco_train.tsv", vocab_dir)
    task.load_dataset("train")
    dataset = task.dataset("train")
    batch = dataset.collater([dataset[i] for i in range(2)])
    masks = batch["constraint_masks"]
    vocab = task.vocab
    assert masks.shape == (*batch["target"].shape, len(vocab.dictionary))
    assert masks[:, :2].sum(-1).tolist() == [[vocab.num_bins] * 2] * 2
    corner = batch["target"][:, :2] - vocab.first_bin
    assert masks[:, 2:4].sum(-1).tolist() == (vocab.num_bins - corner).tolist()
    assert masks[:, 4].sum(-1).tolist() == [1, 1] and masks[:, 4, vocab.dictionary.eos()].all()
    criterion = build_criterion(task)
    model = build_model(task)
    loss, _, log = criterion(model, batch)
    assert torch.isfinite(loss) and loss.item() > 0
    # unmasked, the same model puts mass on text tokens too, so its NLL is higher
    free = dict(batch)
    free.pop("constraint_masks")
    _, _, free_log = criterion(model, free)
    assert free_log["nll_loss"] > log["nll_loss"]


def first_bin_losses(criterion, model, batch, logits_around):
    """Per-row loss and NLL on the first target token (x0), with logits ``logits_around(offsets)`` of the
    bins' offsets from that row's target."""
    target, vocab = batch["target"], criterion.task.vocab
    logits = torch.full((*target.shape, model.decoder.embed_tokens.num_embeddings), -50.0)
    offsets = torch.arange(vocab.num_bins)[None] - (target[:, :1] - vocab.first_bin)
    logits[:, 0, vocab.first_bin:vocab.first_bin + vocab.num_bins] = logits_around(offsets.float())
    loss, nll = criterion.compute_loss(model, (logits, {}), batch, reduce=False)
    return loss.view(target.shape)[:, 0], nll.view(target.shape)[:, 0]


def test_bin_smoothing_makes_a_near_miss_cheaper_than_a_far_one(demo_dir, vocab_dir):
    task = build_task("refcoco", f"{demo_dir}/refcoco_train.tsv", vocab_dir)
    task.load_dataset("train")
    dataset = task.dataset("train")
    batch = dataset.collater([dataset[0]])
    model = build_model(task)
    one_hot, smoothed = build_criterion(task, 0.0), build_criterion(task, 0.0, bin_smoothing=0.01)
    step = 1 if batch["target"][0, 0] - task.vocab.first_bin < task.vocab.num_bins // 2 else -1

    def certain_of(miss):  # all the mass on the bin ``miss`` away from the target
        return lambda offsets: 20.0 * (offsets == miss * step)

    near, far = (first_bin_losses(one_hot, model, batch, certain_of(miss))[0] for miss in (5, 300))
    assert near == pytest.approx(far)  # one-hot: any miss is as bad as any other
    (near, near_nll), (far, far_nll) = (first_bin_losses(smoothed, model, batch, certain_of(miss)) for miss in (5, 300))
    assert near < far - 0.5
    assert near_nll == pytest.approx(far_nll)  # the reported NLL stays that of the exact bin

    def gaussian_at(shift):  # the smoothed target itself (10 of 1000 bins wide), moved by ``shift`` bins
        return lambda offsets: -0.5 * ((offsets - shift) / 10.0) ** 2

    centred, off_by_two, off_by_minus_two = (first_bin_losses(smoothed, model, batch, gaussian_at(shift))[0]
                                              for shift in (0, 2, -2))
    assert centred < off_by_two and centred < off_by_minus_two  # the target distribution is the best guess


def test_bin_smoothing_spreads_weight_only_over_allowed_bins(demo_dir, vocab_dir):
    """x1 may not lie left of x0. With equal logits, every allowed bin has log-probability -log(n): the loss is
    log(n) if the target's weights sum to 1 over the allowed bins, less if some leaked onto forbidden ones (a
    wide Gaussian puts much of its weight left of x0)."""
    task = build_task("refcoco", f"{demo_dir}/refcoco_train.tsv", vocab_dir)
    task.load_dataset("train")
    dataset = task.dataset("train")
    batch = dataset.collater([dataset[0]])
    model = build_model(task)
    logits = torch.zeros(*batch["target"].shape, model.decoder.embed_tokens.num_embeddings)
    loss, _ = build_criterion(task, 0.0, bin_smoothing=0.5).compute_loss(model, (logits, {}), batch, reduce=False)
    allowed = batch["constraint_masks"][0, 2].sum().item()  # x1's choices
    assert allowed < task.vocab.num_bins
    assert loss[2].item() == pytest.approx(math.log(allowed), rel=1e-5)
