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

    def for_batch(self, contexts):
        """The constraint bound to one batch: ``contexts`` are its samples' metas, in batch order
        (the ``rows`` of ``allowed`` index them). A constraint that is the same for every sample
        is its own binding."""
        return self

    def with_max_length(self, max_length):
        """The constraint for a generator that stops after ``max_length`` tokens: one whose outputs
        can always end in time. A rule whose outputs are short anyway is its own."""
        return self

    def training_masks(self, target):
        """B x T x V masks for teacher forcing: position t sees the gold prefix target[:, :t]."""
        rows = torch.arange(target.size(0), device=target.device)
        return torch.stack([self.allowed(target[:, :t], rows) for t in range(target.size(1))], dim=1)


class FixedLengthRange(Constraint):
    """Exactly ``length`` tokens from the id range [first, first + count), then EOS.

    ``not_below`` maps a position to an earlier one whose token it may not be
    below: a box's x1 and y1 are not left of or above x0 and y0 ({2: 0, 3: 1}),
    a time span ends no earlier than it starts ({1: 0}). Ids within the range
    are in coordinate order, so the rule is a comparison of ids.
    """

    def __init__(self, first, count, length, eos, vocab_size, not_below=None):
        self.length, self.eos = length, eos
        self.not_below = dict(not_below or {})
        self.in_range = torch.zeros(vocab_size, dtype=torch.bool)
        self.in_range[first:first + count] = True
        self.only_eos = torch.zeros(vocab_size, dtype=torch.bool)
        self.only_eos[eos] = True

    def allowed(self, prefix, rows):
        step = prefix.size(1)
        if step >= self.length:
            return self.only_eos.to(prefix.device).expand(prefix.size(0), -1)
        mask = self.in_range.to(prefix.device).expand(prefix.size(0), -1)
        if step in self.not_below:
            ids = torch.arange(mask.size(1), device=prefix.device)
            mask = mask & (ids[None, :] >= prefix[:, self.not_below[step], None])
        return mask


class LengthLimit(Constraint):
    """Any token, then only EOS once ``max_length`` tokens are out: the generator's length limit for free
    outputs after a decoder prompt (inside ``DecoderPrompted``), where fairseq's own limit has to leave room
    for the batch's longest prompt and so lets a sample with a shorter one run on."""

    def __init__(self, eos, vocab_size, max_length=None):
        self.eos, self.vocab_size, self.max_length = eos, vocab_size, max_length

    def with_max_length(self, max_length):
        shorter = max_length if self.max_length is None else min(self.max_length, max_length)
        return LengthLimit(self.eos, self.vocab_size, shorter)

    def allowed(self, prefix, rows):
        if self.max_length is None or prefix.size(1) < self.max_length:
            return torch.ones(prefix.size(0), self.vocab_size, dtype=torch.bool, device=prefix.device)
        mask = torch.zeros(prefix.size(0), self.vocab_size, dtype=torch.bool, device=prefix.device)
        mask[:, self.eos] = True
        return mask


class DecoderPrompted(Constraint):
    """``inner`` after each sample's decoder prompt (OFA's prompt_type=prev_output: the decoder reads the
    source before its output). Inside its prompt, whose tokens the generator forces, a hypothesis may
    take any token; after it, ``inner`` sees only the tokens that follow the prompt. The prompt lengths
    come with the batch, in each sample's meta (``decoder_prompt_length``); ``inner`` is bound to the
    batch too (per-sample candidates)."""

    def __init__(self, inner, lengths=None):
        self.inner, self.lengths = inner, lengths

    def for_batch(self, contexts):
        return DecoderPrompted(self.inner.for_batch(contexts),
                               torch.tensor([context["decoder_prompt_length"] for context in contexts]))

    def with_max_length(self, max_length):
        return DecoderPrompted(self.inner.with_max_length(max_length), self.lengths)

    def allowed(self, prefix, rows):
        lengths = self.lengths.to(prefix.device)[rows]
        mask = self.inner.allowed(prefix[:, :0], rows).clone().fill_(True)
        for length in lengths.unique().tolist():
            after = (lengths == length) & (prefix.size(1) >= length)
            if after.any():
                mask[after] = self.inner.allowed(prefix[after, length:], rows[after])
        return mask

    def training_masks(self, target):
        """The inner masks of the tokens after each prompt; every token allowed at the prompt's positions
        (their targets are padding, which the loss skips)."""
        lengths = self.lengths.to(target.device)
        masks = None
        for length in lengths.unique().tolist():
            rows = torch.nonzero(lengths == length).squeeze(1)
            part = self.inner.training_masks(target[rows, length:])
            if masks is None:
                masks = part.new_ones(*target.shape, part.size(2))
            masks[rows, length:] = part
        return masks


class ConstrainedEnsemble(EnsembleModel):
    """fairseq's EnsembleModel whose next-token log-probabilities obey a constraint."""

    def __init__(self, models, constraint):
        super().__init__(models)
        self.unbound = self.constraint = constraint

    def bind(self, contexts):
        """Constrain the next generation by the constraint bound to its batch (``for_batch``)."""
        self.constraint = self.unbound.for_batch(contexts)

    def forward_decoder(self, tokens, encoder_outs, incremental_states, temperature: float = 1.0):
        lprobs, attn = super().forward_decoder(tokens, encoder_outs, incremental_states, temperature)
        rows = encoder_outs[0]["sample_index"]
        allowed = self.constraint.allowed(tokens[:, 1:], rows)
        # Renormalised over the allowed tokens, as the training loss sees them: a step with one
        # allowed token costs nothing, whatever mass the raw softmax put elsewhere.
        masked = lprobs.masked_fill(~allowed, float("-inf"))
        return masked - masked.logsumexp(dim=-1, keepdim=True), attn


class ImageIndexed(Constraint):
    """An image-index token naming one of the sample's images, then ``inner`` (a region on that image).
    ``image_ids`` are the tokens of images 1, 2, ...; the image counts come with the batch, in each
    sample's meta (``image_count``)."""

    def __init__(self, inner, image_ids, counts=None):
        self.inner, self.image_ids, self.counts = inner, torch.as_tensor(image_ids), counts

    def for_batch(self, contexts):
        return ImageIndexed(self.inner.for_batch(contexts), self.image_ids,
                            torch.tensor([context["image_count"] for context in contexts]))

    def with_max_length(self, max_length):
        return ImageIndexed(self.inner.with_max_length(max_length - 1), self.image_ids, self.counts)

    def allowed(self, prefix, rows):
        if prefix.size(1):
            return self.inner.allowed(prefix[:, 1:], rows)
        if self.counts is None:
            raise RuntimeError("ImageIndexed.allowed before for_batch: the samples' image counts are unknown")
        mask = torch.zeros_like(self.inner.allowed(prefix, rows))
        ids, counts = self.image_ids.to(prefix.device), self.counts.to(prefix.device)[rows]
        mask[:, ids] = torch.arange(len(ids), device=prefix.device)[None, :] < counts[:, None]
        return mask
