"""Decoding constrained to each sample's retrieved candidates.

``RetrievedCandidates`` is the task's constraint under retrieval. Bound to a batch whose metas carry
``candidates`` (catalogue positions), it becomes ``SampleTries``: one ``TokenTrie`` over every
candidate name and alias of every sample, each sequence led by a token ``V + sample`` beyond the
vocabulary, so that one vectorised walk serves all hypotheses and a hypothesis can only follow the
names of its own sample. Bound to a batch without candidates (training's loss masks), it is the
global trie of every name.
"""
import torch

from decoding.constraints import Constraint
from decoding.trie import TokenTrie


class RetrievedCandidates(Constraint):
    def __init__(self, trie, choice_tokens, entity_choices):
        """``trie``: every name and alias; ``choice_tokens[c]``: choice ``c``'s tokens and EOS;
        ``entity_choices[p]``: the choices (name, then aliases) of the entity at catalogue position ``p``."""
        self.trie, self.choice_tokens, self.entity_choices = trie, choice_tokens, entity_choices

    def for_batch(self, contexts):
        if not any("candidates" in context for context in contexts):
            return self.trie
        sequences = [[c for p in context["candidates"] for c in self.entity_choices[p]] for context in contexts]
        return SampleTries([[self.choice_tokens[c] for c in choices] for choices in sequences],
                           self.trie.eos, self.trie.vocab_size)

    def allowed(self, prefix, rows):
        return self.trie.allowed(prefix, rows)


class SampleTries(Constraint):
    """Per-sample tries: ``sequences[i]`` are sample i's allowed outputs, each ending in EOS."""

    def __init__(self, sequences, eos, vocab_size):
        self.vocab_size = vocab_size
        led = [[vocab_size + i] + list(tokens) for i, sample in enumerate(sequences) for tokens in sample]
        self.trie = TokenTrie(led, eos, vocab_size + len(sequences))

    def allowed(self, prefix, rows):
        led = torch.cat([(rows + self.vocab_size).unsqueeze(1).to(prefix), prefix], dim=1)
        return self.trie.allowed(led, rows)[:, :self.vocab_size]
