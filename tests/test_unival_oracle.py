"""UnIVAL checkpoints: the oracle fixture's outputs (computed by UnIVAL's own code) reproduced for each medium,
loading errors, batches that mix media, and the encoder variants the released checkpoints use."""
import argparse
import copy
import os

import pytest
import torch
import torchaudio

from conftest import ROOT, SHARED_DATA
from models.ofa import INDEX_BUFFERS, OFACheckpointError, UnsupportedOFAOption
from models.pann import AUDIO_CFG, PANN
from models.unival import MixedMediaError, UnIVALModel, load_unival_model
from utils.checkpoint import load_state

ORACLE = os.path.join(SHARED_DATA, "unival-oracle")
CHECKPOINT = os.path.join(ORACLE, "unival_tiny_random.pt")
SETS = ("image", "video", "audio", "video16")
pytestmark = pytest.mark.skipif(not os.path.isdir(ORACLE), reason=f"the UnIVAL oracle fixture {ORACLE} is absent")


@pytest.fixture(scope="module")
def oracle():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
        import oracle
        yield oracle


@pytest.fixture(scope="module")
def inputs():
    return torch.load(os.path.join(ORACLE, "inputs.pt"), weights_only=True)


@pytest.fixture(scope="module")
def expected():
    return torch.load(os.path.join(ORACLE, "expected.pt"), weights_only=True)


@pytest.fixture(scope="module")
def model():
    return load_unival_model(CHECKPOINT)


@pytest.fixture(scope="module")
def actual(oracle, model, inputs, expected):
    return {name: oracle.compute_unival(model, inputs[name], expected[name]["greedy_tokens"].size(1) - 1)
            for name in SETS}


@pytest.mark.parametrize("medium", SETS)
def test_outputs_match_univals_within_the_fixtures_tolerances(oracle, actual, expected, medium):
    for name, tolerance in oracle.UNIVAL_TOLERANCES.items():
        if name in expected[medium]:
            assert actual[medium][name].shape == expected[medium][name].shape, name
            assert (actual[medium][name] - expected[medium][name]).abs().max().item() <= tolerance, name


@pytest.mark.parametrize("medium", SETS)
def test_tokens_and_padding_masks_are_identical(actual, expected, medium):
    for name in ("greedy_tokens", "greedy_tokens_incremental", "encoder_padding_mask"):
        assert torch.equal(actual[medium][name], expected[medium][name]), name


@pytest.mark.parametrize("medium", SETS)
def test_incremental_decoding_equals_the_full_forward(actual, medium):
    assert torch.equal(actual[medium]["greedy_tokens_incremental"], actual[medium]["greedy_tokens"])
    difference = actual[medium]["greedy_step_logits_incremental"] - actual[medium]["greedy_step_logits"]
    assert difference.abs().max() <= 1e-4


def test_positions_of_video_ignore_time_and_audio_take_a_square_grid(actual, expected):
    """Tokens at the same cell of different frames share their position; audio's 600 tokens a 25-wide grid."""
    video = actual["video16"]["encoder_position_embeddings"][0]
    assert torch.equal(video[:49], video[49:98])
    audio = actual["audio"]["encoder_position_embeddings"][0]
    assert torch.equal(audio[:600], expected["audio"]["encoder_position_embeddings"][0, :600])
    assert not torch.equal(audio[25], audio[42])  # the second row starts at token 25, not at the mel layout's


def save_variant(tmp_path, change):
    state = load_state(CHECKPOINT)
    change(state)
    path = tmp_path / "variant.pt"
    torch.save(state, path)
    return str(path)


def test_checkpoint_with_the_index_buffers_loads_alike(tmp_path, model, inputs, expected):
    buffers = dict(model.named_buffers())
    path = save_variant(tmp_path, lambda state: state["model"].update({k: buffers[k].clone() for k in INDEX_BUFFERS}))
    sample = inputs["video16"]
    with torch.no_grad():
        logits = load_unival_model(path)(sample["src_tokens"], sample["src_lengths"], sample["prev_output_tokens"],
                                         patch_images=sample["patch_images"], patch_masks=sample["patch_masks"],
                                         patch_types=sample["patch_types"], patch_videos=sample["patch_videos"])[0]
    assert (logits - expected["video16"]["logits"]).abs().max() <= 2e-3


def test_checkpoint_with_a_frozen_resnet_computes_alike(oracle, tmp_path, inputs, expected):
    from models.image_encoder import FrozenBatchNorm2d

    frozen = load_unival_model(save_variant(tmp_path, lambda state: setattr(state["cfg"]["model"], "freeze_resnet",
                                                                            True)))
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.encoder.embed_images.modules())
    actual = oracle.compute_unival(frozen, inputs["image"], expected["image"]["greedy_tokens"].size(1) - 1)
    assert (actual["logits"] - expected["image"]["logits"]).abs().max() <= oracle.UNIVAL_TOLERANCES["logits"]


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    def change(state):
        del state["model"]["encoder.embed_audios.logmel_extractor.melW"]
        state["model"]["encoder.embed_videos.layer4.0.conv1.weight"] = torch.zeros(3)
    with pytest.raises(OFACheckpointError, match=r"missing: encoder\.embed_audios\.logmel_extractor\.melW; "
                                                 r"unexpected: encoder\.embed_videos\.layer4\.0\.conv1\.weight"):
        load_unival_model(save_variant(tmp_path, change))


@pytest.mark.parametrize("option, value, message", [
    ("qk_norm", True, "UnIVAL option qk_norm=True is not supported"),
    ("enable_fusion", True, "UnIVAL option enable_fusion=True is not supported"),
    ("video_encoder_name", "timesformer", "video_encoder_name='timesformer' is not supported"),
    ("audio_encoder_name", "htsat", "audio_encoder_name='htsat' is not supported"),
    ("image_encoder_name", "vit_base_patch16_224", "image_encoder_name='vit_base_patch16_224' is not supported"),
])
def test_an_option_computed_otherwise_is_an_error_naming_it(tmp_path, option, value, message):
    with pytest.raises(UnsupportedOFAOption, match=message):
        load_unival_model(save_variant(tmp_path, lambda state: setattr(state["cfg"]["model"], option, value)))


def test_an_ofa_checkpoint_is_not_a_unival_one():
    with pytest.raises(OFACheckpointError, match="not an UnIVAL checkpoint .*'ofa_tiny'"):
        load_unival_model(os.path.join(SHARED_DATA, "ofa-oracle", "ofa_tiny_random.pt"))


def test_a_batch_that_mixes_media_is_refused(model, inputs):
    image, video = inputs["image"], inputs["video"]
    mixed_types = torch.tensor([0, 1])
    with pytest.raises(MixedMediaError, match="mixes image and video samples"):
        model.encoder(image["src_tokens"][:2], image["src_lengths"][:2], patch_images=image["patch_images"][:2],
                      patch_masks=image["patch_masks"][:2], patch_types=mixed_types, patch_videos=video["patch_videos"])
    with pytest.raises(MixedMediaError, match="mixes audio and video samples"):
        model.encoder(video["src_tokens"], video["src_lengths"], video=video["patch_videos"][:1].transpose(1, 2),
                      video_present=torch.tensor([True, False]), audio=inputs["audio"]["patch_audios"][1:],
                      audio_present=torch.tensor([False, True]))


def test_log_mel_features_instead_of_a_waveform_are_refused(model, inputs):
    audio = inputs["audio"]
    with pytest.raises(ValueError, match="reads raw waveforms .* --unival-inputs"):
        model.encoder(audio["src_tokens"], audio["src_lengths"], audio=torch.zeros(2, 1000, 64),
                      audio_present=torch.tensor([True, True]), audio_lengths=torch.tensor([1000, 1000]))


def test_uniground_batch_layout_gives_the_same_encoding(model, inputs):
    """UniGround's collate stacks frames T x C x H x W and only for the samples that have a video."""
    video = inputs["video"]
    present = torch.tensor([False, True])
    with torch.no_grad():
        unival = model.encoder(video["src_tokens"], video["src_lengths"], patch_images=video["patch_images"],
                               patch_masks=present, patch_types=video["patch_types"], patch_videos=video["patch_videos"])
        ours = model.encoder(video["src_tokens"], video["src_lengths"], video=video["patch_videos"][1:].transpose(1, 2),
                             video_present=present)
    assert torch.equal(ours["encoder_padding_mask"][0], unival["encoder_padding_mask"][0])
    assert ours["encoder_padding_mask"][0][0, :49].all()
    assert torch.allclose(ours["encoder_out"][0][:, 1], unival["encoder_out"][0][:, 1], atol=1e-5)


def test_patch_sampling_acts_in_training_only(model, inputs):
    video = inputs["video"]
    media = {key: video[key] for key in ("patch_images", "patch_masks", "patch_types", "patch_videos")}
    model.encoder.args.sample_video_patch_num = 30
    try:
        model.train()
        with torch.no_grad():
            sampled = model.encoder(video["src_tokens"], video["src_lengths"], **media)
        model.eval()
        with torch.no_grad():
            full = model.encoder(video["src_tokens"], video["src_lengths"], **media)
    finally:
        model.encoder.args.sample_video_patch_num = None
        model.eval()
    text = video["src_tokens"].size(1)
    assert sampled["encoder_out"][0].size(0) == 30 + text and full["encoder_out"][0].size(0) == 49 + text


def released_shape_args(**changes):
    """The encoders of UnIVAL's released checkpoints (timm ResNet, 4-stage ResNeXt3D, Cnn14), on a narrow model."""
    args = argparse.Namespace(arch="unival_base", encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_layers=1,
                              decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                              image_encoder_name="timm_resnet", resnet_type="resnet50",
                              video_encoder_name="all_resnext50", audio_encoder_name="pann_cnn14", hop_size=200)
    vars(args).update(changes)
    return args


def test_released_encoder_variants_give_univals_shapes():
    model = UnIVALModel.from_args(released_shape_args(), 40, 1).eval()
    state = model.state_dict()
    assert state["encoder.embed_images.fc.weight"].shape == (1000, 2048)
    assert state["encoder.embed_videos.layer4.2.conv2.weight"].shape == (1024, 32, 3, 3, 3)
    assert state["encoder.embed_audios.conv_block6.conv2.weight"].shape == (2048, 2048, 3, 3)
    assert state["encoder.embed_audios.bn0.weight"].shape == (64,) and "encoder.embed_audios.fc1.weight" not in state
    tokens = torch.tensor([[0, 5, 6, 2]])
    with torch.no_grad():
        image = model.encoder(tokens, None, patch_images=torch.zeros(1, 3, 96, 96))
        video = model.encoder(tokens, None, patch_types=torch.tensor([1]), patch_videos=torch.zeros(1, 3, 16, 64, 64))
        audio = model.encoder(tokens, None, patch_types=torch.tensor([2]), patch_audios=torch.randn(1, 32000))
    assert image["encoder_out"][0].size(0) == 3 * 3 + 4  # stride 32
    assert video["encoder_out"][0].size(0) == 1 * 2 * 2 + 4  # time 16 -> 1, 64 px -> 2
    assert audio["encoder_out"][0].size(0) == 5 * 2 + 4  # 161 frames / 32, 64 mel bins / 32


def test_a_batch_of_image_lists_is_refused():
    model = UnIVALModel.from_args(released_shape_args(video_encoder_name="", audio_encoder_name="",
                                                      image_encoder_name="resnet", resnet_type="resnet18"), 40, 1)
    with pytest.raises(ValueError, match="one image a row; rows of several images"):
        model.encoder(torch.tensor([[0, 5, 2]]), None, image=torch.zeros(2, 3, 32, 32),
                      image_present=torch.tensor([True]), image_counts=torch.tensor([2]))


def test_a_fresh_audio_front_end_is_the_analytic_log_mel():
    """Before a checkpoint's kernels are loaded, the front end computes the Hann-window STFT and Slaney mel."""
    model = UnIVALModel.from_args(released_shape_args(video_encoder_name="", audio_encoder_name="pann_cnn6",
                                                      image_encoder_name="resnet", resnet_type="resnet18"), 40, 1)
    waveform = torch.randn(2, 9600)
    ours = model.encoder.embed_audios.log_mel(waveform)[:, 0]
    mel = torchaudio.transforms.MelSpectrogram(48000, n_fft=1024, hop_length=200, f_min=50, f_max=14000, n_mels=64,
                                               norm="slaney", mel_scale="slaney", pad_mode="reflect")(waveform)
    reference = 10 * torch.log10(mel.clamp(min=1e-10)).transpose(1, 2)
    assert (ours - reference).abs().max() <= 1e-3


def test_oracle_script_finds_the_unival_fixture_and_fails_beyond_tolerance(oracle, tmp_path, expected, capsys):
    for name in ("unival_tiny_random.pt", "inputs.pt", "meta.json"):
        os.symlink(os.path.join(ORACLE, name), tmp_path / name)
    video16 = copy.copy(expected["video16"])
    torch.save({"video16": video16}, tmp_path / "expected.pt")
    assert oracle.main([str(tmp_path)]) == 0
    video16["logits"] = video16["logits"] + 3e-3
    torch.save({"video16": video16}, tmp_path / "expected.pt")
    capsys.readouterr()
    assert oracle.main([str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "BEYOND TOLERANCE" in next(line for line in lines if line.startswith("video16/logits"))
    assert all("BEYOND" not in line for line in lines if not line.startswith("video16/logits"))


@pytest.mark.parametrize("name, channels, pooled", [("Cnn6", 512, 16), ("Cnn10", 1024, 32), ("Cnn14", 2048, 32)])
def test_pann_variants_pool_as_univals(name, channels, pooled):
    """Cnn6: four 2x2-pooled blocks; Cnn10: five; Cnn14: six, the last unpooled."""
    backbone = PANN(name, **dict(AUDIO_CFG, hop_size=100)).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 100 * 255))
    assert features.shape == (1, channels, 256 // pooled, 64 // pooled)
