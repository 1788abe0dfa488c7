"""Constrained decoding: one mechanism for every output rule.

A constraint answers one question, vectorised over hypotheses: given the
tokens generated so far, which tokens may come next? The same answer masks
the logits in beam search (through ``ConstrainedEnsemble``, so fairseq's
SequenceGenerator runs unchanged) and the label-smoothed loss in training.
"""
import abc

import torch
from fairseq.sequence_generator import EnsembleModel


class Constraint(abc.ABC):
    @abc.abstractmethod
    def allowed(self, prefix, rows):
        """prefix: N x t generated tokens (no BOS); rows: N sample indices in the batch.
        Returns an N x V boolean mask of the tokens allowed next."""

    def training_masks(self, target):
        """B x T x V masks for teacher forcing: position t sees the gold prefix target[:, :t]."""
        rows = torch.arange(target.size(0), device=target.device)
        return torch.stack([self.allowed(target[:, :t], rows) for t in range(target.size(1))], dim=1)


class FixedLengthRange(Constraint):
    """Exactly ``length`` tokens from the id range [first, first + count), then EOS.

    A box is four bin tokens; a time span two time tokens.
    """

    def __init__(self, first, count, length, eos, vocab_size):
        self.length, self.eos = length, eos
        self.in_range = torch.zeros(vocab_size, dtype=torch.bool)
        self.in_range[first:first + count] = True
        self.only_eos = torch.zeros(vocab_size, dtype=torch.bool)
        self.only_eos[eos] = True

    def allowed(self, prefix, rows):
        mask = self.in_range if prefix.size(1) < self.length else self.only_eos
        return mask.to(prefix.device).expand(prefix.size(0), -1)


class ConstrainedEnsemble(EnsembleModel):
    """fairseq's EnsembleModel whose next-token log-probabilities obey a constraint."""

    def __init__(self, models, constraint):
        super().__init__(models)
        self.constraint = constraint

    def forward_decoder(self, tokens, encoder_outs, incremental_states, temperature: float = 1.0):
        lprobs, attn = super().forward_decoder(tokens, encoder_outs, incremental_states, temperature)
        rows = encoder_outs[0]["sample_index"]
        allowed = self.constraint.allowed(tokens[:, 1:], rows)
        return lprobs.masked_fill(~allowed, float("-inf")), attn
