"""UnIVAL checkpoints on UniGround's data: media read as UnIVAL's datasets read them (PyAV decoding)."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from torchvision.transforms import CenterCrop

import evaluate
from conftest import ROOT, SHARED_DATA
from data.audio import unival_waveform
from data.transforms import ImageTransform
from data.video import decode_video
from helpers import read_lines, write_tsv
from models.image_encoder import model_pixels
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
    native = decode_video(task.media.file_bytes(row, "video"), row.where("video"), 4, None).frames  # 64 x 64, not resized
    assert video.dtype == torch.uint8 and torch.equal(video[0, :, :, 24:88, 24:88], native)  # the model normalises
    assert (model_pixels(video)[0, :, :, :24] == -1).all()  # CenterCrop's zero padding, normalised
    assert task.prompt == " what does the video describe?"
    assert batch["net_input"]["src_tokens"][0, 1:-1].tolist() == task.vocab.encode_text(task.prompt)
    with torch.no_grad():
        logits = model(**batch["net_input"])[0]
    assert logits.shape == (*batch["target"].shape, 9697) and torch.isfinite(logits).all()
    assert_trains(model, batch)


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
    assert_trains(model, batch)


def assert_trains(model, batch):
    """One training-mode step (dropout, SpecAugment, BatchNorm statistics) gives finite gradients to the backbones."""
    model.train()
    try:
        logits = model(**batch["net_input"])[0]
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["target"].flatten(), ignore_index=1).backward()
    finally:
        model.eval()
    gradients = [p.grad for name, p in model.named_parameters() if ".embed_" in name and p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)


@pytest.mark.slow
def test_evaluate_interpolates_two_unival_fine_tunes(tmp_path, demo_dir, bpe_dir):
    """The weight_average task on two UnIVAL checkpoints (--bpe-dir): lambda 0 and 1 give each model's captions."""
    first = unival_checkpoint(tmp_path, "video_caption")
    state = load_state(first)
    state["model"]["encoder.video_proj.bias"] = state["model"]["encoder.video_proj.bias"] + 1.0
    second = str(tmp_path / "second.pt")
    torch.save(state, second)
    rows = write_tsv(tmp_path / "video.tsv", read_lines(demo_dir / "video_caption_valid.tsv", 2))
    common = ["--bpe-dir", bpe_dir, "--data", rows, "--batch-size", "2", "--num-workers", "0", "--beam", "1",
              "--max-len-b", "4", "--cpu", "--task-option", "max_tgt_length=100"]
    curve = evaluate.main(["--path", first, second, "--lambdas", "0", "1", "--results-dir", str(tmp_path / "curve")]
                          + common)
    alone = evaluate.main(["--path", second, "--results-dir", str(tmp_path / "alone")] + common)
    assert [row["lambda"] for row in curve] == [0.0, 1.0] and (tmp_path / "curve" / "curve.csv").exists()
    assert (tmp_path / "curve" / "lambda_1" / "predictions.jsonl").read_text() == \
        (tmp_path / "alone" / "predictions.jsonl").read_text()
    shared = [name for name, value in alone.items() if isinstance(value, float) and name in curve[1]]
    assert shared and all(curve[1][name] == alone[name] for name in shared)


@pytest.mark.slow
def test_train_fine_tunes_from_a_unival_checkpoint_on_video(bpe_dir, demo_dir, tmp_path):
    """--finetune-from-model with UnIVAL's flags and --unival-inputs: the weights load and the loss falls."""
    data = write_tsv(tmp_path / "video.tsv", read_lines(demo_dir / "video_caption_train.tsv", 4))
    checkpoint = os.path.join(ORACLE, "unival_tiny_random.pt")
    result = subprocess.run(
        [sys.executable, "train.py", f"{data},{data}", "--task", "video_caption", "--bpe-dir", bpe_dir,
         "--unival-inputs", "--num-frames", "4", "--video-frame-size", "112", "--max-tgt-length", "100",
         "--arch", "unival_base", "--encoder-embed-dim", "256", "--encoder-ffn-embed-dim", "1024",
         "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-attention-heads", "4",
         "--decoder-attention-heads", "4", "--resnet-type", "resnet50", "--video-encoder-name", "resnext50",
         "--audio-encoder-name", "pann_cnn6", "--hop-size", "200", "--scale-attn", "--scale-fc", "--scale-heads",
         "--disable-entangle", "--add-type-embedding", "--finetune-from-model", checkpoint,
         "--criterion", "constrained_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-4",
         "--batch-size", "2", "--max-update", "4", "--no-save", "--disable-validation", "--num-workers", "0",
         "--seed", "1", "--log-format", "simple", "--log-interval", "1", "--save-dir", str(tmp_path / "ckpt"),
         "--cpu"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"loaded checkpoint {checkpoint}" in output.lower()
    losses = [float(m) for m in re.findall(r"train_inner .* loss=([0-9.]+)", output)]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0], losses
