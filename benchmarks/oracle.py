"""UniGround's OFA or UnIVAL against outputs that OFA's or UnIVAL's own code computed, tensor by tensor.

    .venv/bin/python benchmarks/oracle.py DIR [--device cpu|cuda] [--threads N]

DIR is laid out like ``../shared/data/ofa-oracle`` (``ofa_*.pt``) or ``../shared/data/unival-oracle``
(``unival_*.pt``): a checkpoint (with or without its index buffers), ``inputs.pt``, ``expected.pt`` and
``meta.json`` (the vocabulary's bin ids); which one is told by the checkpoint's name. The checkpoint
loads through ``models.ofa.load_ofa_model`` or ``models.unival.load_unival_model``, the path a user's
checkpoint takes. Prints each tensor's max abs difference beside its tolerance, and the difference
between this implementation's incremental and full decoding; exits 1 when any is beyond its tolerance
or a token differs. Greedy decoding follows each fixture's rule: OFA's sample 0 takes the best bin at
steps 1-4, then ``</s>``, then pads, every other sample the best token; UnIVAL's every sample the
best token. UnIVAL's fixture holds one input set per medium (image, video, audio, ...), each its own
batch; rows are named ``set/tensor``.
"""
import argparse
import glob
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.ofa import load_ofa_model  # noqa: E402
from models.unival import load_unival_model  # noqa: E402

OFA_TOLERANCES = {
    "resnet_features": 1e-3,
    "encoder_out": 1e-4,
    "encoder_position_embeddings": 1e-4,
    "decoder_logits": 1e-5,
    "greedy_step_logits": 1e-5,
    "greedy_step_logits_incremental": 1e-5,
}
UNIVAL_TOLERANCES = {  # the fixture's README: its weights (sigma 0.2) make float32 rounding show at ~1e-4
    "image_backbone_out": 3e-3,
    "video_backbone_out": 3e-3,
    "audio_backbone_out": 3e-3,
    "audio_logmel": 1e-4,
    "encoder_out": 1e-3,
    "encoder_position_embeddings": 1e-5,
    "logits": 2e-3,
    "greedy_step_logits": 2e-3,
    "greedy_step_logits_incremental": 2e-3,
}
INCREMENTAL_TOLERANCE = {"ofa": 1e-5, "unival": 1e-4}
BIN_STEPS = 4  # OFA's sample 0: a box
BOS, PAD, EOS = 0, 1, 2
UNIVAL_MEDIA = ("patch_images", "patch_masks", "patch_types", "patch_videos", "patch_audios")


def ofa_next_tokens(bins):
    def choose(logits, step):
        """Sample 0 is a box (four bins, then </s>, then pads); the others are free."""
        tokens = logits.argmax(-1)
        if step <= BIN_STEPS:
            tokens[0] = bins[0] + logits[0, bins[0]:bins[1] + 1].argmax()
        else:
            tokens[0] = EOS if step == BIN_STEPS + 1 else PAD
        return tokens
    return choose


def best_tokens(logits, step):
    return logits.argmax(-1)


def greedy(model, encoder_out, batch, steps, choose, incremental):
    """Tokens (B x steps+1, from <s>) and each step's last-position logits (steps x B x V)."""
    prev = torch.full((batch, 1), BOS, dtype=torch.long, device=encoder_out["encoder_out"][0].device)
    state = {} if incremental else None
    step_logits = []
    for step in range(1, steps + 1):
        logits = model.decoder(prev, encoder_out=encoder_out, incremental_state=state)[0][:, -1]
        step_logits.append(logits)
        prev = torch.cat([prev, choose(logits, step)[:, None]], dim=1)
    return prev, torch.stack(step_logits)


def decoded(model, inputs, media, steps, choose):
    """The encoder's and decoder's tensors, greedy decoding full and incremental, named as both fixtures name them."""
    encoder_out = model.encoder(inputs["src_tokens"], inputs["src_lengths"], **media)
    batch = inputs["src_tokens"].size(0)
    tokens, step_logits = greedy(model, encoder_out, batch, steps, choose, incremental=False)
    tokens_incremental, step_logits_incremental = greedy(model, encoder_out, batch, steps, choose, incremental=True)
    return {
        "encoder_out": encoder_out["encoder_out"][0],
        "encoder_padding_mask": encoder_out["encoder_padding_mask"][0],
        "encoder_position_embeddings": encoder_out["position_embeddings"][0],
        "logits": model.decoder(inputs["prev_output_tokens"], encoder_out=encoder_out)[0],
        "greedy_tokens": tokens,
        "greedy_step_logits": step_logits,
        "greedy_tokens_incremental": tokens_incremental,
        "greedy_step_logits_incremental": step_logits_incremental,
    }


def compute(model, inputs, steps, bins):
    """This OFA implementation's value of every tensor that OFA's ``expected.pt`` holds."""
    with torch.no_grad():
        media = {"patch_images": inputs["patch_images"], "patch_masks": inputs["patch_masks"]}
        outputs = decoded(model, inputs, media, steps, ofa_next_tokens(bins))
        outputs["decoder_logits"] = outputs.pop("logits")
        outputs["resnet_features"] = model.encoder.embed_images(inputs["patch_images"])
        return outputs


def compute_unival(model, inputs, steps):
    """This UnIVAL implementation's value of every tensor of one input set of UnIVAL's ``expected.pt``; the
    backbone's outputs are those the encoder computed (caught on the way), not a second pass."""
    encoder = model.encoder
    if "patch_videos" in inputs:
        watched = {"video_backbone_out": encoder.embed_videos}
    elif "patch_audios" in inputs:
        watched = {"audio_logmel": encoder.embed_audios.logmel_extractor, "audio_backbone_out": encoder.embed_audios}
    else:
        watched = {"image_backbone_out": encoder.embed_images}
    caught = {}
    hooks = [module.register_forward_hook(lambda module, args, output, name=name: caught.setdefault(name, output))
             for name, module in watched.items()]
    try:
        with torch.no_grad():
            media = {key: inputs[key] for key in UNIVAL_MEDIA if key in inputs}
            return {**decoded(model, inputs, media, steps, best_tokens), **caught}
    finally:
        for hook in hooks:
            hook.remove()


def max_difference(actual, expected):
    if actual.shape != expected.shape:
        return float("inf")
    if actual.dtype in (torch.bool, torch.long) or expected.dtype in (torch.bool, torch.long):
        return float(torch.ne(actual.cpu(), expected).sum())  # count of differing entries
    return (actual.cpu().double() - expected.double()).abs().max().item()


def comparisons(actual, expected, tolerances, incremental_tolerance, prefix=""):
    """(name, difference, tolerance) for each expected tensor, then incremental against full decoding."""
    rows = [(prefix + name, max_difference(actual[name], expected[name]), tolerances.get(name, 0.0))
            for name in expected]
    rows.append((prefix + "incremental vs full: step logits",
                 max_difference(actual["greedy_step_logits_incremental"], actual["greedy_step_logits"]),
                 incremental_tolerance))
    rows.append((prefix + "incremental vs full: tokens",
                 max_difference(actual["greedy_tokens_incremental"], actual["greedy_tokens"]), 0.0))
    return rows


def fixture_kind(directory):
    """``ofa`` or ``unival``, from the one checkpoint the folder holds, and that checkpoint's path."""
    found = [(kind, path) for kind in ("ofa", "unival") for path in glob.glob(os.path.join(directory, f"{kind}_*.pt"))]
    if len(found) != 1:
        raise SystemExit(f"{directory}: expected one ofa_*.pt or unival_*.pt checkpoint, found {len(found)}")
    return found[0]


def to_device(tensors, device):
    return {key: to_device(value, device) if isinstance(value, dict) else value.to(device)
            for key, value in tensors.items()}


def run(directory, device="cpu"):
    kind, checkpoint = fixture_kind(directory)
    inputs = to_device(torch.load(os.path.join(directory, "inputs.pt"), weights_only=True), device)
    expected = torch.load(os.path.join(directory, "expected.pt"), weights_only=True)
    if kind == "unival":
        model = load_unival_model(checkpoint).to(device)
        rows = []
        for name, expected_set in expected.items():
            actual = compute_unival(model, inputs[name], expected_set["greedy_tokens"].size(1) - 1)
            rows += comparisons(actual, expected_set, UNIVAL_TOLERANCES, INCREMENTAL_TOLERANCE[kind], f"{name}/")
        return rows
    with open(os.path.join(directory, "meta.json")) as f:
        bins = json.load(f)["vocab"]["bins"]
    model = load_ofa_model(checkpoint).to(device)
    actual = compute(model, inputs, expected["greedy_tokens"].size(1) - 1, bins)
    return comparisons(actual, expected, OFA_TOLERANCES, INCREMENTAL_TOLERANCE[kind])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (the fixtures were computed on one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    failures = 0
    print(f"{'tensor':<44} {'max abs diff':>12} {'tolerance':>10}")
    for name, difference, tolerance in run(args.directory, args.device):
        verdict = "ok" if difference <= tolerance else "BEYOND TOLERANCE"
        failures += difference > tolerance
        print(f"{name:<44} {difference:>12.3g} {tolerance:>10.0e}  {verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
