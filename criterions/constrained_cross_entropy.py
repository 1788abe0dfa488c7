"""Label-smoothed cross entropy under the task's constraint masks.

Where a batch carries ``constraint_masks`` (B x T x V, True = allowed), the
softmax runs over the allowed tokens only and the smoothing mass is spread
over them alone, so the model is trained on the same choice that
constrained beam search will ask of it.
"""
import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (LabelSmoothedCrossEntropyCriterion,
                                                             LabelSmoothedCrossEntropyCriterionConfig)


@register_criterion("constrained_label_smoothed_cross_entropy", dataclass=LabelSmoothedCrossEntropyCriterionConfig)
class ConstrainedLabelSmoothedCrossEntropy(LabelSmoothedCrossEntropyCriterion):
    def get_lprobs_and_target(self, model, net_output, sample):
        logits, extra = net_output
        masks = sample.get("constraint_masks")
        if masks is not None:
            logits = logits.masked_fill(~masks, float("-inf"))
        lprobs = model.get_normalized_probs((logits, extra), log_probs=True)
        target = model.get_targets(sample, net_output)
        if self.ignore_prefix_size > 0:
            lprobs = lprobs[:, self.ignore_prefix_size:].contiguous()
            target = target[:, self.ignore_prefix_size:].contiguous()
        return lprobs.view(-1, lprobs.size(-1)), target.view(-1)

    def compute_loss(self, model, net_output, sample, reduce=True):
        lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
        allowed = torch.isfinite(lprobs)
        nll = -lprobs.gather(1, target[:, None]).squeeze(1)
        smooth = -lprobs.masked_fill(~allowed, 0.0).sum(1) / allowed.sum(1).clamp(min=1)
        keep = target.ne(self.padding_idx)
        nll, smooth = nll.masked_fill(~keep, 0.0), smooth.masked_fill(~keep, 0.0)
        loss = (1.0 - self.eps) * nll + self.eps * smooth
        if reduce:
            return loss.sum(), nll.sum()
        return loss, nll

    @classmethod
    def reduce_metrics(cls, logging_outputs):
        """fairseq's, except for an update whose every batch was skipped (all rows bad, or a NaN or Inf loss):
        it has no tokens to average over, so its loss enters the averages with weight 0."""
        if sum(log.get("sample_size", 0) for log in logging_outputs) == 0:
            metrics.log_scalar("loss", 0.0, 0, round=3)
            metrics.log_scalar("nll_loss", 0.0, 0, round=3)
            return
        super().reduce_metrics(logging_outputs)
