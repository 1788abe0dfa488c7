"""Benchmark retrieval-augmented entity recognition (retrieval/) at catalogue scale.

    python benchmarks/retrieval.py [--entities 100000,1000000] [--dim 256] [--names 100000] [--device cpu]

Index: for each catalogue size, synthetic unit embeddings (random, of ``--dim`` dimensions) stand for
the encoder's; each query is one entity's embedding plus Gaussian noise (its planted neighbour).
Reports the build time (``build_index``: chunked, written to a parts folder, assembled and saved, the
encoder's cost left out) and its peak memory, the index's size, the latency of an exact top-k search
for one query and for a batch, and recall@1 and recall@k of the planted neighbours. The encoder's own
cost, which dominates a real build, is given apart: entity texts embedded per second by unify_tiny.

Decoding: a catalogue of ``--names`` made-up names (benchmarks/trie.py's), beam search of an untrained
unify_tiny over a batch of image queries, constrained by the global trie of every name, then by
per-sample tries of ``--k`` random candidates each (the per-batch trie build included); output tokens
per second for both. Prints tables headed by the machine.
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch
from common import ROOT, best_time, demo_vocabulary, machine_line, peak_memory, print_table, untrained_model
from fairseq.sequence_generator import SequenceGenerator
from trie import device_sync, synthetic_names

from retrieval.candidates import RetrievedCandidates  # noqa: E402  (common puts the repository on the path)
from retrieval.embedding import pooled
from retrieval.index import EntityIndex, build_index
from decoding.constraints import ConstrainedEnsemble
from evaluation.metrics import recall_at_k
from decoding.trie import TokenTrie

FINGERPRINT = {"catalogue": "synthetic", "weights": "random", "texts": {}}
PATCH = 64


def unit_rows(count, dim, rng, chunk=1 << 17):
    rows = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, chunk):
        block = rng.standard_normal((min(chunk, count - start), dim), dtype=np.float32)
        rows[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return torch.from_numpy(rows)


def index_row(count, args, device, rng):
    """One catalogue size's figures."""
    rows = unit_rows(count, args.dim, rng)
    with tempfile.TemporaryDirectory(prefix="uniground-bench-") as folder:
        path = os.path.join(folder, "entities.npz")
        start = time.perf_counter()
        build_index(lambda positions: rows[positions[0]:positions[-1] + 1], count, FINGERPRINT, args.chunk, path)
        build_s = time.perf_counter() - start
        os.remove(path)
        memory = peak_memory(lambda: build_index(lambda p: rows[p[0]:p[-1] + 1], count, FINGERPRINT, args.chunk),
                             torch.device("cpu"))
    index = EntityIndex(rows.to(device), FINGERPRINT)
    planted = torch.from_numpy(rng.integers(0, count, size=args.queries)).to(device)
    noise = torch.randn(args.queries, args.dim, device=device) * args.noise / args.dim ** 0.5
    queries = torch.nn.functional.normalize(index.embeddings[planted] + noise, dim=1)
    sync = device_sync(device)
    one_s = best_time(lambda: index.search(queries[:1], args.k), args.repeats, sync=sync)
    batch_s = best_time(lambda: index.search(queries[:args.batch], args.k), args.repeats, sync=sync)
    _, found = index.search(queries, args.k)
    ranks = [row.index(p) + 1 if p in row else None for row, p in zip(found.tolist(), planted.tolist())]
    recall = recall_at_k(ranks, [1, args.k])
    return [f"{count:,}", f"{build_s:.2f}", f"{memory / 2 ** 20:.0f}", f"{rows.numel() * 4 / 2 ** 20:.0f}",
            f"{one_s * 1e3:.2f}", f"{batch_s * 1e3:.2f}", f"{recall['recall@1']:.3f}",
            f"{recall[f'recall@{args.k}']:.3f}"]


def encoder_rate(vocab, model, device, count=512, batch=256):
    """Entity texts embedded per second by the model's encoder (texts of ~12 tokens)."""
    eos, pad = vocab.dictionary.eos(), vocab.dictionary.pad()
    texts = [f"{name}; a made-up place" for name in synthetic_names(count, 3)]
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(ids + [eos]) for ids in vocab.encode_outputs(texts)],
                                             batch_first=True, padding_value=pad).to(device)

    def embed():
        with torch.no_grad():
            for start in range(0, count, batch):
                part = tokens[start:start + batch]
                pooled(model.encoder(part, part.ne(pad).sum(1)))
    return count / best_time(embed, 2, sync=device_sync(device))


def decoding_rows(vocab, model, args, device):
    """Output tokens per second of beam search under the global trie and under per-sample tries."""
    eos = vocab.dictionary.eos()
    names = synthetic_names(args.names, 1)
    choice_tokens = [ids + [eos] for ids in vocab.encode_outputs(names)]
    trie = TokenTrie(choice_tokens, eos, len(vocab.dictionary))
    rng = np.random.default_rng(2)
    metas = [{"candidates": rng.choice(args.names, size=args.k, replace=False).tolist()} for _ in range(args.batch)]
    per_sample = RetrievedCandidates(trie, choice_tokens, [[p] for p in range(args.names)])
    source = torch.tensor([vocab.encode_text(" which entity is this?") + [eos]] * args.batch, device=device)
    sample = {"net_input": {"src_tokens": source, "src_lengths": torch.full((args.batch,), source.size(1)),
                            "image": torch.randn(args.batch, 3, PATCH, PATCH, device=device),
                            "image_present": torch.ones(args.batch, dtype=torch.bool, device=device)}}
    rows = []
    for label, constraint in (("global trie", trie), (f"per-sample tries (k={args.k})", per_sample)):
        ensemble = ConstrainedEnsemble([model], constraint)
        generator = SequenceGenerator(ensemble, vocab.dictionary, beam_size=args.beam, max_len_b=trie.max_length,
                                      normalize_scores=False)
        generated = []

        def generate():
            ensemble.bind(metas)
            with torch.no_grad():
                generated[:] = generator.generate([model], sample, bos_token=vocab.decoder_start)
        seconds = best_time(generate, max(2, args.repeats // 10), sync=device_sync(device))
        tokens = sum(len(hyps[0]["tokens"]) for hyps in generated)
        rows.append([label, f"{seconds * 1e3:.0f}", f"{tokens / seconds:.0f}"])
    return rows, trie


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", default="100000,1000000", help="catalogue sizes of the index benchmark")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimensions")
    parser.add_argument("--chunk", type=int, default=65536, help="entities per index chunk")
    parser.add_argument("--queries", type=int, default=1000, help="queries scored for recall")
    parser.add_argument("--noise", type=float, default=1.5, help="norm of a query's noise around its entity")
    parser.add_argument("--batch", type=int, default=32, help="queries per batch (search and decoding)")
    parser.add_argument("--k", type=int, default=10, help="entities retrieved per query")
    parser.add_argument("--names", type=int, default=100_000, help="catalogue names of the decoding benchmark")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--vocab-dir", default=os.path.join(ROOT, "dataset/demo/vocab"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    index_rows = [index_row(int(n), args, device, rng) for n in args.entities.split(",")]
    vocab = demo_vocabulary(args.vocab_dir)
    model = untrained_model(vocab, "unify_tiny", PATCH, device, dropout=0.0)
    rate = encoder_rate(vocab, model, device)
    decoding, trie = decoding_rows(vocab, model, args, device)

    print(f"{machine_line(device)}; device {device}")
    print(f"\nentity index: {args.dim}-d unit embeddings, exact inner-product search (torch); queries are entities "
          f"plus noise of norm {args.noise}; search time best of {args.repeats}")
    print_table(["entities", "build s", "build peak MiB", "index MiB", "search 1 query ms",
                 f"search {args.batch} queries ms", "recall@1", f"recall@{args.k}"], index_rows)
    print(f"\nencoder cost of a real build: unify_tiny embeds {rate:,.0f} entity texts/s "
          f"({1e6 / rate / 60:.1f} min for 10^6 entities on this device)")
    print(f"\nbeam search, {args.batch} image queries x beam {args.beam}, untrained unify_tiny, {args.names:,} names "
          f"({trie.num_nodes:,} trie nodes):")
    print_table(["constraint", "batch ms", "output tokens/s"], decoding)


if __name__ == "__main__":
    main()
