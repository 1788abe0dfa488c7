"""Each sample's candidate entities at inference: the catalogue index for a model's encoder weights
(built, loaded from beside the checkpoint, or reused while the weights stay as they are) searched with
the samples' query embeddings; and which retrieved entity a generated name names."""
import os

import torch

from retrieval.embedding import TEXT_FORMAT, embed_queries
from retrieval.index import build_index, fingerprint, load_index


class Retriever:
    """``catalogue``, ``entity_texts``: the task's; ``choice_tokens[c]``: name or alias ``c``'s tokens and
    EOS; ``entity_choices[p]``: the choices of the entity at catalogue position ``p``; ``cfg``: the task's
    retrieval options."""

    def __init__(self, catalogue, entity_texts, choice_tokens, entity_choices, cfg):
        self.catalogue, self.entity_texts = catalogue, entity_texts
        self.choice_tokens, self.entity_choices, self.cfg = choice_tokens, entity_choices, cfg
        self.index_cache = None  # (encoder weight versions, EntityIndex)

    def with_candidates(self, model, sample, beam, index_path=None):
        """The batch with each sample's retrieved ``candidates`` (catalogue positions, best first) and the
        1-based ``retrieval_rank`` of its gold entity among the first --retrieval-k (None: not among them)."""
        k = self.cfg.retrieval_k
        _, ranked = self.entity_index(model, index_path).search(embed_queries(model, sample), 2 * k)
        metas = []
        for meta, positions in zip(sample["meta"], ranked.tolist()):
            gold = self.catalogue.position.get(meta["entity_id"])
            rank = positions[:k].index(gold) + 1 if gold in positions[:k] else None
            metas.append(dict(meta, candidates=self.candidates(positions, beam, meta), retrieval_rank=rank))
        return dict(sample, meta=metas)

    def candidates(self, ranked, beam, meta):
        """The first --retrieval-k of ``ranked``, and more (up to twice as many) while their names are fewer
        than the beam, which constrained beam search needs (``fit_generation_to_trie``)."""
        chosen, names = [], set()
        for position in ranked:
            if len(chosen) >= self.cfg.retrieval_k and len(names) >= beam:
                break
            chosen.append(position)
            names.update(tuple(self.choice_tokens[c]) for c in self.entity_choices[position])
        if len(names) < beam:
            raise RuntimeError(f"sample {meta['uniq_id']!r}: its {len(chosen)} retrieved entities have {len(names)} "
                               f"distinct names, fewer than beam {beam}; raise --retrieval-k or lower the beam")
        return chosen

    def entity_index(self, model, path=None):
        """The catalogue index for ``model``'s encoder weights: reused while they stay as they are, loaded
        from ``path`` when it exists, else built (and saved there with a ``path``)."""
        encoder = model.encoder
        weights = tuple((p.data_ptr(), p._version) for p in encoder.parameters())
        if self.index_cache is not None and self.index_cache[0] == weights:
            return self.index_cache[1]
        expected = fingerprint(self.catalogue.path, encoder,
                               {"format": TEXT_FORMAT, "max_tokens": self.cfg.retrieval_text_tokens})
        if path and os.path.exists(path):
            index = load_index(path, expected)
        else:
            index = build_index(lambda positions: self.embed_entities(model, positions), len(self.catalogue),
                                expected, self.cfg.retrieval_chunk_size, path or None)
        self.index_cache = (weights, index)
        return index

    def embed_entities(self, model, positions):
        with torch.no_grad():
            step = self.cfg.retrieval_batch_size
            return torch.cat([self.entity_texts.embed(model, positions[i:i + step])
                              for i in range(0, len(positions), step)])

    def entity_of(self, tokens, candidates, anywhere):
        """The entity a name names: among retrieved ``candidates`` (in rank order) the one whose canonical
        name it is, else the first whose alias it is; without candidates, ``anywhere``."""
        if candidates is None:
            return anywhere
        tokens = list(tokens)
        owners = [p for p in candidates if any(self.choice_tokens[c][:-1] == tokens for c in self.entity_choices[p])]
        named = [p for p in owners if self.choice_tokens[p][:-1] == tokens]
        return (named or owners)[0]
