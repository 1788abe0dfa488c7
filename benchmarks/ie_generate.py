"""Cost of the IE grammar constraint (ie/grammar.py) in beam search.

    python benchmarks/ie_generate.py [--vocab-dir dataset/demo/vocab] [--text-pieces 8000] [--device cpu]

Generates IE targets for a batch of 16 samples with beam 5 from unify_tiny at its own sizes with
random weights (an untrained model: the grammar, not the model, decides what is written), once
with fairseq's plain EnsembleModel and once through ConstrainedEnsemble with the grammar, with
and without its memoised states. The samples mix what IE tasks see: text only (mentions copied
from ~30 words), text with an image, text with a video clip, an image alone (free-text mentions),
each offered a schema of entity, relation, event and role labels. Every run is held to the same
number of decoding steps (``--max-len``; the unconstrained run with EOS forbidden until then, the
constrained one under the grammar's length budget). Beam search drops finished sentences, so the
runs score different numbers of hypotheses per step: rows compare per hypothesis token (tokens/s),
and the constraint's own time (inside ``allowed``) is reported as its share of the wall time.
``--text-pieces`` pads the demo dictionary with unused pieces to a realistic vocabulary size (the
masks and the output layer grow with it). Also times ``training_masks`` for the batch's gold
targets (collation) and ``grammar_context`` per sample. Prints a table headed by the machine.
"""
import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from common import ROOT, best_time, demo_vocabulary, machine_line, print_table, untrained_model
from fairseq.data import data_utils
from fairseq.sequence_generator import EnsembleModel, SequenceGenerator

from data.vocab import SPM_FILE, Vocabulary, write_dictionary  # noqa: E402
from decoding.constraints import ConstrainedEnsemble  # noqa: E402
from geometry.codec import LocationCodec  # noqa: E402
from ie.grammar import IEGrammar, grammar_context, label_table  # noqa: E402
from ie.records import Argument, Entity, Event, Ground, Mention, Relation  # noqa: E402
from ie.tokens import Frame, serialise  # noqa: E402
from tasks.base import collate_media  # noqa: E402  (common puts the repository on the path)

BATCH, BEAM, PATCH = 16, 5, 64
WORDS = ("a man rides a horse near the river while two dogs bark at the red car and a woman in a blue coat "
         "walks past the old bridge where the market opens at noon and children play with a ball").split()
SCHEMA = {"entity": ["person", "animal", "vehicle", "location", "organisation", "object"],
          "relation": ["rides", "located in", "part of", "owns"],
          "event": ["movement", "attack", "meeting"], "role": ["agent", "place", "vehicle", "target"]}
MIXES = ("text", "text+image", "text+video", "image")


def padded_vocabulary(vocab_dir, vocab, text_pieces):
    """``vocab``'s SentencePiece model with a dictionary padded by never-used pieces to ``text_pieces``
    text pieces (a temporary folder): a realistic vocabulary size for the masks and the output layer."""
    pieces = [vocab.dictionary[i] for i in range(vocab.dictionary.nspecial, vocab.first_bin)]
    pieces += [f"\u2581unused{i}" for i in range(max(0, text_pieces - len(pieces)))]
    folder = tempfile.mkdtemp(prefix="ie-bench-")
    shutil.copy(os.path.join(vocab_dir, SPM_FILE), os.path.join(folder, SPM_FILE))
    write_dictionary(pieces, os.path.join(folder, "dict.txt"), vocab.num_bins, vocab.num_time_bins)
    return Vocabulary(folder, vocab.num_bins, vocab.num_time_bins)


def samples(vocab, codec, rng):
    """BATCH samples: (source tensor, meta with its context, media entries, gold target ids)."""
    out = []
    for i in range(BATCH):
        mix = MIXES[i % len(MIXES)]
        words = [WORDS[j] for j in rng.integers(0, len(WORDS), size=30)]
        text = " ".join(words) if mix != "image" else None
        prompt = vocab.encode_text(" extract records: " + ", ".join(l for ls in SCHEMA.values() for l in ls))
        text_ids = vocab.encode_text(" " + text) if text else []
        image, clip = "image" in mix, "video" in mix
        context = grammar_context(vocab, SCHEMA, text_ids or None, has_image=image, has_clip=clip)
        frame = Frame((PATCH, PATCH) if image else None, 10.0 if clip else None)
        ground = Ground("box", (4.0, 6.0, 40.0, 50.0)) if image else Ground("span", (1.0, 4.0)) if clip else None
        mention = lambda k: Mention(words[k] if text else "thing", ground)  # noqa: E731
        records = [Entity("person", mention(1)), Relation("rides", mention(1), Mention(words[4] if text else "horse")),
                   Event("movement", mention(2), (Argument("agent", mention(1)), Argument("place", mention(5))))]
        target = serialise(records, vocab, codec, frame, source_ids=text_ids or None)
        media = {}
        if image:
            media["image"] = torch.randn(3, PATCH, PATCH)
        if clip:
            media["video"], media["video_times"] = torch.randn(4, 3, 32, 32), torch.linspace(0.1, 0.9, 4)
        out.append((torch.tensor(prompt + text_ids + [vocab.dictionary.eos()]), {"ie_context": context}, media,
                    target))
    return out


def batch_of(items, vocab, device):
    pad, eos = vocab.dictionary.pad(), vocab.dictionary.eos()
    sources = [s for s, _, _, _ in items]
    net_input = {"src_tokens": data_utils.collate_tokens(sources, pad, eos),
                 "src_lengths": torch.tensor([len(s) for s in sources]), **collate_media([m for _, _, m, _ in items])}
    net_input = {k: v.to(device) for k, v in net_input.items()}
    return {"id": torch.arange(len(items)), "net_input": net_input, "meta": [m for _, m, _, _ in items]}


class Counted:
    """Counts the hypotheses each decoder step scores and times the constraint's share."""

    def __init__(self, ensemble):
        self.rows = self.steps = 0
        self.constraint_s = 0.0
        forward = ensemble.forward_decoder

        def counted(tokens, *args, **kwargs):
            self.rows += tokens.size(0)
            self.steps += 1
            return forward(tokens, *args, **kwargs)

        ensemble.forward_decoder = counted
        if isinstance(ensemble, ConstrainedEnsemble):
            allowed = ensemble.constraint.allowed

            def timed_allowed(prefix, rows):
                start = time.perf_counter()
                mask = allowed(prefix, rows)
                self.constraint_s += time.perf_counter() - start
                return mask

            ensemble.constraint.allowed = timed_allowed


def run(model, vocab, batch, max_len, grammar=None):
    """One beam search: (seconds, hypothesis tokens scored, decoder steps, seconds in the constraint)."""
    if grammar is None:
        ensemble = EnsembleModel([model])
        generator = SequenceGenerator(ensemble, vocab.dictionary, beam_size=BEAM, max_len_b=max_len, min_len=max_len)
    else:
        ensemble = ConstrainedEnsemble([model], grammar)
        ensemble.bind(batch["meta"])
        generator = SequenceGenerator(ensemble, vocab.dictionary, beam_size=BEAM, max_len_b=max_len)
    counter = Counted(ensemble)
    start = time.perf_counter()
    with torch.no_grad():
        hypotheses = generator.generate([model], batch)
    seconds = time.perf_counter() - start
    assert len(hypotheses) == BATCH
    return seconds, counter.rows, counter.steps, counter.constraint_s, hypotheses


def best_of(repeats, call):
    """The record of the fastest of ``repeats`` runs after a warm-up (its counts, not only its seconds)."""
    results = [call() for _ in range(repeats + 1)][1:]
    return min(results, key=lambda r: r[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-dir", default=os.path.join(ROOT, "dataset/demo/vocab"))
    parser.add_argument("--text-pieces", type=int, default=0,
                        help="pad the dictionary to this many text pieces (0: the demo vocabulary as is)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-len", type=int, default=64, help="decoding steps (tokens before EOS)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    vocab = demo_vocabulary(args.vocab_dir)
    if args.text_pieces:
        vocab = padded_vocabulary(args.vocab_dir, vocab, args.text_pieces)
    codec = LocationCodec()
    torch.manual_seed(args.seed)
    model = untrained_model(vocab, "unify_tiny", PATCH, device, dropout=0.0)  # its own sizes, as on the demo
    items = samples(vocab, codec, np.random.default_rng(args.seed))
    batch = batch_of(items, vocab, device)
    grammar = IEGrammar(vocab, max_length=args.max_len, max_vertices=codec.max_poly_vertices)
    plain_grammar = IEGrammar(vocab, max_length=args.max_len, max_vertices=codec.max_poly_vertices, memoise=False)

    rows = [("unconstrained (EnsembleModel)",) + best_of(
                args.repeats, lambda: run(model, vocab, batch, args.max_len))[:4],
            ("IE grammar, memoised states",) + best_of(
                args.repeats, lambda: run(model, vocab, batch, args.max_len, grammar))[:4],
            ("IE grammar, states walked every step",) + best_of(
                args.repeats, lambda: run(model, vocab, batch, args.max_len, plain_grammar))[:4]]

    print(f"{machine_line(device)}; device {device}")
    print(f"unify_tiny (embed 128, 3+3 layers), random init; batch {BATCH}, beam {BEAM}, {args.max_len} steps; "
          f"vocabulary {len(vocab.dictionary)} tokens ({vocab.first_bin - vocab.dictionary.nspecial} text pieces); "
          f"best of {args.repeats} after a warm-up")
    base_rate = rows[0][2] / rows[0][1]
    print_table(["generation", "wall s", "steps", "hyp tokens", "tokens/s", "ms/step", "constraint ms/step",
                 "constraint share", "tokens/s vs plain"],
                [[name, f"{seconds:.3f}", steps, tokens, f"{tokens / seconds:.0f}", f"{1000 * seconds / steps:.2f}",
                  f"{1000 * constraint_s / steps:.2f}", f"{100 * constraint_s / seconds:.1f}%",
                  f"{100 * (tokens / seconds / base_rate - 1):+.0f}%" if k else "-"]
                 for k, (name, seconds, tokens, steps, constraint_s) in enumerate(rows)])

    steps_table(grammar, batch, rows_hypotheses(model, vocab, batch, args.max_len, grammar), args.repeats)

    pad, eos = vocab.dictionary.pad(), vocab.dictionary.eos()
    target = data_utils.collate_tokens([torch.tensor(t + [eos]) for _, _, _, t in items], pad, eos)
    bound = grammar.for_batch(batch["meta"])
    masks_s = best_time(lambda: grammar.for_batch(batch["meta"]).training_masks(target), 5)
    assert bound.training_masks(target).gather(2, target[:, :, None]).all()
    print(f"training_masks, {BATCH} gold targets of {target.size(1)} tokens: {1000 * masks_s:.1f} ms per batch")
    sentence = " ".join(WORDS[:30])
    context = lambda: grammar_context(vocab, SCHEMA, vocab.encode_text(sentence))  # noqa: E731
    miss = best_time(context, 5, setup=label_table.cache_clear)
    hit = best_time(context, 20)
    print(f"grammar_context per sample: {1e6 * hit:.0f} us with its schema's label tries cached, "
          f"{1e6 * miss:.0f} us building them")


def rows_hypotheses(model, vocab, batch, max_len, grammar):
    """Every finished hypothesis of one constrained run, with its sample's row."""
    hypotheses = run(model, vocab, batch, max_len, grammar)[4]
    return [(row, hyp["tokens"][:-1].tolist()) for row, hyps in enumerate(hypotheses) for hyp in hyps]


def steps_table(grammar, batch, hypotheses, repeats):
    """allowed() for the BATCH x BEAM hypotheses at several steps: memoised (the previous step's
    prefixes, in another beam order, were seen last) against walking every prefix from the start."""
    bound = grammar.for_batch(batch["meta"])
    walker = grammar.for_batch(batch["meta"])
    walker.memoise = False  # this binding only
    rows = torch.tensor([row for row, _ in hypotheses])
    print(f"allowed() for {len(hypotheses)} hypotheses (the constrained run's), ms per call, best of {5 * repeats}")
    table = []
    for step in (1, 8, 16, 32, 48, 63):
        if step > grammar.max_length:
            break
        prefix = torch.tensor([(tokens + [grammar.eos] * step)[:step] for _, tokens in hypotheses])
        previous, order = prefix[:, :-1], torch.randperm(len(hypotheses))
        memo = best_time(lambda: bound.allowed(prefix, rows), 5 * repeats,
                         setup=lambda: bound.allowed(previous[order], rows[order]))
        walk = best_time(lambda: walker.allowed(prefix, rows), 5 * repeats)
        assert torch.equal(bound.allowed(prefix, rows), walker.allowed(prefix, rows))
        table.append([step, f"{1000 * memo:.2f}", f"{1000 * walk:.2f}"])
    print_table(["step", "memoised", "walked"], table)


if __name__ == "__main__":
    main()
