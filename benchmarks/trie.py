"""Benchmark the token trie (utils/trie.py) at catalogue scale.

    python benchmarks/trie.py [--names 1000000] [--vocab-dir dataset/demo/vocab] [--device cpu]

Builds a trie of ``--names`` synthetic entity names (one to four made-up words, tokenised
with the demo SentencePiece vocabulary; ``--random-ids`` uses random token ids of the same
lengths instead), reports build time and memory (tracemalloc peak during the build, bytes the
trie keeps, RSS growth), then the cost of one ``allowed()`` call for a batch of 32 x beam 5
hypotheses at several decoding steps, with and without the memoised walk, beside one
unconstrained decoder step of unify_tiny (fairseq's EnsembleModel.forward_decoder, as beam
search calls it) on the same hypotheses. Prints a table headed by the machine.
"""
import argparse
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from argparse import Namespace
from types import SimpleNamespace

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.logs import set_up_logging  # noqa: E402

if __name__ == "__main__":
    set_up_logging()  # before fairseq is imported (utils/logs.py says why)

from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY  # noqa: E402
from fairseq.sequence_generator import EnsembleModel  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import models  # noqa: E402,F401  (registers the architectures)
from utils.trie import TokenTrie  # noqa: E402
from utils.vocab import Vocabulary  # noqa: E402

SYLLABLES = ("ka", "ro", "ven", "mi", "stal", "dor", "el", "an", "tor", "ri", "sa", "bel", "mon", "ta", "gu", "lin",
             "quar", "zo", "pe", "nith", "ar", "os", "um", "cre", "sh", "ald", "wyn", "fer", "ix", "o")
BATCH, BEAM = 32, 5
PATCH = 64  # the demo's image side
RANDOM_MEAN_LENGTH = 6  # tokens a name with a real 8k-piece vocabulary (names of 1-4 words)


def synthetic_names(count, seed):
    """Made-up names of 1-4 words of 2-4 syllables (many share prefixes), lower case like the demo
    vocabulary's training text, so that they take as many pieces as real names in a real vocabulary."""
    rng = np.random.default_rng(seed)
    words_per_name = rng.integers(1, 5, size=count)
    syllables = rng.integers(2, 5, size=int(words_per_name.sum()))
    picks = rng.integers(0, len(SYLLABLES), size=int(syllables.sum()))
    names, word, pick = [], 0, 0
    for n in words_per_name:
        words = []
        for _ in range(n):
            words.append("".join(SYLLABLES[p] for p in picks[pick:pick + syllables[word]]))
            pick += syllables[word]
            word += 1
        names.append(" ".join(words))
    return names


def demo_vocabulary(vocab_dir):
    """The demo vocabulary, built into a temporary folder from a small demo world if it is missing."""
    if os.path.exists(os.path.join(vocab_dir, "dict.txt")):
        return Vocabulary(vocab_dir)
    from preprocess import build_vocab, make_demo_data
    out = tempfile.mkdtemp(prefix="trie-bench-")
    make_demo_data.main(["--out", out, "--train-images", "300", "--valid-images", "1", "--train-videos", "0",
                         "--valid-videos", "0", "--train-audio", "0", "--valid-audio", "0", "--train-ie", "0",
                         "--valid-ie", "0"])
    build_vocab.main(["--input", f"{out}/caption_train.tsv:2", "--input", f"{out}/refcoco_train.tsv:2",
                      "--out-dir", f"{out}/vocab", "--vocab-size", "1000"])
    return Vocabulary(f"{out}/vocab")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def machine(device):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} with {torch.get_num_threads()} threads"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text


def timed(function, repeats, device, setup=None):
    """Best seconds of ``function()`` over ``repeats`` runs after one warm-up run (``setup()`` before
    each, untimed): the best run is the one least disturbed by other processes."""
    times = []
    for _ in range(repeats + 1):
        if setup is not None:
            setup()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.min(times[1:]))


def build_decoder_model(vocab, device):
    """unify_tiny at its own sizes, as run_scripts train it on the demo."""
    args = Namespace(arch="unify_tiny", dropout=0.0)
    ARCH_CONFIG_REGISTRY["unify_tiny"](args)
    model_cls = ARCH_MODEL_REGISTRY["unify_tiny"]
    cfg = OmegaConf.structured(model_cls.__dataclass)
    for key, value in vars(args).items():
        if key in cfg:
            cfg[key] = value
    cfg.patch_image_size, cfg.num_mel_bins = PATCH, 64
    task = SimpleNamespace(vocab=vocab, source_dictionary=vocab.dictionary, target_dictionary=vocab.dictionary)
    return model_cls.build_model(cfg, task).to(device).eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=1_000_000)
    parser.add_argument("--vocab-dir", default=os.path.join(ROOT, "dataset/demo/vocab"))
    parser.add_argument("--random-ids", action="store_true",
                        help="random token ids of realistic lengths instead of names tokenised with the demo vocabulary")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", default="0,1,2,4,8,16", help="decoding steps (prefix lengths) to time")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    vocab = demo_vocabulary(args.vocab_dir)
    eos, vocab_size = vocab.dictionary.eos(), len(vocab.dictionary)

    start = time.perf_counter()
    if args.random_ids:
        rng = np.random.default_rng(args.seed)
        first_text, first_bin = vocab.dictionary.nspecial, vocab.first_bin
        sizes = 1 + rng.poisson(RANDOM_MEAN_LENGTH - 1, size=args.names)
        sequences = [rng.integers(first_text, first_bin, size=n).tolist() + [eos] for n in sizes]
        source = f"random text-token ids, 1 + Poisson({RANDOM_MEAN_LENGTH - 1}) long"
    else:
        sequences = [ids + [eos] for ids in vocab.encode_outputs(synthetic_names(args.names, args.seed))]
        source = "made-up names, demo SentencePiece"
    tokenise_s = time.perf_counter() - start
    lengths = np.array([len(s) for s in sequences])

    rss_before = rss_bytes()
    start = time.perf_counter()
    trie = TokenTrie(sequences, eos, vocab_size)
    build_s = time.perf_counter() - start
    rss_growth = rss_bytes() - rss_before
    tracemalloc.start()
    again = TokenTrie(sequences, eos, vocab_size)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del again

    model = build_decoder_model(vocab, device)
    ensemble = EnsembleModel([model])
    source_tokens = torch.tensor([vocab.encode_text(" which entity is this?") + [eos]] * BATCH, device=device)
    with torch.no_grad():
        encoder_out = model.encoder(source_tokens, image=torch.randn(BATCH, 3, PATCH, PATCH, device=device),
                                    image_present=torch.ones(BATCH, dtype=torch.bool, device=device))
        order = torch.arange(BATCH, device=device).repeat_interleave(BEAM)
        encoder_outs = [model.encoder.reorder_encoder_out(encoder_out, order)]

    rng = np.random.default_rng(args.seed + 1)
    rows = []
    for step in (int(s) for s in args.steps.split(",")):
        long_enough = np.flatnonzero(lengths > step + 1)
        if not len(long_enough):
            continue
        picked = [sequences[i] for i in rng.choice(long_enough, size=BATCH * BEAM)]
        tokens = torch.tensor([[eos] + s[:step + 1] for s in picked], device=device)  # BOS, prefix, next token
        prefix, previous = tokens[:, 1:step + 1], tokens[:, 1:step]
        shuffle = torch.randperm(len(picked), device=device)  # beam search reorders hypotheses

        plain = TokenTrie.__new__(TokenTrie)
        plain.__dict__.update(trie.__dict__)
        plain.memoise, plain._cache = False, None
        walk_s = timed(lambda: plain.allowed(prefix, None), args.repeats, device)
        memo_s = timed(lambda: trie.allowed(prefix, None), args.repeats, device,
                       setup=lambda: trie.allowed(previous[shuffle].contiguous(), None))
        allowed = trie.allowed(prefix, None)
        assert allowed.any(1).all()

        states = {}

        def fresh_state():
            states["incremental"] = [torch.jit.annotate(dict, {})]
            with torch.no_grad():
                for t in range(1, step + 1):
                    ensemble.forward_decoder(tokens[:, :t], encoder_outs, states["incremental"])

        def decoder_step():
            with torch.no_grad():
                ensemble.forward_decoder(tokens[:, :step + 1], encoder_outs, states["incremental"])

        decoder_s = timed(decoder_step, max(5, args.repeats // 3), device, setup=fresh_state)
        lprobs = torch.randn(len(picked), vocab_size, device=device)
        mask_s = timed(lambda: lprobs.masked_fill(~trie.allowed(prefix, None), float("-inf")), args.repeats, device,
                       setup=lambda: trie.allowed(previous[shuffle].contiguous(), None))
        rows.append((step, walk_s, memo_s, mask_s, decoder_s))

    print(f"machine: {machine(device)}; device {device}")
    print(f"trie of {args.names:,} {source}: {int(lengths.mean() * 10) / 10} tokens a name on average "
          f"(max {lengths.max()}), vocabulary {vocab_size}")
    print("| make sequences | build | nodes | kept arrays | tracemalloc peak (build) | RSS kept after build |")
    print("|---|---|---|---|---|---|")
    print(f"| {tokenise_s:.1f} s | {build_s:.1f} s | {trie.num_nodes:,} | {trie.nbytes() / 2 ** 20:.0f} MiB "
          f"| {peak / 2 ** 20:.0f} MiB | {rss_growth / 2 ** 20:.0f} MiB |")
    print(f"\nper decoding step, {BATCH} x beam {BEAM} = {BATCH * BEAM} hypotheses (best of {args.repeats} runs):")
    print("| step | allowed(), full walk | allowed(), memoised | memoised + masked_fill | unify_tiny decoder step "
          "| constraint / decoder |")
    print("|---|---|---|---|---|---|")
    for step, walk_s, memo_s, mask_s, decoder_s in rows:
        print(f"| {step} | {walk_s * 1e3:.3f} ms | {memo_s * 1e3:.3f} ms | {mask_s * 1e3:.3f} ms "
              f"| {decoder_s * 1e3:.3f} ms | {mask_s / decoder_s:.2f} |")


if __name__ == "__main__":
    main()
