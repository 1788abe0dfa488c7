"""OFA checkpoints: the oracle fixture's outputs (computed by OFA's own code) reproduced, and loading errors."""
import argparse
import copy
import json
import os
import shutil

import pytest
import torch
from fairseq.data import Dictionary
from fairseq.sequence_generator import SequenceGenerator

from conftest import ROOT, SHARED_DATA
from models.ofa import INDEX_BUFFERS, OFACheckpointError, OFAModel, image_buckets, load_ofa_model, token_buckets
from utils.checkpoint import load_state

ORACLE = os.path.join(SHARED_DATA, "ofa-oracle")
CHECKPOINT = os.path.join(ORACLE, "ofa_tiny_random.pt")
pytestmark = pytest.mark.skipif(not os.path.isdir(ORACLE), reason=f"the OFA oracle fixture {ORACLE} is absent")


@pytest.fixture(scope="module")
def oracle(monkeypatch_module):
    monkeypatch_module.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    import oracle
    return oracle


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def inputs():
    return torch.load(os.path.join(ORACLE, "inputs.pt"), weights_only=True)


@pytest.fixture(scope="module")
def expected():
    return torch.load(os.path.join(ORACLE, "expected.pt"), weights_only=True)


@pytest.fixture(scope="module")
def model():
    return load_ofa_model(CHECKPOINT)


@pytest.fixture(scope="module")
def actual(oracle, model, inputs, expected):
    with open(os.path.join(ORACLE, "meta.json")) as f:
        bins = json.load(f)["vocab"]["bins"]
    return oracle.compute(model, inputs, expected["greedy_tokens"].size(1) - 1, bins)


@pytest.mark.parametrize("name, tolerance", [
    ("resnet_features", 1e-3), ("encoder_out", 1e-4), ("encoder_position_embeddings", 1e-4),
    ("decoder_logits", 1e-5), ("greedy_step_logits", 1e-5), ("greedy_step_logits_incremental", 1e-5)])
def test_outputs_match_ofa(actual, expected, name, tolerance):
    assert actual[name].shape == expected[name].shape
    assert (actual[name] - expected[name]).abs().max().item() <= tolerance


def test_greedy_tokens_and_padding_mask_are_identical(actual, expected):
    for name in ("greedy_tokens", "greedy_tokens_incremental", "encoder_padding_mask"):
        assert torch.equal(actual[name], expected[name]), name


def test_incremental_decoding_equals_the_full_forward(actual):
    assert torch.equal(actual["greedy_tokens_incremental"], actual["greedy_tokens"])
    assert (actual["greedy_step_logits_incremental"] - actual["greedy_step_logits"]).abs().max() <= 1e-5


def test_model_is_built_from_the_checkpoints_own_options(model):
    args = load_state(CHECKPOINT)["cfg"]["model"]
    assert isinstance(args, argparse.Namespace)
    assert len(model.encoder.layers) == args.encoder_layers and model.encoder.layers[0].self_attn.heads == 4
    assert model.encoder.layers[0].self_attn.scaling == pytest.approx((64 * 2) ** -0.5)
    assert model.decoder.output_projection.weight is model.encoder.embed_tokens.weight


def test_bucket_tables_follow_ofa(model):
    """Values worked out by hand from OFA's bucketing rule (256 token buckets, 42 x 42 image grid)."""
    tokens = token_buckets(256)
    assert tokens.shape == (1024, 1024)
    assert tokens[5, 5] == 255 and tokens[3, 10] == 255 - 7 and tokens[128, 0] == 255 + 128
    assert tokens[129, 0] == 255 + 129  # first log bucket: ceil(log(129/128) / log(1023/128) * 127) + 128
    assert tokens[200, 0] == 255 + 156 and tokens[0, 200] == 255 - 156
    assert tokens[1023, 0] == 510 and tokens[0, 1023] == 0
    images = image_buckets(42)
    assert images.shape == (1765, 1765)
    assert images[1, 1] == 41 * 83 + 41 and images[1, 2] == 41 * 83 + 40 and images[1, 43] == 40 * 83 + 41
    assert images[0, 0] == 6891 and images[0, 5] == 6889 and images[5, 0] == 6890


def index_buffers(model):
    buffers = dict(model.named_buffers())
    return {key: buffers[key].clone() for key in INDEX_BUFFERS}


def save_variant(tmp_path, change):
    state = load_state(CHECKPOINT)
    change(state)
    path = tmp_path / "variant.pt"
    torch.save(state, path)
    return str(path)


def test_checkpoint_with_the_index_buffers_loads_alike(tmp_path, model, inputs, expected):
    path = save_variant(tmp_path, lambda state: state["model"].update(index_buffers(model)))
    with torch.no_grad():
        logits = load_ofa_model(path)(inputs["src_tokens"], inputs["src_lengths"], inputs["prev_output_tokens"],
                                      patch_images=inputs["patch_images"], patch_masks=inputs["patch_masks"])[0]
    assert (logits - expected["decoder_logits"]).abs().max() <= 1e-5


@pytest.mark.parametrize("counters", ["kept", "dropped"])
def test_checkpoint_with_a_frozen_resnet_loads_and_computes_alike(tmp_path, inputs, expected, counters):
    """``freeze_resnet``: OFA's own frozen checkpoints keep no ``num_batches_tracked``; one fine-tuned from a
    checkpoint that trained its BatchNorm may carry them. Either way the evaluation outputs are OFA's."""
    from models.image_encoder import FrozenBatchNorm2d

    def freeze(state):
        state["cfg"]["model"].freeze_resnet = True
        if counters == "dropped":
            for key in [key for key in state["model"] if key.endswith("num_batches_tracked")]:
                del state["model"][key]
    frozen = load_ofa_model(save_variant(tmp_path, freeze))
    resnet = frozen.encoder.embed_images
    assert any(isinstance(m, FrozenBatchNorm2d) for m in resnet.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in resnet.modules())
    with torch.no_grad():
        logits = frozen(inputs["src_tokens"], inputs["src_lengths"], inputs["prev_output_tokens"],
                        patch_images=inputs["patch_images"], patch_masks=inputs["patch_masks"])[0]
    assert (logits - expected["decoder_logits"]).abs().max() <= 1e-5


def test_index_buffer_that_differs_is_an_error(tmp_path, model):
    def tamper(state):
        buffers = index_buffers(model)
        buffers["decoder.token_rp_bucket"][0, 0] += 1
        state["model"].update(buffers)
    with pytest.raises(OFACheckpointError, match="decoder.token_rp_bucket"):
        load_ofa_model(save_variant(tmp_path, tamper))


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    def change(state):
        del state["model"]["encoder.layers.2.attn_ln.weight"]
        state["model"]["decoder.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(OFACheckpointError, match=r"missing: encoder\.layers\.2\.attn_ln\.weight; "
                                                 r"unexpected: decoder\.extra_head\.weight"):
        load_ofa_model(save_variant(tmp_path, change))


def test_vocab_size_that_differs_from_the_embeddings_names_both(tmp_path):
    with pytest.raises(OFACheckpointError, match="vocab_size 9000 .* 9697 rows"):
        load_ofa_model(save_variant(tmp_path, lambda state: setattr(state["cfg"]["model"], "vocab_size", 9000)))


def test_unknown_architecture_is_an_error(tmp_path):
    with pytest.raises(OFACheckpointError, match="'unify_tiny'"):
        load_ofa_model(save_variant(tmp_path, lambda state: setattr(state["cfg"]["model"], "arch", "unify_tiny")))


def test_oracle_script_passes_on_the_fixture_and_fails_beyond_tolerance(oracle, tmp_path, expected, capsys):
    assert oracle.main([ORACLE]) == 0
    for name in ("ofa_tiny_random.pt", "inputs.pt", "meta.json"):
        os.symlink(os.path.join(ORACLE, name), tmp_path / name)
    shifted = dict(expected, encoder_out=expected["encoder_out"] + 2e-4)
    torch.save(shifted, tmp_path / "expected.pt")
    capsys.readouterr()
    assert oracle.main([str(tmp_path)]) == 1
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("encoder_out"))
    assert "BEYOND TOLERANCE" in line


def test_checkpoint_outside_the_allowlist_is_refused(tmp_path):
    path = save_variant(tmp_path, lambda state: state.update(extra_state={"hook": shutil.copy}))
    with pytest.raises(Exception, match="refusing to unpickle"):
        load_ofa_model(path)


def test_fairseq_beam_search_through_the_incremental_decoder_scores_as_ofa(model, inputs, expected):
    """fairseq's SequenceGenerator (encoder reordering, cache reordering) starting from <s>, as OFA's does."""
    dictionary = Dictionary()
    for i in range(expected["decoder_logits"].size(-1) - dictionary.nspecial):
        dictionary.add_symbol(f"w{i}")
    steps = expected["greedy_step_logits"].size(0)
    generator = SequenceGenerator([model], dictionary, beam_size=1, max_len_b=steps)
    with torch.no_grad():
        hypotheses = generator.generate([model], {"net_input": {key: inputs[key] for key in (
            "src_tokens", "src_lengths", "patch_images", "patch_masks")}}, bos_token=0)
    best = hypotheses[1][0]  # sample 1 is free, and OFA's greedy choice is never </s> there
    assert torch.equal(best["tokens"][:steps], expected["greedy_tokens"][1, 1:])
    log_probs = torch.log_softmax(expected["greedy_step_logits"][:, 1], dim=-1)
    chosen = log_probs.gather(1, expected["greedy_tokens"][1, 1:, None])[:, 0]
    assert (best["positional_scores"][:steps] - chosen).abs().max() <= 1e-5


def test_beam_search_over_the_batch_equals_each_sample_alone(model, inputs, expected):
    """Beam search over the batch gives each sample what it gives alone: nothing of one sample (its
    padding, image mask or caches) reaches another's."""
    dictionary = Dictionary()
    for i in range(expected["decoder_logits"].size(-1) - dictionary.nspecial):
        dictionary.add_symbol(f"w{i}")
    generator = SequenceGenerator([model], dictionary, beam_size=4, max_len_b=8)
    keys = ("src_tokens", "src_lengths", "patch_images", "patch_masks")
    with torch.no_grad():
        together = generator.generate([model], {"net_input": {k: inputs[k] for k in keys}}, bos_token=0)
        for i in range(inputs["src_tokens"].size(0)):
            alone = generator.generate([model], {"net_input": {k: inputs[k][i:i + 1] for k in keys}}, bos_token=0)
            assert torch.equal(alone[0][0]["tokens"], together[i][0]["tokens"])
            assert abs(float(alone[0][0]["score"]) - float(together[i][0]["score"])) <= 1e-5


def copied_per_hypothesis(encoder_out, new_order):
    """The plain way to reorder OFA's encoder output (as OFA does): every entry copied to each hypothesis."""
    return {"encoder_out": [encoder_out["encoder_out"][0].index_select(1, new_order)],
            **{key: [encoder_out[key][0].index_select(0, new_order)]
               for key in ("encoder_padding_mask", "position_embeddings")},
            "sample_index": encoder_out["sample_index"].index_select(0, new_order)}


@pytest.fixture
def three_samples(inputs):
    """The fixture's two samples and the second again without its image (padded patches)."""
    keys = ("src_tokens", "src_lengths", "patch_images", "patch_masks")
    batch = {key: inputs[key][[0, 1, 1]] for key in keys}
    batch["patch_masks"] = torch.tensor([True, True, False])
    return batch


def test_beam_search_sharing_each_samples_memory_equals_copying_it_per_beam(model, expected, three_samples,
                                                                             monkeypatch):
    dictionary = Dictionary()
    for i in range(expected["decoder_logits"].size(-1) - dictionary.nspecial):
        dictionary.add_symbol(f"w{i}")
    generator = SequenceGenerator([model], dictionary, beam_size=4, max_len_b=8)
    with torch.no_grad():
        beams = model.encoder.reorder_encoder_out(model.encoder(**three_samples), torch.arange(3).repeat_interleave(4))
        shared = generator.generate([model], {"net_input": three_samples}, bos_token=0)
        monkeypatch.setattr(model.encoder, "reorder_encoder_out", copied_per_hypothesis)
        copied = generator.generate([model], {"net_input": three_samples}, bos_token=0)
    assert beams["encoder_out"][0].size(1) == beams["position_embeddings"][0].size(0) == 3  # a row per sample
    assert beams["memory_index"].tolist() == torch.arange(3).repeat_interleave(4).tolist()
    for ours, plain in zip(shared, copied):
        assert [h["tokens"].tolist() for h in ours] == [h["tokens"].tolist() for h in plain]
        torch.testing.assert_close(torch.stack([h["score"] for h in ours]), torch.stack([h["score"] for h in plain]))


@pytest.mark.parametrize("which", [[0, 0, 2, 1, 2, 2], [2, 2, 0, 0], [1]])
def test_decoder_rows_may_use_any_memory_rows(model, inputs, three_samples, which):
    """Candidate scoring pairs each sample with several candidates, not always in equal groups."""
    which = torch.tensor(which)
    prev = inputs["prev_output_tokens"][[0, 1, 1]][which]
    with torch.no_grad():
        encoder_out = model.encoder(**three_samples)
        shared, _ = model.decoder(prev, encoder_out=model.encoder.reorder_encoder_out(encoder_out, which))
        plain, _ = model.decoder(prev, encoder_out=copied_per_hypothesis(encoder_out, which))
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)


def test_uniground_batch_layout_gives_the_same_encoding(model, inputs):
    """UniGround's collate stacks only the samples that have an image, with an ``image_present`` mask."""
    present = torch.tensor([False, True])
    with torch.no_grad():
        ofa = model.encoder(inputs["src_tokens"], inputs["src_lengths"], patch_images=inputs["patch_images"],
                            patch_masks=present)
        ours = model.encoder(inputs["src_tokens"], inputs["src_lengths"], image=inputs["patch_images"][1:],
                             image_present=present)
    assert torch.equal(ours["encoder_padding_mask"][0], ofa["encoder_padding_mask"][0])
    assert ours["encoder_padding_mask"][0][0, :256].all() and not ours["encoder_padding_mask"][0][1, :256].any()
    assert torch.allclose(ours["encoder_out"][0][:, 1], ofa["encoder_out"][0][:, 1], atol=1e-6)
    assert torch.allclose(ours["encoder_out"][0][256:, 0], ofa["encoder_out"][0][256:, 0], atol=1e-6)


def test_a_dictionary_with_new_tokens_keeps_the_checkpoints_rows(inputs, expected):
    """Fine-tuning on a task whose dictionary appends tokens: new rows start fresh, outputs for the old ids stay."""
    state = load_state(CHECKPOINT)
    model = OFAModel.from_args(copy.copy(state["cfg"]["model"]), 9697 + 3, 1).eval()
    fresh = model.encoder.embed_tokens.weight[9697:].detach().clone()
    model.load_state_dict(dict(state["model"]))
    weight = model.encoder.embed_tokens.weight
    assert torch.equal(weight[:9697], state["model"]["encoder.embed_tokens.weight"])
    assert torch.equal(weight[9697:], fresh) and model.decoder.output_projection.weight is weight
    with torch.no_grad():
        logits = model(inputs["src_tokens"], inputs["src_lengths"], inputs["prev_output_tokens"],
                       patch_images=inputs["patch_images"], patch_masks=inputs["patch_masks"])[0]
    assert logits.shape[-1] == 9700 and (logits[..., :9697] - expected["decoder_logits"]).abs().max() <= 1e-5


def test_a_dictionary_smaller_than_the_checkpoints_is_an_error():
    state = load_state(CHECKPOINT)
    model = OFAModel.from_args(copy.copy(state["cfg"]["model"]), 9000, 1)
    with pytest.raises(OFACheckpointError, match="encoder.embed_tokens.weight has 9697 rows but the dictionary has "
                                                 "only 9000 entries"):
        model.load_state_dict(dict(state["model"]))
