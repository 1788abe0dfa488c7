"""Query and entity embeddings from the encoder of the model being trained.

Both are the masked mean of the encoder's output states, L2-normalised. A query is the sample as the
encoder reads it for generation (its media and prompt); an entity is the text of its catalogue entry
(``entity_text``) read alone. Pooling the encoder rather than reading a dedicated decoder token (as
AutoVER does) means retrieval needs no decoder step and no new parameter: the encoder pass that
retrieval makes is the one generation makes, and every checkpoint of the model can retrieve. The
contrastive loss (``info_nce``) pulls each query towards its entity's text and away from the other
entities of its batch and their look-alikes (``prefix_neighbours``).
"""
import numpy as np
import torch
from fairseq.data import data_utils


def encoder_inputs(net_input):
    """A batch's encoder inputs: its net_input less the decoder's."""
    return {key: value for key, value in net_input.items() if key != "prev_output_tokens"}


def pooled(encoder_out):
    """B x C unit vectors: the mean of the encoder states each sample attends to."""
    if "attend_mask" not in encoder_out:
        raise ValueError("retrieval pools the unify encoder's output; this model's encoder (OFA's) has another layout")
    states = encoder_out["encoder_out"]
    keep = encoder_out["attend_mask"].reshape(states.size(0), states.size(1)).to(states.dtype)
    mean = (states * keep.unsqueeze(2)).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)
    return torch.nn.functional.normalize(mean.float(), dim=1)


def embed_queries(model, sample):
    """B x C query embeddings of a batch (no gradient)."""
    with torch.no_grad():
        return pooled(model.encoder(**encoder_inputs(sample["net_input"])))


TEXT_FORMAT = "name; aliases; description"  # recorded in an index's fingerprint: change it with entity_text


def entity_text(catalogue, position):
    """What the encoder reads of an entity: its name, its aliases and its description."""
    entity = catalogue[position]
    parts = [entity.name] + ([", ".join(entity.aliases)] if entity.aliases else []) + \
        ([entity.description] if entity.description else [])
    return "; ".join(parts)


class EntityTexts:
    """Catalogue entries as encoder inputs, each cut to ``max_tokens`` (EOS included): a long description
    is read as far as it fits, as a query's context would be."""

    def __init__(self, catalogue, vocab, max_tokens):
        if max_tokens < 2:
            raise ValueError(f"--retrieval-text-tokens must be at least 2, got {max_tokens}")
        self.catalogue, self.vocab, self.max_tokens = catalogue, vocab, max_tokens
        self._sorted_names = None

    def tokens(self, positions):
        """Padded N x T source tokens of the entities at ``positions``."""
        prefix, eos = list(self.vocab.source_prefix), self.vocab.dictionary.eos()
        room = self.max_tokens - len(prefix) - 1
        encoded = self.vocab.encode_outputs([entity_text(self.catalogue, int(p)) for p in positions])
        rows = [torch.tensor(prefix + ids[:room] + [eos]) for ids in encoded]
        return data_utils.collate_tokens(rows, self.vocab.dictionary.pad(), eos)

    def embed(self, model, positions, device=None):
        """N x C entity embeddings (with gradient when the model trains)."""
        tokens = self.tokens(positions).to(device or next(model.parameters()).device)
        return pooled(model.encoder(src_tokens=tokens, src_lengths=tokens.ne(self.vocab.dictionary.pad()).sum(1)))

    def prefix_neighbours(self, positions, count):
        """Up to ``count`` other entities for each of ``positions``: those nearest it in the sorted order of
        names, which share the longest name prefixes with it (the names a trie confuses it with)."""
        if self._sorted_names is None:
            order = np.argsort(np.array(self.catalogue.names, dtype=object), kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            self._sorted_names = (order, rank)
        order, rank = self._sorted_names
        neighbours = []
        for position in positions:
            at = int(rank[position])
            low = max(0, min(at - (count + 1) // 2, len(order) - count - 1))
            window = order[low:low + count + 1]
            neighbours.append([int(p) for p in window if p != position][:count])
        return neighbours


def info_nce(queries, entities, targets, temperature):
    """Summed InfoNCE loss: each query's softmax over every entity (cosine / temperature), against the
    entity at its ``targets`` index."""
    logits = queries @ entities.t() / temperature
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
