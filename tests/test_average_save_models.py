"""Checkpoint averaging and interpolation on real checkpoints of a short training run."""
import os
import subprocess
import sys

import pytest
import torch

import evaluate
from preprocess import average_save_models
from utils.checkpoint import MissingEmaError, load_models_and_task, load_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = (2, 4, 6)
DELETED, RESHAPED = "decoder.final_norm.bias", "encoder.layers.0.ffn.0.weight"

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def variants(checkpoints, tmp_path_factory):
    """Copies of the second checkpoint, each changed in one way."""
    out = tmp_path_factory.mktemp("variants")
    paths = {}
    for name, change in [("mismatched", mismatch), ("other_arch", widen_ffn), ("no_ema", drop_ema),
                         ("other_vocab", other_vocab)]:
        state = load_state(checkpoints[1])
        change(state)
        paths[name] = out / f"{name}.pt"
        torch.save(state, paths[name])
    return paths


def mismatch(state):
    del state["model"][DELETED]
    state["model"][RESHAPED] = state["model"][RESHAPED][:-1].clone()


def widen_ffn(state):
    state["cfg"]["model"]["ffn_dim"] = 128


def other_vocab(state):
    """As if trained on a vocabulary of the same size that maps pieces to other ids."""
    state["task_state"]["identity"]["vocab"] = "0123456789abcdef"


def drop_ema(state):
    del state["extra_state"]["ema"]


@pytest.fixture(scope="module")
def rows(demo_dir, tmp_path_factory):
    """The refcoco validation rows."""
    return demo_dir / "refcoco_valid.tsv"


def average(*argv):
    return average_save_models.main([str(arg) for arg in argv])


def weights_of(path, ema=False):
    state = load_state(path)
    return state["extra_state"]["ema"] if ema else state["model"]


def convex_combination(paths, weights, ema=False):
    """sum_i w_i * x_i over the floating tensors, computed here independently of the script."""
    models = [weights_of(path, ema) for path in paths]
    return {key: sum(w * model[key].double() for w, model in zip(weights, models)).to(value.dtype)
            for key, value in models[0].items() if value.is_floating_point()}


def integer_keys(model):
    return [key for key, value in model.items() if not value.is_floating_point()]


def predict(path, rows, out, *flags):
    evaluate.main(["--path", str(path), "--data", str(rows), "--results-dir", str(out), "--beam", "1",
                   "--batch-size", "8", "--num-workers", "0", "--cpu", *flags])
    return (out / "predictions.jsonl").read_text(encoding="utf-8")


@pytest.mark.parametrize("weights", [None, [0.5, 0.3, 0.2]])
def test_average_is_the_convex_combination_key_by_key(weights, checkpoints, tmp_path):
    output = tmp_path / "avg.pt"
    average("--inputs", *checkpoints, *(["--weights", *weights] if weights else []), "--output", output)
    weights = weights or [1 / 3] * 3
    averaged, first = weights_of(output), weights_of(checkpoints[0])
    assert list(averaged) == list(first)
    expected = convex_combination(checkpoints, weights)
    for key, value in expected.items():
        assert averaged[key].dtype == value.dtype
        torch.testing.assert_close(averaged[key], value, rtol=0, atol=1e-6)
    assert not torch.equal(averaged[RESHAPED], first[RESHAPED])
    integers = integer_keys(first)
    assert integers and len(expected) + len(integers) == len(first)
    for key in integers:
        assert torch.equal(averaged[key], first[key]) and averaged[key].dtype == first[key].dtype
    assert {int(weights_of(path)[integers[0]]) for path in checkpoints} == set(STEPS)  # they do differ


def test_provenance_is_recorded_and_loads_weights_only(checkpoints, tmp_path):
    output = tmp_path / "avg.pt"
    average("--inputs", *checkpoints, "--weights", 0.25, 0.25, 0.5, "--output", output)
    state = torch.load(output, map_location="cpu", weights_only=True)
    assert state["extra_state"]["provenance"] == {
        "inputs": [os.path.abspath(path) for path in checkpoints], "weights": [0.25, 0.25, 0.5], "ema": False,
        "integer_buffers": "first", "on_missing": "error", "mismatched_keys": []}
    assert "last_optimizer_state" not in state and "ema" not in state["extra_state"]
    assert state["cfg"] == load_state(checkpoints[0])["cfg"]
    assert os.path.getsize(output) < os.path.getsize(checkpoints[0]) / 2  # no optimizer state, no EMA


def test_interpolation_endpoints_are_the_sources(checkpoints, tmp_path):
    first, last = checkpoints[0], checkpoints[2]
    written = average("--inputs", first, last, "--lambdas", 0, 0.5, 1, "--output-dir", tmp_path / "interp")
    assert [os.path.basename(path) for path in written] == ["lambda_0.pt", "lambda_0.5.pt", "lambda_1.pt"]
    interpolated = [weights_of(path) for path in written]
    for model, source in [(interpolated[0], first), (interpolated[2], last)]:
        for key, value in convex_combination([source], [1.0]).items():
            assert torch.equal(model[key], value), key
    for key, value in convex_combination([first, last], [0.5, 0.5]).items():
        torch.testing.assert_close(interpolated[1][key], value, rtol=0, atol=1e-6)
    first_model = weights_of(first)
    for key in integer_keys(first_model):
        assert torch.equal(interpolated[2][key], first_model[key])


def test_interpolation_endpoints_reproduce_the_sources_predictions(checkpoints, rows, tmp_path):
    first, last = checkpoints[0], checkpoints[2]
    written = average("--inputs", first, last, "--lambdas", 0, 1, "--output-dir", tmp_path / "interp")
    sources = [predict(path, rows, tmp_path / f"source{i}") for i, path in enumerate([first, last])]
    assert sources[0] != sources[1]  # else the comparison below would prove little
    for i, path in enumerate(written):
        assert predict(path, rows, tmp_path / f"interpolated{i}") == sources[i]


def test_extrapolation_needs_its_flag(checkpoints, tmp_path):
    first, last = checkpoints[0], checkpoints[2]
    written = average("--inputs", first, last, "--lambdas", 1.5, "--allow-extrapolation", "--output-dir", tmp_path)
    assert os.path.basename(written[0]) == "lambda_1.5.pt"
    expected = convex_combination([first, last], [-0.5, 1.5])[RESHAPED]
    torch.testing.assert_close(weights_of(written[0])[RESHAPED], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("flags, message", [
    (["--weights", "0.5", "0.3", "0.1"], "sum to 0.9, not 1"),
    (["--weights", "0.5", "0.5"], "2 weights for 3 checkpoints"),
    (["--weights", "1.2", "-0.1", "-0.1"], "negative weight"),
    (["--lambdas", "0", "1.5"], "outside [0, 1]"),
])
def test_bad_weights_or_lambdas_fail_before_writing(flags, message, checkpoints, tmp_path):
    inputs = checkpoints[:2] if "--lambdas" in flags else checkpoints
    output = ["--output-dir", tmp_path / "out"] if "--lambdas" in flags else ["--output", tmp_path / "out" / "a.pt"]
    with pytest.raises(SystemExit, match=message.replace("[", r"\[")):
        average("--inputs", *inputs, *flags, *output)
    assert not (tmp_path / "out").exists()


def test_missing_input_is_named(checkpoints, tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(SystemExit, match=f"not found: {missing}"):
        average("--inputs", checkpoints[0], missing, "--output", tmp_path / "avg.pt")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("how", ["same path", "through a symlink", "through a hard link", "an interpolation point"])
def test_an_output_that_is_an_input_is_refused_before_any_work(how, checkpoints, tmp_path):
    inputs = [tmp_path / "a.pt", tmp_path / "out" / "lambda_0.5.pt"]
    inputs[1].parent.mkdir()
    for source, copy in zip(checkpoints, inputs):
        copy.write_bytes(source.read_bytes())
    output = {"same path": ["--output", tmp_path / "out" / ".." / "a.pt"],
              "through a symlink": ["--output", tmp_path / "link.pt"],
              "through a hard link": ["--output", tmp_path / "hard.pt"],
              "an interpolation point": ["--lambdas", "0", "0.5", "1", "--output-dir", tmp_path / "out"]}[how]
    os.symlink(inputs[0], tmp_path / "link.pt")
    os.link(inputs[0], tmp_path / "hard.pt")
    before = [path.read_bytes() for path in inputs]
    with pytest.raises(SystemExit, match="would overwrite the input") as error:
        average("--inputs", *inputs, *output)
    assert str(inputs[1] if "--lambdas" in output else inputs[0]) in str(error.value)
    assert [path.read_bytes() for path in inputs] == before
    assert sorted(os.listdir(tmp_path / "out")) == ["lambda_0.5.pt"]


def test_mismatched_checkpoints_are_refused_with_the_differences(checkpoints, variants, tmp_path):
    with pytest.raises(SystemExit) as error:
        average("--inputs", checkpoints[0], variants["mismatched"], "--output", tmp_path / "avg.pt")
    message = str(error.value)
    assert f"{variants['mismatched']}: lacks 1 keys of {checkpoints[0]}: {DELETED}" in message
    assert f"{RESHAPED}: shape [64, 32] in {checkpoints[0]}, [63, 32] in {variants['mismatched']}" in message
    assert os.listdir(tmp_path) == []


def test_skip_key_drops_the_keys_that_differ(checkpoints, variants, tmp_path):
    inputs = [checkpoints[0], variants["mismatched"]]
    average("--inputs", *inputs, "--on-missing", "skip-key", "--output", tmp_path / "avg.pt")
    averaged = weights_of(tmp_path / "avg.pt")
    expected = convex_combination([checkpoints[0], checkpoints[1]], [0.5, 0.5])
    assert set(averaged) == set(weights_of(checkpoints[0])) - {DELETED, RESHAPED}
    for key in set(expected) - {DELETED, RESHAPED}:
        torch.testing.assert_close(averaged[key], expected[key], rtol=0, atol=1e-6)
    provenance = load_state(tmp_path / "avg.pt")["extra_state"]["provenance"]
    assert provenance["on_missing"] == "skip-key" and provenance["mismatched_keys"] == sorted([DELETED, RESHAPED])


def test_take_first_copies_the_keys_that_differ(checkpoints, variants, tmp_path):
    inputs = [checkpoints[0], variants["mismatched"]]
    average("--inputs", *inputs, "--on-missing", "take-first", "--output", tmp_path / "avg.pt")
    averaged, first = weights_of(tmp_path / "avg.pt"), weights_of(checkpoints[0])
    expected = convex_combination([checkpoints[0], checkpoints[1]], [0.5, 0.5])
    assert list(averaged) == list(first)
    for key in (DELETED, RESHAPED):
        assert torch.equal(averaged[key], first[key])
    for key in set(expected) - {DELETED, RESHAPED}:
        torch.testing.assert_close(averaged[key], expected[key], rtol=0, atol=1e-6)


def test_different_architectures_are_refused_whatever_on_missing_says(checkpoints, variants, tmp_path):
    with pytest.raises(SystemExit, match=f"{variants['other_arch']}: ffn_dim=128, but 64 in {checkpoints[0]}"):
        average("--inputs", checkpoints[0], variants["other_arch"], "--on-missing", "take-first",
                "--output", tmp_path / "avg.pt")
    assert os.listdir(tmp_path) == []


def test_checkpoints_of_different_vocabularies_are_refused(checkpoints, variants, tmp_path):
    vocab = load_state(checkpoints[0])["task_state"]["identity"]["vocab"]
    with pytest.raises(SystemExit, match=f"{variants['other_vocab']}: vocab='0123456789abcdef', but '{vocab}' in"):
        average("--inputs", checkpoints[0], variants["other_vocab"], "--output", tmp_path / "avg.pt")
    assert os.listdir(tmp_path) == []


def test_interrupted_write_leaves_no_file(checkpoints, tmp_path, monkeypatch):
    def save_half_then_fail(state, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        average("--inputs", *checkpoints, "--output", tmp_path / "avg.pt")
    assert os.listdir(tmp_path) == []


def test_ema_average_and_evaluate_use_ema(checkpoints, rows, tmp_path):
    output = tmp_path / "ema.pt"
    average("--inputs", *checkpoints, "--weights", 0.2, 0.3, 0.5, "--ema", "--output", output)
    state = load_state(output)
    expected = convex_combination(checkpoints, [0.2, 0.3, 0.5], ema=True)
    assert not torch.equal(expected[RESHAPED], convex_combination(checkpoints, [0.2, 0.3, 0.5])[RESHAPED])
    for key, value in expected.items():
        torch.testing.assert_close(state["model"][key], value, rtol=0, atol=1e-6)
        assert torch.equal(state["extra_state"]["ema"][key], state["model"][key])
    assert state["extra_state"]["provenance"]["ema"] is True
    assert predict(output, rows, tmp_path / "ema", "--use-ema") == predict(output, rows, tmp_path / "model")


def test_use_ema_builds_the_model_from_the_ema_weights(checkpoints, rows):
    models, _, _ = load_models_and_task(str(checkpoints[2]), {"data": str(rows)}, use_ema=True)
    ema = weights_of(checkpoints[2], ema=True)
    assert not torch.equal(ema[RESHAPED], weights_of(checkpoints[2])[RESHAPED])
    for key, value in models[0].state_dict().items():
        assert torch.equal(value, ema[key]), key


def test_missing_ema_is_refused(checkpoints, variants, rows, tmp_path):
    with pytest.raises(SystemExit, match=f"{variants['no_ema']}: no EMA weights"):
        average("--inputs", checkpoints[0], variants["no_ema"], "--ema", "--output", tmp_path / "avg.pt")
    assert os.listdir(tmp_path) == []
    with pytest.raises(MissingEmaError, match="no EMA weights"):
        load_models_and_task(str(variants["no_ema"]), {"data": str(rows)}, use_ema=True)


def test_command_line_reports_a_line_per_checkpoint_read(checkpoints, tmp_path):
    result = subprocess.run(
        [sys.executable, "preprocess/average_save_models.py", "--inputs", *map(str, checkpoints),
         "--output", str(tmp_path / "avg.pt")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()  # progress goes to stderr
    count = len(weights_of(checkpoints[0]))
    assert [line for line in lines if line.endswith(" tensors")] == [f"read {path}: {count} tensors"
                                                                     for path in checkpoints]
    assert lines[-1] == f"wrote {tmp_path / 'avg.pt'}"
