"""preprocess/convert_checkpoint.py: OFA checkpoint -> safetensors + JSON -> OFA checkpoint, bit-exact."""
import json
import os

import pytest
import torch

from conftest import SHARED_DATA
from preprocess import convert_checkpoint
from utils.checkpoint import load_state

CHECKPOINT = os.path.join(SHARED_DATA, "ofa-oracle", "ofa_tiny_random.pt")
pytestmark = pytest.mark.skipif(not os.path.isfile(CHECKPOINT), reason=f"the OFA oracle checkpoint {CHECKPOINT} "
                                                                       "is absent")


def assert_same_checkpoint(actual, expected):
    assert list(actual) == list(expected)
    for key in expected:
        if key != "model":
            assert actual[key] == expected[key], key
    assert list(actual["model"]) == list(expected["model"])
    for name, tensor in expected["model"].items():
        assert actual["model"][name].dtype == tensor.dtype and torch.equal(actual["model"][name], tensor), name


def test_round_trip_is_bit_exact_and_ties_the_embeddings_again(tmp_path):
    convert_checkpoint.main([CHECKPOINT, str(tmp_path / "converted")])
    config = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert config["aliases"] == {"decoder.embed_tokens.weight": "encoder.embed_tokens.weight",
                                 "decoder.output_projection.weight": "encoder.embed_tokens.weight"}
    assert config["checkpoint"]["cfg"]["model"]["__namespace__"]["arch"] == "ofa_tiny"
    convert_checkpoint.main([str(tmp_path / "converted"), str(tmp_path / "back.pt")])
    back, original = load_state(tmp_path / "back.pt"), load_state(CHECKPOINT)
    assert_same_checkpoint(back, original)
    weights = back["model"]
    assert weights["decoder.output_projection.weight"].data_ptr() == weights["encoder.embed_tokens.weight"].data_ptr()


def test_a_unival_checkpoint_round_trips_too(tmp_path):
    unival = os.path.join(SHARED_DATA, "unival-oracle", "unival_tiny_random.pt")
    if not os.path.isfile(unival):
        pytest.skip(f"the UnIVAL oracle checkpoint {unival} is absent")
    convert_checkpoint.main([unival, str(tmp_path / "converted")])
    convert_checkpoint.main([str(tmp_path / "converted"), str(tmp_path / "back.pt")])
    assert_same_checkpoint(load_state(tmp_path / "back.pt"), load_state(unival))


def test_optimizer_state_is_dropped_and_the_rest_kept(tmp_path, caplog):
    state = load_state(CHECKPOINT)
    state["optimizer_history"][-1]["last_optimizer_state"] = {"state": {0: {"exp_avg": torch.ones(3)}}}
    torch.save(state, tmp_path / "with_optimizer.pt")
    convert_checkpoint.main([str(tmp_path / "with_optimizer.pt"), str(tmp_path / "converted")])
    assert "dropping the optimizer state" in caplog.text
    convert_checkpoint.main([str(tmp_path / "converted"), str(tmp_path / "back.pt")])
    del state["optimizer_history"][-1]["last_optimizer_state"]
    assert_same_checkpoint(load_state(tmp_path / "back.pt"), state)


def test_non_ofa_checkpoint_and_unconvertible_values_are_refused(tmp_path):
    state = load_state(CHECKPOINT)
    state["cfg"]["model"].arch = "unify_tiny"
    torch.save(state, tmp_path / "unify.pt")
    with pytest.raises(SystemExit, match="not an OFA checkpoint"):
        convert_checkpoint.main([str(tmp_path / "unify.pt"), str(tmp_path / "out")])
    state["cfg"]["model"].arch = "ofa_tiny"
    state["extra_state"] = {"meters": torch.zeros(2)}
    torch.save(state, tmp_path / "tensor.pt")
    with pytest.raises(SystemExit, match=r"extra_state\.meters: a Tensor cannot be converted"):
        convert_checkpoint.main([str(tmp_path / "tensor.pt"), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # nothing written
