"""UnIVAL checkpoints on UniGround's data: media read as UnIVAL's datasets read them (PyAV decoding)."""
import os
import shutil

import pytest
import torch
from torchvision.transforms import CenterCrop

from conftest import SHARED_DATA
from data.audio import unival_waveform
from data.transforms import ImageTransform
from data.video import decode_video
from helpers import read_lines, write_tsv
from models.unival import UnIVALModel
from tasks.ofa_checkpoint import load_ofa_model_and_task
from test_ofa_vocab import write_bpe_files
from utils.checkpoint import load_state

ORACLE = os.path.join(SHARED_DATA, "unival-oracle")
pytestmark = pytest.mark.skipif(not os.path.isdir(ORACLE), reason=f"the UnIVAL oracle fixture {ORACLE} is absent")


@pytest.mark.parametrize("height, width", [(64, 64), (120, 90), (113, 200), (112, 112)])
def test_center_crop_is_torchvisions(height, width):
    pixels = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8)
    assert torch.equal(ImageTransform.center_crop(pixels, 112), CenterCrop(112)(pixels))


def test_unival_waveform_quantises_repeats_whole_clips_and_zero_pads():
    waveform = unival_waveform(torch.tensor([0.5, -1.2, 0.25]), 8)
    quantised = torch.tensor([16383, -32767, 8191]) / 32767.0
    assert torch.equal(waveform, torch.cat([quantised, quantised, torch.zeros(2)]))
    assert torch.equal(unival_waveform(torch.tensor([0.5, 0.5]), 2), torch.full((2,), 16383 / 32767.0))


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bpe")
    write_bpe_files(folder)
    shutil.copy(os.path.join(ORACLE, "dict.txt"), folder / "dict.txt")
    return str(folder)


def unival_checkpoint(tmp_path, task_name):
    state = load_state(os.path.join(ORACLE, "unival_tiny_random.pt"))
    state["cfg"]["task"]["_name"] = task_name
    path = tmp_path / f"{task_name}.pt"
    torch.save(state, path)
    return str(path)


def batch_of(task, count):
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    return dataset.collater([dataset[i] for i in range(count)])


def test_a_unival_video_checkpoint_reads_frames_as_univals_video_dataset(tmp_path, demo_dir, bpe_dir):
    rows = write_tsv(tmp_path / "video.tsv", read_lines(demo_dir / "video_caption_valid.tsv", 2))
    [model], task = load_ofa_model_and_task(unival_checkpoint(tmp_path, "video_caption"), bpe_dir, {"data": rows, "max_tgt_length": 100})
    assert isinstance(model, UnIVALModel) and task.cfg.unival_inputs
    assert (task.cfg.num_frames, task.cfg.video_frame_size) == (4, 112)  # the checkpoint's num_frames, patch_frame_size
    batch = batch_of(task, 2)
    video = batch["net_input"]["video"]
    assert video.shape == (2, 4, 3, 112, 112)
    row = task.dataset("valid").row(0)
    native = decode_video(task.read_bytes(row, "video"), row.where("video"), 4, None).frames  # 64 x 64, not resized
    assert torch.equal(video[0, :, :, 24:88, 24:88], task.image_transforms[False].normalise(native))
    assert (video[0, :, :, :24] == -1).all()  # CenterCrop's zero padding, normalised
    assert task.prompt == " what does the video describe?"
    assert batch["net_input"]["src_tokens"][0, 1:-1].tolist() == task.vocab.encode_text(task.prompt)
    with torch.no_grad():
        logits = model(**batch["net_input"])[0]
    assert logits.shape == (*batch["target"].shape, 9697) and torch.isfinite(logits).all()


def test_a_unival_audio_checkpoint_reads_48khz_waveforms_with_univals_prompt(tmp_path, demo_dir, bpe_dir):
    rows = write_tsv(tmp_path / "audio.tsv", read_lines(demo_dir / "audio_caption_valid.tsv", 2))
    [model], task = load_ofa_model_and_task(unival_checkpoint(tmp_path, "audio_caption"), bpe_dir, {"data": rows, "max_tgt_length": 100})
    assert (task.cfg.waveform_sample_rate, task.cfg.max_audio_seconds) == (48000, 10.0)
    batch = batch_of(task, 2)
    audio = batch["net_input"]["audio"]
    assert audio.shape == (2, 480000)
    assert torch.equal(audio * 32767, (audio * 32767).round())  # int16-quantised
    clip = int(torch.nonzero(audio[0]).max()) + 1
    assert task.prompt == " what does the video describe?"
    assert batch["net_input"]["src_tokens"][0, 1:-1].tolist() == task.vocab.encode_text(task.prompt)
    with torch.no_grad():
        encoded = model.encoder(**{k: v for k, v in batch["net_input"].items() if k != "prev_output_tokens"})
    assert encoded["encoder_out"][0].size(0) == 600 + batch["net_input"]["src_tokens"].size(1)
    assert clip > 48000  # several seconds of repeated clip, not a 16 kHz one
