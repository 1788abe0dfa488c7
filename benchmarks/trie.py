"""Benchmark the token trie (decoding/trie.py) at catalogue scale.

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
import time
import tracemalloc

import numpy as np
import torch
from common import ROOT, best_time, demo_vocabulary, machine_line, print_table, untrained_model
from fairseq.sequence_generator import EnsembleModel

from decoding.trie import TokenTrie  # noqa: E402  (common puts the repository on the path)

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


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def device_sync(device):
    """What waits for ``device``'s queued work before a clock is read (nothing on the CPU)."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None


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
    sync = device_sync(device)
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

    model = untrained_model(vocab, "unify_tiny", PATCH, device, dropout=0.0)  # its own sizes, as on the demo
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
        walk_s = best_time(lambda: plain.allowed(prefix, None), args.repeats, sync=sync)
        memo_s = best_time(lambda: trie.allowed(prefix, None), args.repeats, sync=sync,
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

        decoder_s = best_time(decoder_step, max(5, args.repeats // 3), sync=sync, setup=fresh_state)
        lprobs = torch.randn(len(picked), vocab_size, device=device)
        mask_s = best_time(lambda: lprobs.masked_fill(~trie.allowed(prefix, None), float("-inf")), args.repeats,
                           sync=sync, setup=lambda: trie.allowed(previous[shuffle].contiguous(), None))
        rows.append((step, f"{walk_s * 1e3:.3f}", f"{memo_s * 1e3:.3f}", f"{mask_s * 1e3:.3f}",
                     f"{decoder_s * 1e3:.3f}", f"{mask_s / decoder_s:.2f}"))

    print(f"{machine_line(device)}; device {device}")
    print(f"trie of {args.names:,} {source}: {int(lengths.mean() * 10) / 10} tokens a name on average "
          f"(max {lengths.max()}), vocabulary {vocab_size}")
    print_table(["make sequences s", "build s", "nodes", "kept arrays MiB", "tracemalloc peak (build) MiB",
                 "RSS kept after build MiB"],
                [[f"{tokenise_s:.1f}", f"{build_s:.1f}", f"{trie.num_nodes:,}", f"{trie.nbytes() / 2 ** 20:.0f}",
                  f"{peak / 2 ** 20:.0f}", f"{rss_growth / 2 ** 20:.0f}"]])
    print(f"\nper decoding step, {BATCH} x beam {BEAM} = {BATCH * BEAM} hypotheses (best of {args.repeats} runs):")
    print_table(["step", "allowed(), full walk ms", "allowed(), memoised ms", "memoised + masked_fill ms",
                 "unify_tiny decoder step ms", "constraint / decoder"], rows)


if __name__ == "__main__":
    main()
