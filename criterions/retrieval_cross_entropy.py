"""Generation loss plus AutoVER's contrastive retrieval loss, for entity recognition.

Each sample's query embedding (``retrieval.embedding.pooled``, from the encoder pass generation makes)
is scored against the entity embeddings of the batch's gold entities and of their hard negatives, the
``--hard-negatives`` entities whose names sort next to each gold name (they share its longest prefixes,
where the name trie confuses them). The InfoNCE loss, summed over samples, is added with weight
``--retrieval-weight`` to the summed token loss; the trainer divides both by the same sample size.
"""
from dataclasses import dataclass, field

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion

from criterions.constrained_cross_entropy import ConstrainedCrossEntropyConfig, ConstrainedLabelSmoothedCrossEntropy
from retrieval.embedding import info_nce, pooled


@dataclass
class RetrievalCrossEntropyConfig(ConstrainedCrossEntropyConfig):
    retrieval_weight: float = field(default=1.0, metadata={
        "help": "weight of the contrastive retrieval loss (summed over samples) beside the token loss"})
    retrieval_temperature: float = field(default=0.05, metadata={
        "help": "temperature of the contrastive softmax over cosine similarities"})
    hard_negatives: int = field(default=4, metadata={
        "help": "catalogue entities per gold entity added as negatives: those whose names share its longest prefixes"})


@register_criterion("retrieval_cross_entropy", dataclass=RetrievalCrossEntropyConfig)
class RetrievalCrossEntropy(ConstrainedLabelSmoothedCrossEntropy):
    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 bin_smoothing=0.0, retrieval_weight=1.0, retrieval_temperature=0.05, hard_negatives=4):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy, bin_smoothing)
        if not hasattr(task, "entity_texts"):
            raise ValueError("--criterion retrieval_cross_entropy needs --task entity_recognition (its catalogue)")
        if retrieval_temperature <= 0:
            raise ValueError(f"--retrieval-temperature must be positive, got {retrieval_temperature}")
        if hard_negatives < 0:
            raise ValueError(f"--hard-negatives must not be negative, got {hard_negatives}")
        self.retrieval_weight, self.temperature, self.hard_negatives = (retrieval_weight, retrieval_temperature,
                                                                         hard_negatives)

    def forward(self, model, sample, reduce=True):
        loss, sample_size, log, encoder_out = self.forward_seeing_encoder_out(model, sample, reduce)
        contrastive = self.retrieval_loss(model, encoder_out, sample)
        loss = loss + self.retrieval_weight * contrastive
        log.update(loss=loss.data, retrieval_loss=contrastive.data)
        return loss, sample_size, log

    def retrieval_loss(self, model, encoder_out, sample):
        """Summed InfoNCE of the batch's queries over its gold entities and their hard negatives."""
        texts, position = self.task.entity_texts, self.task.catalogue.position
        gold = [position[meta["entity_id"]] for meta in sample["meta"]]
        entities = list(dict.fromkeys(gold))
        for negatives in texts.prefix_neighbours(entities, self.hard_negatives):
            entities.extend(negatives)
        entities = list(dict.fromkeys(entities))
        column = {p: i for i, p in enumerate(entities)}
        queries = pooled(encoder_out)
        keys = texts.embed(model, entities, queries.device)
        targets = torch.tensor([column[p] for p in gold], device=queries.device)
        return info_nce(queries, keys, targets, self.temperature)

    @classmethod
    def reduce_metrics(cls, logging_outputs):
        super().reduce_metrics(logging_outputs)
        samples = sum(log.get("nsentences", 0) for log in logging_outputs)
        if samples:
            metrics.log_scalar("retrieval_loss", sum(float(log.get("retrieval_loss", 0)) for log in logging_outputs)
                               / samples, samples, round=3)
