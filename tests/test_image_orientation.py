"""EXIF orientation: images keep their stored frame by default, as COCO, OFA and UnIVAL annotations
assume; a row whose image carries an orientation is counted and its file reported once; with
--exif-transpose the image is turned to the photo as displayed, and boxes, targets and predictions
are in that frame."""
import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2.functional import pil_to_tensor

from data.media import decode_image
from helpers import build_task, write_tsv
from test_media import WHERE, coco_bytes

DISPLAYED_ONLY_BOX = [50.0, 450.0, 300.0, 600.0]  # inside the displayed 422 x 640 photo, below the stored 640 x 422


def with_orientation(image, orientation, form):
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format=form, exif=exif.tobytes())
    return buffer.getvalue()


def rotated_photo():
    """The COCO photo (640 x 422 as stored) tagged with EXIF orientation 6: shown turned a quarter clockwise."""
    return with_orientation(Image.open(io.BytesIO(coco_bytes())), 6, "JPEG")


def displayed(data):
    return pil_to_tensor(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_is_kept_by_default_and_turned_as_pil_turns_it(orientation):
    stored = Image.fromarray(np.random.default_rng(orientation).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    data = with_orientation(stored, orientation, "PNG")
    kept = decode_image(data, WHERE)
    assert torch.equal(kept.pixels, pil_to_tensor(stored)) and kept.size == (30, 20)
    assert kept.orientation == orientation
    turned = decode_image(data, WHERE, exif_transpose=True)
    assert torch.equal(turned.pixels, displayed(data)) and turned.orientation == 1
    assert turned.size == ((20, 30) if orientation >= 5 else (30, 20))


def test_a_rotated_jpeg_decoded_whole_or_at_reduced_scale():
    data = rotated_photo()
    turned = decode_image(data, WHERE, exif_transpose=True)
    assert turned.size == (422, 640) and torch.equal(turned.pixels, displayed(data))
    drafted = decode_image(data, WHERE, draft_size=64, exif_transpose=True)
    assert drafted.size == (422, 640) and drafted.pixels.shape[1] > drafted.pixels.shape[2]


@pytest.fixture()
def rotated_rows(tmp_path):
    """A refcoco TSV: two rows on the rotated photo, one on the untagged original, all with paths."""
    (tmp_path / "rotated.jpg").write_bytes(rotated_photo())
    (tmp_path / "plain.jpg").write_bytes(coco_bytes())
    box = "10,20,100,200"  # inside both frames
    rows = [f"r{k}\timg\tthe dog\t{box}\t{name}" for k, name in enumerate(["rotated.jpg", "rotated.jpg", "plain.jpg"])]
    rows.append(f"r3\timg\tthe dog\t{','.join(map(str, DISPLAYED_ONLY_BOX))}\trotated.jpg")
    return write_tsv(tmp_path / "rows.tsv", rows), tmp_path


def predicted_box(task, sample):
    """The box the model would predict if it generated this sample's target."""
    tokens = [t for t in sample["target"].tolist() if t != task.vocab.dictionary.eos()]
    return task.decode_prediction(tokens, sample["meta"])["box"]


def test_by_default_the_stored_frame_is_read_and_rotated_rows_are_counted_once_per_file(
        rotated_rows, vocab_dir, caplog):
    data, media = rotated_rows
    task = build_task("refcoco", data, vocab_dir, media_dir=str(media), skip_bad_rows=1)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    stored = pil_to_tensor(Image.open(media / "rotated.jpg").convert("RGB"))
    assert torch.equal(task.media.image(dataset.row(0), "image", draft=False).pixels, stored)
    assert dataset[0]["meta"]["size"] == (640, 422)
    assert predicted_box(task, dataset[0]) == pytest.approx([10, 20, 100, 200], abs=0.7)
    assert "lies outside the 640x422 image" in dataset[3]["bad_row"]  # a box drawn on the displayed photo

    with caplog.at_level(logging.WARNING):
        counted = [task.bad_rows.count_exif_rotated(batch) for epoch in (1, 2) for batch in task.get_batch_iterator(
            dataset=dataset, max_sentences=2, num_workers=1, epoch=epoch).next_epoch_itr(shuffle=False)]
    assert sum(counted) == 2 * 2  # lines 1 and 2, in each epoch
    warnings = [r.getMessage() for r in caplog.records if "EXIF orientation" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(f"{data}:1: the image has EXIF orientation 6")
    assert "--exif-transpose" in warnings[0] and task.bad_rows.exif_rotated == {data: {1, 2}}


def test_exif_transpose_reads_the_displayed_frame_with_boxes_and_predictions_in_it(rotated_rows, vocab_dir):
    data, media = rotated_rows
    task = build_task("refcoco", data, vocab_dir, media_dir=str(media), exif_transpose=True)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    assert torch.equal(task.media.image(dataset.row(0), "image", draft=False).pixels,
                       displayed((media / "rotated.jpg").read_bytes()))
    sample = dataset[3]
    assert sample["meta"]["size"] == (422, 640) and "exif_rotated" not in sample
    assert predicted_box(task, sample) == pytest.approx(DISPLAYED_ONLY_BOX, abs=0.7)
    assert dataset[2]["meta"]["size"] == (640, 422)  # an untagged photo as stored
    batch = dataset.collater([dataset[i] for i in range(4)])
    assert task.bad_rows.count_exif_rotated(batch) == 0 and not task.bad_rows.exif_rotated

