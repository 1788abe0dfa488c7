"""The unified model: mixed batches, incremental decoding, constrained generation."""
from argparse import Namespace

import numpy as np
import pytest
import torch

from omegaconf import OmegaConf

from helpers import build_model, build_task, model_config
from models.unify import UnifyModel


@pytest.fixture(scope="module")
def refcoco(demo_dir, vocab_dir):
    task = build_task("refcoco", f"{demo_dir}/refcoco_valid.tsv", vocab_dir)
    task.load_dataset("valid")
    torch.manual_seed(0)
    return task, build_model(task).eval()


def batch_of(task, indices):
    dataset = task.dataset("valid")
    return dataset.collater([dataset[i] for i in indices])


def test_mixed_batch_with_and_without_images_runs_forward_and_backward(refcoco):
    task, model = refcoco
    model.train()
    batch = batch_of(task, [0, 1, 2])
    net_input = dict(batch["net_input"])
    net_input["image"] = net_input["image"][[0, 2]]  # the second sample is text only
    net_input["image_present"] = torch.tensor([True, False, True])
    logits, _ = model(**net_input)
    assert logits.shape == (3, batch["target"].size(1), len(task.vocab.dictionary))
    logits.logsumexp(-1).sum().backward()
    backbone_grad = next(model.encoder.media_encoders["image"].backbone.parameters()).grad
    assert backbone_grad is not None and backbone_grad.abs().sum() > 0
    model.eval()


def test_text_only_sample_ignores_image_padding(refcoco):
    """A sample without an image must give the same output whatever its batch neighbours hold."""
    task, model = refcoco
    batch = batch_of(task, [0, 1])
    net_input = dict(batch["net_input"])
    alone = {k: v[1:] for k, v in net_input.items() if k not in ("image", "image_present")}
    with torch.no_grad():
        expected, _ = model(**alone)
        net_input["image"] = net_input["image"][:1]
        net_input["image_present"] = torch.tensor([True, False])
        mixed, _ = model(**net_input)
    torch.testing.assert_close(mixed[1:], expected, atol=1e-5, rtol=1e-4)


def test_incremental_decoding_matches_full_forward(refcoco):
    task, model = refcoco
    batch = batch_of(task, [0, 1, 2, 3])
    net_input = batch["net_input"]
    with torch.no_grad():
        full, _ = model(**net_input)
        encoder_out = model.encoder(net_input["src_tokens"], image=net_input["image"],
                                    image_present=net_input["image_present"])
        state, steps = {}, []
        prev = net_input["prev_output_tokens"]
        for t in range(prev.size(1)):
            logits, _ = model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)
            steps.append(logits[:, -1])
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("beam", [1, 5])
def test_refcoco_generation_yields_exactly_four_bins(refcoco, beam):
    task, model = refcoco
    batch = batch_of(task, list(range(8)))
    generator = task.build_generator([model], Namespace(beam=beam, max_len_b=20))
    for hyps in task.inference_step(generator, [model], batch):
        tokens = hyps[0]["tokens"].tolist()
        assert tokens[-1] == task.vocab.dictionary.eos()
        assert len(tokens) == 5
        assert all(task.vocab.to_bin(t) is not None for t in tokens[:4])


def test_unconstrained_generation_is_free(refcoco):
    """Without the constraint an untrained model does not produce four bins by chance."""
    task, model = refcoco
    batch = batch_of(task, list(range(8)))
    task.cfg.unconstrained = True
    try:
        generator = task.build_generator([model], Namespace(beam=1, max_len_b=6))
    finally:
        task.cfg.unconstrained = False
    outputs = [h[0]["tokens"].tolist() for h in task.inference_step(generator, [model], batch)]
    assert any(not all(task.vocab.to_bin(t) is not None for t in out[:4]) or len(out) != 5 for out in outputs)


def test_beam_search_over_a_batch_matches_each_sample_alone(demo_dir, vocab_dir):
    """Cross-attention caches move only when finished samples leave the batch; the results must be
    those of each sample decoded alone, with samples finishing at different steps."""
    task = build_task("caption", f"{demo_dir}/caption_valid.tsv", vocab_dir)
    task.load_dataset("valid")
    batch = batch_of(task, list(range(6)))
    # An untrained model seldom ends: raise the EOS logit until the samples end at different steps.
    for scale in np.linspace(1.0, 3.0, 9):
        torch.manual_seed(0)
        model = build_model(task).eval()
        with torch.no_grad():
            model.decoder.embed_tokens.weight[task.vocab.dictionary.eos()] = scale * model.decoder.final_norm(
                torch.randn(8, model.decoder.embed_tokens.embedding_dim)).mean(0)
        generator = task.build_generator([model], Namespace(beam=4, max_len_b=12))
        together = task.inference_step(generator, [model], batch)
        if len({len(hyps[0]["tokens"]) for hyps in together}) > 1:
            break
    else:
        pytest.fail("no EOS scale gave outputs of different lengths")
    for i, hyps in enumerate(together):
        alone = task.inference_step(generator, [model], batch_of(task, [i]))[0]
        assert [h["tokens"].tolist() for h in hyps] == [h["tokens"].tolist() for h in alone]
        torch.testing.assert_close(torch.stack([h["score"] for h in hyps]), torch.stack([h["score"] for h in alone]))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_backbone_weights_come_from_a_local_file(tmp_path, suffix):
    from safetensors.torch import save_file

    from models.image_encoder import build_backbone

    torch.manual_seed(1)
    source = build_backbone("test_resnet", 2)
    path = str(tmp_path / f"backbone{suffix}")
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    torch.manual_seed(2)
    loaded = build_backbone("test_resnet", 2, weights_path=path)
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[name]), name


def test_backbone_weights_that_match_nothing_are_refused(tmp_path):
    from models.image_encoder import build_backbone

    path = str(tmp_path / "unrelated.pth")
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="no tensor matches"):
        build_backbone("test_resnet", 2, weights_path=path)


def test_image_backbone_runs_channels_last_with_the_outputs_of_the_plain_layout():
    import copy

    from models.image_encoder import ImageEncoder, model_pixels

    torch.manual_seed(0)
    encoder = ImageEncoder(32, "test_resnet", 2, 64).eval()
    convolution = next(p for p in encoder.backbone.parameters() if p.dim() == 4)
    assert convolution.is_contiguous(memory_format=torch.channels_last)
    plain = copy.deepcopy(encoder.backbone).to(memory_format=torch.contiguous_format)
    pixels = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        tokens, _, positions = encoder(pixels)
        features = plain(model_pixels(pixels))[-1]
        expected = encoder.project(features.flatten(2).transpose(1, 2)) + positions[0]
    torch.testing.assert_close(tokens, expected, atol=1e-6, rtol=1e-5)


def media_batch(task, media_samples):
    """A batch of the first len(media_samples) valid rows' text, each sample given the media entries
    of ``media_samples`` instead of its own image."""
    from tasks.base import collate_media
    batch = batch_of(task, range(len(media_samples)))
    net_input = {k: v for k, v in batch["net_input"].items() if not k.startswith("image")}
    net_input.update(collate_media(media_samples))
    return batch, net_input


def random_media(task, kind, frames=3, audio_frames=50):
    size, mels = task.cfg.patch_image_size, task.cfg.num_mel_bins
    if kind == "image":
        return {"image": torch.randn(3, size, size)}
    if kind == "video":
        return {"video": torch.randn(frames, 3, size, size), "video_times": torch.linspace(0.1, 0.9, frames)}
    if kind == "audio":
        return {"audio": torch.randn(audio_frames, mels)}
    return {}


def test_batch_mixing_image_video_audio_and_text_only_runs_forward_and_backward(refcoco):
    task, model = refcoco
    model.train()
    torch.manual_seed(1)
    samples = [random_media(task, kind) for kind in ("image", "video", "audio", "text")]
    samples[2]["audio"] = samples[2]["audio"][:37]  # audio lengths differ: padded and masked
    samples.append(random_media(task, "audio", audio_frames=61))
    batch, net_input = media_batch(task, samples)
    assert net_input["audio_lengths"].tolist() == [37, 61]
    logits, _ = model(**net_input)
    assert logits.shape == (5, batch["target"].size(1), len(task.vocab.dictionary))
    logits.logsumexp(-1).sum().backward()
    encoders = model.encoder.media_encoders
    assert encoders["video"].frames is encoders["image"]  # frames share the image backbone by default
    for name in ("image", "audio"):
        grad = next(encoders[name].parameters()).grad
        assert grad is not None and grad.abs().sum() > 0, name
    model.zero_grad()
    model.eval()


@pytest.mark.parametrize("fixture", ["refcoco", "refcoco_positions"])
def test_samples_ignore_their_neighbours_media_and_audio_padding(fixture, request):
    """Each sample's output is what it is alone, whatever media its neighbours bring and however
    far its audio is padded (with positions in every layer too: video and audio ones differ by sample)."""
    task, model = request.getfixturevalue(fixture)
    torch.manual_seed(2)
    short = random_media(task, "audio", audio_frames=40)
    samples = [short, random_media(task, "video"), random_media(task, "audio", audio_frames=90), {}]
    with torch.no_grad():
        _, net_input = media_batch(task, samples)
        mixed, _ = model(**net_input)
        for index, sample in enumerate(samples):
            _, alone_input = media_batch(task, [sample])
            for key in ("src_tokens", "src_lengths", "prev_output_tokens"):
                alone_input[key] = net_input[key][index:index + 1]
            alone, _ = model(**alone_input)
            torch.testing.assert_close(mixed[index:index + 1], alone, atol=1e-5, rtol=1e-4)


def test_video_frames_get_a_backbone_of_their_own_on_request(refcoco):
    task, _ = refcoco
    encoders = build_model(task, separate_video_backbone=True).encoder.media_encoders
    assert encoders["video"].frames is not encoders["image"]
    image_params = {id(p) for p in encoders["image"].parameters()}
    assert not image_params & {id(p) for p in encoders["video"].parameters()}


@pytest.mark.parametrize("norm", ["batch", "group", "frozen"])
def test_training_on_video_frames_changes_how_images_are_encoded_only_under_batch_norm(refcoco, norm):
    """Frames of another size and content pass through the shared backbone in training; under BatchNorm
    they move its running statistics and so the images' evaluation encoding, under GroupNorm or frozen
    BatchNorm nothing does."""
    task, _ = refcoco
    torch.manual_seed(0)
    encoder = build_model(task, image_backbone_norm=norm).encoder.media_encoders["image"].eval()
    images = batch_of(task, [0, 1])["net_input"]["image"]
    with torch.no_grad():
        before, _, _ = encoder(images)
        encoder.train()
        encoder.backbone(torch.rand(16, 3, 32, 32) * 4 - 2)
        encoder.eval()
        after, _, _ = encoder(images)
    assert torch.allclose(before, after) == (norm != "batch")
    has_batch_norm = any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
    assert has_batch_norm == (norm == "batch")


def test_a_model_trained_with_batch_norm_fine_tunes_with_it_frozen(refcoco):
    """Its weights load into a frozen-norm model (``num_batches_tracked`` dropped), which encodes as it did in
    evaluation, in training mode too; the norms' affine no longer trains, the convolutions still do."""
    from models.image_encoder import FrozenBatchNorm2d

    task, _ = refcoco
    torch.manual_seed(0)
    trained = build_model(task, image_backbone_norm="batch").encoder.media_encoders["image"]
    trained.backbone(torch.rand(8, 3, 32, 32) * 4 - 2)  # running statistics away from their start
    trained.eval()
    frozen = build_model(task, image_backbone_norm="frozen").encoder.media_encoders["image"]
    frozen.load_state_dict(trained.state_dict())
    norms = [m for m in frozen.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert norms and not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    assert not any("bn" in name or "norm" in name for name, _ in frozen.backbone.named_parameters())
    images = batch_of(task, [0, 1])["net_input"]["image"]
    with torch.no_grad():
        expected, _, _ = trained(images)
    tokens, _, _ = frozen.train()(images)
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)
    tokens.sum().backward()
    convolution = next(p for p in frozen.backbone.parameters() if p.dim() == 4)
    assert convolution.grad is not None and convolution.grad.abs().sum() > 0


def test_frozen_batch_norm_keeps_bf16_activations_in_bf16():
    from models.image_encoder import FrozenBatchNorm2d

    norm = FrozenBatchNorm2d(4)
    for buffer in (norm.running_mean, norm.running_var, norm.weight, norm.bias):
        buffer.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 3, 3)
    shape = (1, 4, 1, 1)
    expected = ((x - norm.running_mean.view(shape)) / (norm.running_var.view(shape) + norm.eps).sqrt()
                * norm.weight.view(shape) + norm.bias.view(shape))
    assert norm(x.bfloat16()).dtype == torch.bfloat16
    torch.testing.assert_close(norm(x), expected)


def test_an_unknown_backbone_norm_is_refused(refcoco):
    task, _ = refcoco
    with pytest.raises(ValueError, match="unknown backbone norm 'layer' .*batch, group"):
        build_model(task, image_backbone_norm="layer")


def test_a_checkpoint_config_without_newer_options_builds_with_their_defaults(refcoco):
    task, model = refcoco
    newer = ("checkpoint_activations", "bf16_autocast", "separate_video_backbone", "layer_positions",
             "image_backbone_norm", "position_values", "position_heads", "region_head")
    old = OmegaConf.create({k: v for k, v in OmegaConf.to_container(model_config(task)).items() if k not in newer})
    rebuilt = UnifyModel.build_model(old, task)
    assert [old[k] for k in newer] == [False, False, False, False, "batch", False, 0, False]
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def copied_per_hypothesis(encoder_out, new_order):
    """The plain way to reorder an encoder output: every entry copied to each hypothesis."""
    return {key: value if key == "positions" and value.size(0) == 1 else value.index_select(0, new_order)
            for key, value in encoder_out.items() if key != "memory_index"}


@pytest.mark.parametrize("name", ["caption", "refcoco"])
def test_beam_search_sharing_each_samples_memory_equals_copying_it_per_beam(name, demo_dir, vocab_dir,
                                                                             monkeypatch):
    task = build_task(name, f"{demo_dir}/{name}_valid.tsv", vocab_dir)
    task.load_dataset("valid")
    batch = batch_of(task, list(range(5)))
    torch.manual_seed(0)
    model = build_model(task, decoder_layers=2).eval()
    generator = task.build_generator([model], Namespace(beam=3, max_len_b=10))
    encoder_input = {k: v for k, v in batch["net_input"].items() if k != "prev_output_tokens"}
    with torch.no_grad():
        beams = model.encoder.reorder_encoder_out(model.encoder(**encoder_input), torch.arange(5).repeat_interleave(3))
    assert beams["encoder_out"].size(0) == 5  # one row per sample, not per beam
    assert beams["memory_index"].tolist() == torch.arange(5).repeat_interleave(3).tolist()
    shared = task.inference_step(generator, [model], batch)
    monkeypatch.setattr(model.encoder, "reorder_encoder_out", copied_per_hypothesis)
    copied = task.inference_step(generator, [model], batch)
    for ours, plain in zip(shared, copied):
        assert [h["tokens"].tolist() for h in ours] == [h["tokens"].tolist() for h in plain]
        torch.testing.assert_close(torch.stack([h["score"] for h in ours]), torch.stack([h["score"] for h in plain]))


@pytest.mark.parametrize("which", [[0, 0, 2, 1, 2, 2], [2, 2, 0, 0], [1]])
def test_decoder_rows_may_use_any_memory_rows(refcoco, which):
    """Candidate scoring pairs each sample with several candidates, not always in equal groups: the
    memory rows each decoder row uses give what a copy per row gives."""
    task, model = refcoco
    net_input = batch_of(task, [0, 1, 2])["net_input"]
    which = torch.tensor(which)
    prev = net_input["prev_output_tokens"][which]
    with torch.no_grad():
        encoder_out = model.encoder(**{k: v for k, v in net_input.items() if k != "prev_output_tokens"})
        shared, _ = model.decoder(prev, encoder_out=model.encoder.reorder_encoder_out(encoder_out, which))
        plain, _ = model.decoder(prev, encoder_out=copied_per_hypothesis(encoder_out, which))
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def refcoco_positions(refcoco):
    """The refcoco fixture's model with positions in every layer, built from the same weights."""
    task, model = refcoco
    positioned = build_model(task, layer_positions=True).eval()
    positioned.load_state_dict(model.state_dict())
    return task, positioned


def test_encoder_layer_positions_go_into_queries_and_keys_not_values():
    from models.transformer import EncoderLayer
    torch.manual_seed(0)
    layer = EncoderLayer(8, 2, 16).eval()
    x, positions = torch.randn(2, 5, 8), torch.randn(1, 5, 8).expand(2, -1, -1)
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    h = layer.attn_norm(x)
    k, _ = layer.attn.keys_values(h + positions)
    _, v = layer.attn.keys_values(h)
    expected = x + layer.attn(h + positions, k, v, mask=mask)
    expected = expected + layer.ffn(layer.ffn_norm(expected))
    with torch.no_grad():
        torch.testing.assert_close(layer(x, mask, positions), expected)
        torch.testing.assert_close(layer(x, mask, torch.zeros_like(x)), layer(x, mask))
        assert not torch.allclose(layer(x, mask, positions), layer(x, mask))


def test_position_values_put_the_memory_positions_into_the_cross_attention_values_too():
    from models.transformer import DecoderLayer
    torch.manual_seed(0)
    plain, valued = DecoderLayer(8, 2, 16).eval(), DecoderLayer(8, 2, 16, position_values=True).eval()
    valued.load_state_dict(plain.state_dict())
    x, memory, positions = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(1, 5, 8)
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    attention = valued.cross_attn
    k, v = attention.keys_values(memory, positions, position_values=True)
    expected_k, expected_v = attention.keys_values(memory + positions)
    with torch.no_grad():
        torch.testing.assert_close((k, v), (expected_k, expected_v))
        torch.testing.assert_close(attention.keys_values(memory, positions)[1], attention.keys_values(memory)[1])
        assert not torch.allclose(valued(x, memory, mask, memory_positions=positions),
                                  plain(x, memory, mask, memory_positions=positions))
        torch.testing.assert_close(valued(x, memory, mask), plain(x, memory, mask))


@pytest.mark.parametrize("position_values", [False, True])
def test_position_heads_alone_see_the_positions(position_values):
    """With one position head of two, the first head's queries, keys (and values) get the positions and the
    second head's are those without them."""
    from models.transformer import Attention
    torch.manual_seed(0)
    attention = Attention(8, 2, position_heads=1)
    x, positions = torch.randn(2, 5, 8), torch.randn(1, 5, 8)
    with torch.no_grad():
        k, v = attention.keys_values(x, positions, position_values)
        moved_k, moved_v = attention.keys_values(x + positions)
        plain_k, plain_v = attention.keys_values(x)
        torch.testing.assert_close(k, torch.cat([moved_k[:, :1], plain_k[:, 1:]], dim=1))
        expected_v = torch.cat([moved_v[:, :1], plain_v[:, 1:]], dim=1) if position_values else plain_v
        torch.testing.assert_close(v, expected_v)
        q = attention.split_heads(attention.add_positions(attention.q(x), positions, attention.q.weight))
        moved_q, plain_q = (attention.split_heads(attention.q(y)) for y in (x + positions, x))
        torch.testing.assert_close(q, torch.cat([moved_q[:, :1], plain_q[:, 1:]], dim=1))


def test_more_position_heads_than_heads_are_refused():
    from models.transformer import Attention
    with pytest.raises(ValueError, match="3 position heads, but the attention has 2 heads"):
        Attention(8, 2, position_heads=3)


def test_position_values_without_layer_positions_are_refused(refcoco):
    task, _ = refcoco
    with pytest.raises(ValueError, match="--position-values needs --layer-positions"):
        build_model(task, position_values=True)


def test_layer_positions_off_adds_nothing_and_on_hands_each_token_its_position(refcoco, refcoco_positions):
    task, model = refcoco
    _, positioned = refcoco_positions
    net_input = batch_of(task, [0, 1])["net_input"]
    encoder_input = {k: v for k, v in net_input.items() if k != "prev_output_tokens"}
    encoder_input["image_present"] = torch.tensor([True, False])
    encoder_input["image"] = encoder_input["image"][:1]
    assert model.state_dict().keys() == positioned.state_dict().keys()  # no new weights
    with torch.no_grad():
        plain, ours = model.encoder(**encoder_input), positioned.encoder(**encoder_input)
    assert "positions" not in plain
    image = positioned.encoder.media_encoders["image"]
    grid = task.cfg.patch_image_size // image.backbone.feature_info.reduction()[-1]
    cells = (image.row.weight[:grid, None] + image.col.weight[None, :grid]).flatten(0, 1)
    text = positioned.encoder.embed_positions.weight[:net_input["src_tokens"].size(1)]
    # the same for every sample (the text-only one's image slots are masked), so computed once
    assert ours["positions"].shape == (1, *ours["encoder_out"].shape[1:])
    torch.testing.assert_close(ours["positions"][0], torch.cat([cells, text]))
    assert not torch.allclose(plain["encoder_out"], ours["encoder_out"])


@pytest.mark.parametrize("position_values,position_heads", [(False, 0), (True, 0), (True, 1)])
def test_layer_positions_decode_step_by_step_as_in_one_pass(refcoco, position_values, position_heads):
    task, plain = refcoco
    model = build_model(task, layer_positions=True, position_values=position_values,
                        position_heads=position_heads).eval()
    model.load_state_dict(plain.state_dict())
    net_input = batch_of(task, [0, 1, 2])["net_input"]
    prev = net_input["prev_output_tokens"]
    which = torch.tensor([0, 0, 2, 1])
    with torch.no_grad():
        full, _ = model(**net_input)
        encoder_out = model.encoder(**{k: v for k, v in net_input.items() if k != "prev_output_tokens"})
        state, steps = {}, []
        for t in range(prev.size(1)):
            logits, _ = model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)
            steps.append(logits[:, -1])
        shared, _ = model.decoder(prev[which], encoder_out=model.encoder.reorder_encoder_out(encoder_out, which))
        plain, _ = model.decoder(prev[which], encoder_out=copied_per_hypothesis(encoder_out, which))
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
