"""Self-critical sequence training (Rennie et al. 2017) with OFA's baseline.

For each row the task's own generator (beam search or sampling, under the task's constraint, as at
evaluation) produces K outputs; the task scores each against the row's reference
(``sequence_rewards``: CIDEr-D for captions, IoU for boxes), the baseline of an output is the mean
reward of the row's other K-1, and the loss is ``-(reward - baseline) * log p(output)`` summed over
the outputs' tokens, with log p under the same constraint masks as the cross-entropy loss. Outputs
with more reward than their siblings are made likelier, the others less likely.
"""
import json
import math
from argparse import Namespace
from dataclasses import dataclass, field

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterionConfig
from fairseq.distributed import LegacyDistributedDataParallel, ModuleProxyWrapper

from criterions.constrained_cross_entropy import ConstrainedLabelSmoothedCrossEntropy

OFA_STAGE2_ARGS = '{"beam": 5, "max_len_b": 16, "no_repeat_ngram_size": 3}'


@dataclass
class SelfCriticalConfig(LabelSmoothedCrossEntropyCriterionConfig):
    scst_args: str = field(default=OFA_STAGE2_ARGS, metadata={
        "help": "generation arguments of the outputs to reward, as JSON: 'beam' outputs per row (at least 2), by "
                "beam search, or by sampling with \"sampling\": true"})
    ce_weight: float = field(default=0.0, metadata={
        "help": "add this weight times the (label-smoothed) cross entropy per reference token to the reward loss "
                "per generated token"})


@register_criterion("self_critical", dataclass=SelfCriticalConfig)
class SelfCriticalSequenceTraining(ConstrainedLabelSmoothedCrossEntropy):
    """In training, the self-critical loss (plus ``ce_weight`` times cross entropy); in validation, the
    cross entropy of the references alone, comparable with the cross-entropy stage's."""

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 scst_args=OFA_STAGE2_ARGS, ce_weight=0.0):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        if not hasattr(task, "sequence_rewards"):
            raise ValueError(f"--criterion self_critical needs a task that rewards its outputs (caption, "
                             f"video_caption, audio_caption, refcoco); {type(task).__name__} does not")
        if task.cfg.decoder_prompt:
            raise ValueError("--criterion self_critical does not take --decoder-prompt: its outputs would be scored "
                             "and learnt without the prompt the decoder reads first")
        self.generation_args = Namespace(**json.loads(scst_args))
        if getattr(self.generation_args, "beam", 5) < 2:
            raise ValueError(f"--scst-args {scst_args}: beam must be at least 2, as each output's baseline is the "
                             "mean reward of the row's other outputs")
        self.ce_weight = ce_weight
        self.generator, self.generator_model = None, None

    def forward(self, model, sample, reduce=True):
        if not model.training:
            return super().forward(model, sample, reduce)
        outputs, rewards = self.rewarded_outputs(model, sample)
        advantages = torch.as_tensor(baseline_advantages(rewards), dtype=torch.float32, device=outputs["target"].device)
        log_probs = self.output_log_probs(model, sample, outputs)
        loss = -(advantages * log_probs).sum()
        sample_size = len(advantages) if self.sentence_avg else outputs["ntokens"]
        log = {"ntokens": outputs["ntokens"], "nsentences": sample["nsentences"], "sample_size": sample_size,
               "outputs": len(advantages), "reward": float(rewards.sum())}
        if self.ce_weight:
            ce_loss, nll = self.compute_loss(model, model(**sample["net_input"]), sample)
            ce_size = sample["nsentences"] if self.sentence_avg else sample["ntokens"]
            loss = loss + self.ce_weight * ce_loss * (sample_size / ce_size)
            log.update(ce_loss=ce_loss.data, nll_loss=nll.data, ce_ntokens=sample["ntokens"])
        log["loss"] = loss.data
        return loss, sample_size, log

    def rewarded_outputs(self, model, sample):
        """The generated outputs of the batch's rows as a teacher-forcing batch (``target_entries``, K
        per row, in row order) and their rewards (numpy, rows x K)."""
        hypotheses = self.generate(model, sample)
        counts = {len(h) for h in hypotheses}
        if len(counts) != 1:
            raise RuntimeError(f"the generator gave rows different numbers of outputs ({sorted(counts)}); "
                               "self-critical training needs the same number for every row")
        eos = self.task.vocab.dictionary.eos()
        tokens = [h["tokens"] for row in hypotheses for h in row]
        metas = [meta for meta, row in zip(sample["meta"], hypotheses) for _ in row]
        predictions = [self.task.decode_prediction([t for t in seq.tolist() if t != eos], meta)
                       for seq, meta in zip(tokens, metas)]
        rewards = self.task.sequence_rewards(predictions).reshape(len(hypotheses), -1)
        return self.task.target_entries(tokens, metas), rewards

    def generate(self, model, sample):
        """The task's generation (its constraint, its decoder start) of ``generation_args``, as at
        evaluation: in eval mode, without gradients; the model's mode is restored after."""
        module = unwrapped(model)
        training = module.training
        if self.generator_model is not module:
            self.generator = self.task.build_generator([module], self.generation_args)
            self.generator_model = module
        module.eval()
        try:
            return self.task.inference_step(self.generator, [module], sample)
        finally:
            module.train(training)

    def output_log_probs(self, model, sample, outputs, repeat_inputs=None):
        """log p of each output (summed over its tokens, EOS included) under the constraint masks. Each
        row's source is encoded once and its encoding repeated for its outputs, unless a distributed
        wrapper reduces gradients through its own forward (``repeat_inputs``, by default
        ``reduces_in_forward``): then the model runs through it on the inputs repeated once per output."""
        repeats = outputs["target"].size(0) // sample["nsentences"]
        source = {key: value for key, value in sample["net_input"].items() if key != "prev_output_tokens"}
        previous = outputs["prev_output_tokens"]
        if reduces_in_forward(model) if repeat_inputs is None else repeat_inputs:
            net_output = model(**{key: value.repeat_interleave(repeats, dim=0) for key, value in source.items()},
                               prev_output_tokens=previous)
        else:
            inner = unwrapped(model)
            rows = torch.arange(sample["nsentences"], device=previous.device).repeat_interleave(repeats)
            net_output = inner.decoder(previous, encoder_out=inner.encoder.reorder_encoder_out(inner.encoder(**source),
                                                                                               rows))
        lprobs, target = self.get_lprobs_and_target(model, net_output, outputs)
        token_lprobs = lprobs.gather(1, target[:, None]).squeeze(1).masked_fill(target.eq(self.padding_idx), 0.0)
        return token_lprobs.view(outputs["target"].shape).sum(1)

    @classmethod
    def reduce_metrics(cls, logging_outputs):
        """Training: ``loss`` (per generated token, or per output with --sentence-avg), ``reward`` (the
        mean reward of the generated outputs) and, with --ce-weight, ``nll_loss`` of the references in
        base 2. Validation: the cross entropy's metrics."""
        if not any("outputs" in log for log in logging_outputs):
            return super().reduce_metrics(logging_outputs)
        total = {key: sum(log.get(key, 0) for log in logging_outputs)
                 for key in ("loss", "sample_size", "outputs", "reward", "nll_loss", "ce_ntokens")}
        metrics.log_scalar("loss", total["loss"] / max(total["sample_size"], 1), total["sample_size"], round=3)
        metrics.log_scalar("reward", total["reward"] / max(total["outputs"], 1), total["outputs"], round=4)
        if total["ce_ntokens"]:
            metrics.log_scalar("nll_loss", total["nll_loss"] / total["ce_ntokens"] / math.log(2),
                               total["ce_ntokens"], round=3)


def baseline_advantages(rewards):
    """Flat ``reward - baseline`` of rows x K rewards, the baseline of an output being the mean reward of
    its row's other K-1 outputs (OFA's)."""
    k = rewards.shape[1]
    baselines = (rewards.sum(1, keepdims=True) - rewards) / (k - 1)
    return (rewards - baselines).reshape(-1)


def reduces_in_forward(model):
    """Whether a distributed wrapper around ``model`` reduces gradients through its own forward (torch's
    DistributedDataParallel, FSDP), which must then run; fairseq's legacy_ddp reduces them apart from it."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        if not isinstance(model, (ModuleProxyWrapper, LegacyDistributedDataParallel)):
            return True
        model = model.module
    return False


def unwrapped(model):
    """The model inside distributed wrappers (each keeps it as ``module``)."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model
