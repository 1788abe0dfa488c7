"""A few optimisation steps lower the loss for every task."""
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
