"""Training steps that can teach nothing: a batch whose rows were all bad, or whose loss is NaN or
Inf, backpropagates a zero that touches every parameter (ranks all-reduce the same set), and an
update none of whose batches taught anything makes no optimizer step."""
import logging

import torch

from data.mixture import MixtureDataset

logger = logging.getLogger(__name__)


class GuardedTraining:
    """The task mixin that guards ``train_step`` and ``optimizer_step``; the task provides ``bad_rows``
    (``data.bad_rows.BadRows``), ``cfg.max_nonfinite_steps`` and ``datasets``."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.nonfinite_in_a_row = 0
        self.update_learns = {}  # update number -> whether one of its batches had a usable loss

    def empty_step(self, model, bad):
        """A step whose rows were all bad: zero loss that still touches every parameter."""
        loss = sum(p.sum() for p in model.parameters()) * 0.0
        return loss, 0, {"bad_rows": bad, "ntokens": 0, "nsentences": 0, "sample_size": 0}

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """fairseq's forward and backward, except for a batch that can teach nothing: one whose rows
        were all bad, or whose loss is NaN or Inf. That one backpropagates ``empty_step``'s zero, so
        every parameter still gets a gradient (ranks all-reduce the same set), and an update none of
        whose batches taught anything makes no optimizer step (``optimizer_step``)."""
        self.update_learns = {update_num: self.update_learns.get(update_num, False)}
        bad = self.bad_rows.count(sample, listed=True)
        if "net_input" not in sample:
            loss, size, log = self.empty_step(model, bad)
            optimizer.backward(loss)
            return loss, size, log

        def finite_criterion(model, sample):
            loss, size, log = criterion(model, sample)
            if torch.isfinite(loss):
                self.nonfinite_in_a_row = 0
                self.update_learns[update_num] = True
                return loss, size, log
            self.skip_nonfinite(loss, sample, update_num)
            loss, size, log = self.empty_step(model, bad)
            return loss, size, dict(log, nonfinite=1)

        loss, size, log = super().train_step(sample, model, finite_criterion, optimizer, update_num, ignore_grad)
        log["bad_rows"] = bad
        log["exif_rotated"] = self.bad_rows.count_exif_rotated(sample)
        return loss, size, log

    def skip_nonfinite(self, loss, sample, update_num):
        """Log a batch whose loss is NaN or Inf; stop once more than --max-nonfinite-steps come in a row."""
        self.nonfinite_in_a_row += 1
        where = self.rows_of(sample)
        if self.nonfinite_in_a_row > self.cfg.max_nonfinite_steps:
            raise FloatingPointError(
                f"update {update_num + 1}: loss {loss.item()} on {where}; that is {self.nonfinite_in_a_row} "
                f"batches in a row with a NaN or Inf loss, more than --max-nonfinite-steps "
                f"{self.cfg.max_nonfinite_steps}. Lower the learning rate, clip gradients, or check these rows.")
        logger.warning("update %d: loss %s on %s; batch skipped (%d in a row, --max-nonfinite-steps %d)",
                       update_num + 1, loss.item(), where, self.nonfinite_in_a_row, self.cfg.max_nonfinite_steps)

    def rows_of(self, sample):
        """Where a training batch's rows are: the 1-based lines of its TSV file."""
        dataset = self.datasets.get("train")
        if isinstance(dataset, MixtureDataset) and "task" in sample:
            dataset = dataset.datasets[dataset.names.index(sample["task"])]
        tsv = getattr(dataset, "tsv", None)
        if tsv is None:
            return f"the batch of rows {sample['id'].tolist()}"
        return f"the batch of lines {[tsv.line_number(i) for i in sample['id'].tolist()]} of {tsv.path}"

    def optimizer_step(self, optimizer, model, update_num):
        """The optimizer step, skipped when no batch of this update taught anything and no other rank's
        did either (every gradient is zero after the all-reduce): Adam would move the weights on its
        momentum alone and count a step that never happened."""
        if not self.update_learns.get(update_num, True) and not any(
                p.grad is not None and p.grad.any() for p in model.parameters()):
            logger.warning("update %d: no batch had a usable loss; weights and optimizer state left as they were",
                           update_num + 1)
            return
        super().optimizer_step(optimizer, model, update_num)
