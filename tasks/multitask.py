"""A weighted mixture of registered tasks trained as one model.

    train.py "caption=cap_train.tsv,cap_valid.tsv;refcoco=ref_train.tsv,ref_valid.tsv" \\
        --task multitask --tasks caption:0.4,refcoco:0.6 --vocab-dir vocab ...

Each sub-task keeps its own data, prompt, constraint and metric; the shared
options (vocabulary, image size, bins, ...) are this task's. Validation reports
every sub-task's metrics as ``<task>/<metric>`` and ``score``, the ratio-weighted
mean of each sub-task's primary metric, for ``--best-checkpoint-metric score``.
"""
from dataclasses import dataclass, field

from fairseq import metrics
from fairseq.tasks import register_task

from data.mixture import MixtureDataset
from tasks.base import UniGroundConfig, UniGroundTask, sibling_task
from tasks.lengths import LENGTH_LIMITS
from tasks.validation_metrics import has_counts
from utils.checkpoint import IDENTITY, CheckpointMismatchError


@dataclass
class MultitaskConfig(UniGroundConfig):
    tasks: str = field(default="", metadata={"help": "sub-tasks and sampling ratios: caption:0.4,refcoco:0.6"})


def parse_named(text, what):
    """'a=x;b=y' -> {'a': 'x', 'b': 'y'}."""
    parts = [part for part in text.split(";") if part.strip()]
    if not parts or any("=" not in part for part in parts):
        raise ValueError(f"multitask: {what} must name each task, as name=value;name=value, got {text!r} "
                         "(to evaluate one task of a multitask checkpoint, give evaluate.py --task NAME)")
    return {name.strip(): value.strip() for name, value in (part.split("=", 1) for part in parts)}


def parse_ratios(text):
    ratios = {}
    for part in text.split(","):
        name, _, ratio = part.partition(":")
        ratios[name.strip()] = float(ratio) if ratio else 1.0
    if not ratios or any(r <= 0 for r in ratios.values()):
        raise ValueError(f"--tasks needs positive ratios as name:ratio,name:ratio, got {text!r}")
    return ratios


@register_task("multitask", dataclass=MultitaskConfig)
class MultitaskTask(UniGroundTask):
    reads_rows = False
    uniground_tokens = True

    def __init__(self, cfg, vocab, from_checkpoint=False):
        super().__init__(cfg, vocab)
        self.ratios = parse_ratios(cfg.tasks)
        data = parse_named(cfg.data, "DATA")
        if from_checkpoint:  # what the sub-tasks took from their training rows (VQA's answers) is in the
            # checkpoint's task state, which is loaded next: they read none, so none need exist here
            data = {name: paths.split(",")[-1] for name, paths in data.items()}
        cols = parse_named(cfg.selected_cols, "--selected-cols") if cfg.selected_cols else {}
        unknown = set(self.ratios) - set(data)
        if unknown:
            raise ValueError(f"multitask: no data given for {sorted(unknown)}")
        self.subtasks = {name: self.build_subtask(name, data[name], cols.get(name)) for name in self.ratios}
        for option, _, _ in LENGTH_LIMITS:
            if getattr(cfg, option) is None:  # checkpoints keep the limits: a sub-task evaluated later need not measure
                setattr(cfg, option, max(getattr(task.cfg, option) for task in self.subtasks.values()))

    @classmethod
    def setup_task(cls, cfg, from_checkpoint=False, **kwargs):
        return cls(cfg, cls.task_vocabulary(cfg), from_checkpoint)

    def build_subtask(self, name, data, selected_cols):
        task = sibling_task(name, self.cfg, self.vocab, data=data, selected_cols=selected_cols)
        task.metric_prefix = f"{name}/"
        task.bad_rows = self.bad_rows  # one --skip-bad-rows budget for the whole mixture
        return task

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        for task in self.subtasks.values():
            task.load_dataset(split, epoch=epoch)
        self.datasets[split] = MixtureDataset(
            {name: task.dataset(split) for name, task in self.subtasks.items()}, self.ratios,
            seed=self.cfg.seed, sample=split == "train")

    def state_dict(self):
        """The mixture's task state, which checkpoints keep, holds each sub-task's as ``<task>/<key>``
        (VQA's candidate answers, say), so a sub-task evaluated alone gets it back."""
        state = dict(super().state_dict())
        for name, task in self.subtasks.items():
            state.update({f"{name}/{key}": value for key, value in task.state_dict().items()})
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for name, task in self.subtasks.items():
            task.load_state_dict(subtask_state(state_dict, name))

    def scored_tasks(self):
        return list(self.subtasks.values())

    def valid_step(self, sample, model, criterion):
        if "net_input" not in sample:
            return super().valid_step(sample, model, criterion)
        return self.subtasks[sample["task"]].valid_step(sample, model, criterion)

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        if has_counts(logging_outputs):
            metrics.log_derived("score", self.combined_score)

    def task_of_metric_group(self, group):
        return self.subtasks[group.removesuffix("/")] if group else self

    def combined_score(self, meters):
        """Ratio-weighted mean of the sub-tasks' primary metrics seen in this validation."""
        seen = {name: meters.get_smoothed_value(f"{name}/{task.primary_metric}")
                for name, task in self.subtasks.items() if f"{name}/{task.primary_metric}" in meters}
        if not seen:
            return 0.0
        total = sum(self.ratios[name] for name in seen)
        return round(sum(self.ratios[name] * value for name, value in seen.items()) / total, 4)


def checkpoint_subtask(task, name, path, **options):
    """Task ``name`` on the vocabulary and common options of ``task``, a checkpoint's (a multitask one, or any
    other for a merged model), with ``options`` (its data, columns, ...) on top, given the checkpoint's task
    state: a multitask checkpoint's part for this task, with its data's layout. ``path`` names the checkpoint
    in a mismatch."""
    selected = sibling_task(name, task.cfg, task.vocab, **options)
    state = task.state_dict()
    own = subtask_state(state, name)
    own.setdefault(IDENTITY, state[IDENTITY])
    try:
        selected.load_state_dict(own)
    except CheckpointMismatchError as error:
        raise CheckpointMismatchError(f"{path}: {error}") from None
    return selected


def subtask_state(state_dict, name):
    """Sub-task ``name``'s part of a mixture's task state."""
    prefix = f"{name}/"
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
