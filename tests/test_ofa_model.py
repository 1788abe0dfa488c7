"""OFA models of other configurations than the oracle's: options, incremental decoding, UniGround batches."""
import argparse
import os

import numpy as np
import pytest
import torch

from conftest import ROOT
from helpers import build_task, losses_over_steps
from models.ofa import OFAModel, UnsupportedOFAOption


@pytest.fixture(scope="module")
def oracle():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
        import oracle
        yield oracle


@pytest.mark.parametrize("name, value", [("encoder_prompt", True), ("resnet_type", "ViT-B/16"), ("adapter", True),
                                         ("decoder_embed_dim", 128), ("quant_noise_pq", 0.1)])
def test_unsupported_option_is_an_error_naming_it(name, value):
    with pytest.raises(UnsupportedOFAOption, match=name):
        small_model(**{name: value})


def small_model(vocab_size=60, **options):
    sizes = dict(arch="ofa_tiny", encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_layers=2,
                 encoder_attention_heads=2, decoder_layers=2, token_bucket_size=8, image_bucket_size=6,
                 scale_attn=True, scale_fc=True, scale_heads=True, scale_resids=True, resnet_type="resnet18")
    torch.manual_seed(0)
    model = OFAModel.from_args(argparse.Namespace(**{**sizes, **options}), vocab_size, 1).eval()
    with torch.no_grad():  # make the small relative tables and the unit gains count
        for name, parameter in model.named_parameters():
            if "rel_pos_table" in name or "c_attn" in name or "w_resid" in name:
                parameter.normal_()
    return model


def test_a_frozen_resnet_trains_its_convolutions_and_nothing_of_its_norms():
    model = small_model(freeze_resnet=True, resnet_drop_path_rate=0.0)
    resnet = model.encoder.embed_images
    norms = {key: value.clone() for key, value in resnet.state_dict().items() if "bn" in key}
    assert norms
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        evaluated = resnet(pixels)
    trained = resnet.train()(pixels)
    torch.testing.assert_close(trained, evaluated)  # no batch statistics
    trained.square().mean().backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    state = resnet.state_dict()
    for key, value in norms.items():
        assert torch.equal(state[key], value), key
    assert not torch.equal(resnet.conv1.weight, small_model().encoder.embed_images.conv1.weight)
    assert not any("bn" in name for name, _ in resnet.named_parameters())


@pytest.mark.parametrize("options", [{}, {"disable_entangle": False, "encoder_normalize_before": False,
                                          "decoder_normalize_before": False, "no_scale_embedding": False,
                                          "share_all_embeddings": False, "share_decoder_input_output_embed": False}])
def test_other_configurations_decode_incrementally_as_in_full(oracle, options):
    """Another size, small buckets (text long enough for the log buckets), NormFormer gains; post-LN and
    separate embeddings."""
    model = small_model(**options)
    shared = model.decoder.output_projection.weight is model.encoder.embed_tokens.weight
    assert shared == options.get("share_all_embeddings", True)
    torch.manual_seed(1)
    src = torch.randint(4, 60, (2, 20))
    src[1, 15:] = 1
    with torch.no_grad():
        encoder_out = model.encoder(src, None, patch_images=torch.rand(2, 3, 64, 64) * 2 - 1,
                                    patch_masks=torch.tensor([True, False]))
        assert encoder_out["encoder_out"][0].shape == (16 + 20, 2, 32)
        tokens, full = oracle.greedy(model, encoder_out, 2, 7, oracle.ofa_next_tokens((50, 59)), incremental=False)
        tokens_incremental, incremental = oracle.greedy(model, encoder_out, 2, 7, oracle.ofa_next_tokens((50, 59)), incremental=True)
    assert torch.equal(tokens, tokens_incremental)
    assert (full - incremental).abs().max() <= 1e-5


def test_interpolated_image_positions_beyond_the_trained_grid():
    model = small_model(interpolate_position=True, orig_patch_image_size=32)
    ids, positions = model.encoder.image_positions(4, 4, "cpu")
    trained_ids, trained = model.encoder.image_positions(2, 2, "cpu")
    assert positions.shape == (1, 16, 32) and torch.equal(trained[0], model.encoder.embed_image_positions(trained_ids))
    corner = model.encoder.embed_image_positions.weight[1]
    assert torch.allclose(positions[0, 0], corner)  # bilinear, corners not aligned: the corner cell keeps its value


def test_video_or_audio_input_is_refused():
    model = small_model()
    with pytest.raises(ValueError, match="read images and text only: video"):
        model.encoder(torch.tensor([[4, 5, 2]]), None, video=torch.zeros(1, 2, 3, 8, 8))


def test_a_batch_of_image_lists_is_refused():
    """Rows of several images (collated with ``image_counts``) would be read as one image a row."""
    model = small_model()
    with pytest.raises(ValueError, match="one image a row; rows of several images"):
        model.encoder(torch.tensor([[4, 5, 2]]), None, image=torch.zeros(2, 3, 32, 32),
                      image_present=torch.tensor([True]), image_counts=torch.tensor([2]))


def test_a_few_steps_on_a_uniground_batch_lower_the_loss(demo_dir, vocab_dir):
    """Training mode (dropout, stochastic depth in the layers and the ResNet) on the demo's refcoco rows."""
    task = build_task("refcoco", f"{demo_dir}/refcoco_train.tsv", vocab_dir)
    task.load_dataset("train")
    dataset = task.dataset("train")
    batch = dataset.collater([dataset[i] for i in range(8)])
    model = small_model(len(task.vocab.dictionary), dropout=0.1, encoder_drop_path_rate=0.2,
                        decoder_drop_path_rate=0.2, resnet_drop_path_rate=0.2).train()
    losses = losses_over_steps(task, batch, 15, model=model)
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fused_attention_with_a_float_bias_equals_the_plain_computation(dtype, tolerance):
    """SDPA with OFA's additive bias (positions, -inf where masked) against explicit matmuls and softmax."""
    from models.ofa_layers import plain_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 4, length, 16, dtype=dtype) for length in (7, 11, 11))
    bias = torch.randn(3, 4, 7, 11, dtype=dtype)
    bias[1, :, :, 8:] = float("-inf")  # a sample's padding
    bias[2, :, 3, :5] = float("-inf")
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, bias, scale=0.3)
    plain = plain_attention(q, k, v, bias, scale=0.3)
    assert (fused.float() - plain.float()).abs().max() <= tolerance


def test_ofa_model_gives_the_same_outputs_on_fused_and_plain_attention(oracle):
    from models.ofa_layers import use_fused_attention

    model = small_model()
    torch.manual_seed(1)
    src = torch.randint(4, 60, (2, 20))
    src[1, 15:] = 1
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    outputs = []
    for fused in (True, False):
        use_fused_attention(model, fused)
        with torch.no_grad():
            encoder_out = model.encoder(src, None, patch_images=images, patch_masks=torch.tensor([True, False]))
            outputs.append(oracle.greedy(model, encoder_out, 2, 7, oracle.ofa_next_tokens((50, 59)), incremental=True))
    (tokens, logits), (plain_tokens, plain_logits) = outputs
    assert torch.equal(tokens, plain_tokens)
    assert (logits - plain_logits).abs().max() <= 1e-5
