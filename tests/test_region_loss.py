"""The region loss: rows that refer to a region of their image teach the encoder which cells lie in it."""
import numpy as np
import pytest
import torch

from criterions.constrained_cross_entropy import cells_inside, region_loss
from data.transforms import ImageTransform
from helpers import build_criterion, build_model, build_task


def test_a_transformed_image_gives_its_first_objects_box_as_fractions():
    image = torch.zeros(3, 100, 200, dtype=torch.uint8)
    boxed = ImageTransform(50, train=False)(image, boxes=np.array([[20.0, 10.0, 120.0, 60.0]]))
    np.testing.assert_allclose(boxed.region(), [0.1, 0.1, 0.6, 0.6], atol=1e-6)
    outlined = ImageTransform(50, train=False)(image, polygons=[[[20, 10, 120, 10, 60, 60], [150, 80, 160, 90]]])
    np.testing.assert_allclose(outlined.region(), [0.1, 0.1, 0.8, 0.9], atol=1e-6)


def test_cells_inside_a_range_by_centre_and_the_cell_of_its_centre():
    low, high = torch.tensor([0.0, 0.3, 0.55]), torch.tensor([0.5, 0.9, 0.6])
    # four cells with centres 0.125, 0.375, 0.625, 0.875; the last range holds no centre, only its own
    assert cells_inside(low, high, 4).int().tolist() == [[1, 1, 0, 0], [0, 1, 1, 1], [0, 0, 1, 0]]


@pytest.fixture(scope="module")
def refcoco_batch(demo_dir, vocab_dir):
    task = build_task("refcoco", f"{demo_dir}/refcoco_train.tsv", vocab_dir)
    task.load_dataset("train")
    dataset = task.dataset("train")
    return task, dataset, dataset.collater([dataset[i] for i in range(4)])


def test_refcoco_rows_carry_their_box_as_fractions_of_the_model_input(refcoco_batch):
    task, dataset, batch = refcoco_batch
    regions = batch["regions"]
    assert regions.shape == (4, 4) and torch.isfinite(regions).all()
    # the box tokens say where the region is, to within a bin
    bins = (batch["target"][:, :4] - task.vocab.first_bin).float() / (task.vocab.num_bins - 1)
    assert (regions - bins).abs().max() < 1.0 / (task.vocab.num_bins - 1)


def test_the_region_loss_is_the_cells_binary_cross_entropy_added_with_its_weight(refcoco_batch):
    task, _, batch = refcoco_batch
    torch.manual_seed(0)
    model = build_model(task, region_head=True).eval()
    plain, weighted = build_criterion(task), build_criterion(task, region_loss_weight=0.5)
    with torch.no_grad():
        loss, _, log = plain(model, batch)
        with_region, _, region_log = weighted(model, batch)
        encoder_out = model.encoder(**{k: v for k, v in batch["net_input"].items() if k != "prev_output_tokens"})
    logits = encoder_out["region_logits"]
    side = int(logits.size(1) ** 0.5)
    assert side * side == logits.size(1)  # one image a row: its cells
    x0, y0, x1, y1 = batch["regions"].unbind(1)
    labels = (cells_inside(y0, y1, side)[:, :, None] & cells_inside(x0, x1, side)[:, None, :]).flatten(1)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    torch.testing.assert_close(region_log["region_loss"], expected.mean(1).sum())
    torch.testing.assert_close(with_region, loss + 0.5 * expected.mean(1).sum())
    assert region_log["region_rows"] == 4 and "region_loss" not in log
    assert 0 < labels.float().mean() < 1


def test_rows_without_a_region_are_left_out(refcoco_batch):
    task, _, batch = refcoco_batch
    torch.manual_seed(0)
    model = build_model(task, region_head=True).eval()
    with torch.no_grad():
        encoder_out = model.encoder(**{k: v for k, v in batch["net_input"].items() if k != "prev_output_tokens"})
    regions = batch["regions"].clone()
    regions[1:3] = float("nan")
    kept = {**encoder_out, "region_logits": encoder_out["region_logits"][[0, 3]],
            "attend_mask": encoder_out["attend_mask"][[0, 3]]}
    loss, rows = region_loss(encoder_out, regions)
    assert rows == 2
    torch.testing.assert_close(loss, region_loss(kept, batch["regions"][[0, 3]])[0])
    # a row whose image is spliced into the text has no cells in the image block
    hidden = {**encoder_out, "attend_mask": encoder_out["attend_mask"].clone()}
    hidden["attend_mask"][0] = False
    assert region_loss(hidden, regions)[1] == 1


def test_a_region_loss_without_a_region_head_is_refused(refcoco_batch):
    task, _, batch = refcoco_batch
    with pytest.raises(ValueError, match="--region-loss-weight needs a model with --region-head"):
        build_criterion(task, region_loss_weight=1.0)(build_model(task), batch)
    with pytest.raises(ValueError, match="--region-loss-weight must not be negative"):
        build_criterion(task, region_loss_weight=-1.0)


def test_refseg_rows_carry_their_masks_box(demo_dir, vocab_dir):
    task = build_task("refseg", f"{demo_dir}/refseg_train.tsv", vocab_dir)
    task.load_dataset("train")
    dataset = task.dataset("train")
    batch = dataset.collater([dataset[i] for i in range(3)])
    regions = batch["regions"]
    assert regions.shape == (3, 4) and torch.isfinite(regions).all()
    assert ((regions[:, :2] < regions[:, 2:]) & (regions >= 0).all(1, keepdim=True) & (regions <= 1).all(1, keepdim=True)).all()


def test_a_few_steps_with_the_region_loss_lower_it(refcoco_batch):
    task, _, batch = refcoco_batch
    torch.manual_seed(0)
    model = build_model(task, region_head=True, dropout=0.0)
    criterion = build_criterion(task, region_loss_weight=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    regions = []
    for _ in range(15):
        loss, sample_size, log = criterion(model, batch)
        optimizer.zero_grad()
        (loss / sample_size).backward()
        optimizer.step()
        regions.append(float(log["region_loss"]))
    assert regions[-1] < 0.5 * regions[0], regions
