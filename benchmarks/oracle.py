"""UniGround's OFA against outputs that OFA's own code computed, tensor by tensor.

    .venv/bin/python benchmarks/oracle.py DIR [--device cpu|cuda] [--threads N]

DIR is laid out like ``../shared/data/ofa-oracle``: ``ofa_*.pt`` (an OFA checkpoint, with or
without its index buffers), ``inputs.pt``, ``expected.pt`` and ``meta.json`` (the vocabulary's
bin ids). The checkpoint loads through ``models.ofa.load_ofa_model``, the path a user's
checkpoint takes. Prints each tensor's max abs difference beside its tolerance, and the
difference between this implementation's incremental and full decoding; exits 1 when any is
beyond its tolerance or a token differs. Greedy decoding follows the fixture's rule: sample 0
takes the best bin at steps 1-4, then ``</s>``, then pads; every other sample the best token.
"""
import argparse
import glob
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.ofa import load_ofa_model  # noqa: E402

TOLERANCES = {
    "resnet_features": 1e-3,
    "encoder_out": 1e-4,
    "encoder_position_embeddings": 1e-4,
    "decoder_logits": 1e-5,
    "greedy_step_logits": 1e-5,
    "greedy_step_logits_incremental": 1e-5,
}
EXACT = ("encoder_padding_mask", "greedy_tokens", "greedy_tokens_incremental")
BIN_STEPS = 4  # sample 0's box
BOS, PAD, EOS = 0, 1, 2


def next_tokens(logits, step, bins):
    """The greedy rule: sample 0 is a box (four bins, then </s>, then pads); the others are free."""
    tokens = logits.argmax(-1)
    if step <= BIN_STEPS:
        tokens[0] = bins[0] + logits[0, bins[0]:bins[1] + 1].argmax()
    else:
        tokens[0] = EOS if step == BIN_STEPS + 1 else PAD
    return tokens


def greedy(model, encoder_out, batch, steps, bins, incremental):
    """Tokens (B x steps+1, from <s>) and each step's last-position logits (steps x B x V)."""
    prev = torch.full((batch, 1), BOS, dtype=torch.long, device=encoder_out["encoder_out"][0].device)
    state = {} if incremental else None
    step_logits = []
    for step in range(1, steps + 1):
        logits = model.decoder(prev, encoder_out=encoder_out, incremental_state=state)[0][:, -1]
        step_logits.append(logits)
        prev = torch.cat([prev, next_tokens(logits, step, bins)[:, None]], dim=1)
    return prev, torch.stack(step_logits)


def compute(model, inputs, steps, bins):
    """This implementation's value of every tensor that ``expected.pt`` holds."""
    with torch.no_grad():
        images = {"patch_images": inputs["patch_images"], "patch_masks": inputs["patch_masks"]}
        encoder_out = model.encoder(inputs["src_tokens"], inputs["src_lengths"], **images)
        logits = model.decoder(inputs["prev_output_tokens"], encoder_out=encoder_out)[0]
        batch = inputs["src_tokens"].size(0)
        tokens, step_logits = greedy(model, encoder_out, batch, steps, bins, incremental=False)
        tokens_incremental, step_logits_incremental = greedy(model, encoder_out, batch, steps, bins, incremental=True)
        return {
            "resnet_features": model.encoder.embed_images(inputs["patch_images"]),
            "encoder_out": encoder_out["encoder_out"][0],
            "encoder_padding_mask": encoder_out["encoder_padding_mask"][0],
            "encoder_position_embeddings": encoder_out["position_embeddings"][0],
            "decoder_logits": logits,
            "greedy_tokens": tokens,
            "greedy_step_logits": step_logits,
            "greedy_tokens_incremental": tokens_incremental,
            "greedy_step_logits_incremental": step_logits_incremental,
        }


def max_difference(actual, expected):
    if actual.shape != expected.shape:
        return float("inf")
    if actual.dtype in (torch.bool, torch.long) or expected.dtype in (torch.bool, torch.long):
        return float(torch.ne(actual.cpu(), expected).sum())  # count of differing entries
    return (actual.cpu().double() - expected.double()).abs().max().item()


def comparisons(actual, expected):
    """(name, difference, tolerance) for each expected tensor, then incremental against full decoding."""
    rows = [(name, max_difference(actual[name], expected[name]), TOLERANCES.get(name, 0.0)) for name in expected]
    rows.append(("incremental vs full: step logits",
                 max_difference(actual["greedy_step_logits_incremental"], actual["greedy_step_logits"]), 1e-5))
    rows.append(("incremental vs full: tokens",
                 max_difference(actual["greedy_tokens_incremental"], actual["greedy_tokens"]), 0.0))
    return rows


def run(directory, device="cpu"):
    checkpoints = sorted(glob.glob(os.path.join(directory, "ofa_*.pt")))
    if len(checkpoints) != 1:
        raise SystemExit(f"{directory}: expected one ofa_*.pt checkpoint, found {len(checkpoints)}")
    with open(os.path.join(directory, "meta.json")) as f:
        bins = json.load(f)["vocab"]["bins"]
    inputs = torch.load(os.path.join(directory, "inputs.pt"), weights_only=True)
    expected = torch.load(os.path.join(directory, "expected.pt"), weights_only=True)
    model = load_ofa_model(checkpoints[0]).to(device)
    inputs = {key: value.to(device) for key, value in inputs.items()}
    steps = expected["greedy_tokens"].size(1) - 1
    return comparisons(compute(model, inputs, steps, bins), expected)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (OFA's outputs were computed on one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    failures = 0
    print(f"{'tensor':<36} {'max abs diff':>12} {'tolerance':>10}")
    for name, difference, tolerance in run(args.directory, args.device):
        verdict = "ok" if difference <= tolerance else "BEYOND TOLERANCE"
        failures += difference > tolerance
        print(f"{name:<36} {difference:>12.3g} {tolerance:>10.0e}  {verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
