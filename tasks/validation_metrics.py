"""Validation metrics of the whole validation set, not means of per-batch figures.

Each validation batch logs additive counts (its task's ``validation_counts``: true positives, pixel
sums, a score times the rows); fairseq sums them over batches and ranks, and each metric is derived from
the sums (the task's ``validation_metrics``) when the validation is reported, as fairseq's translation
task derives BLEU from n-gram counts. An F1, a cIoU or a CIDEr averaged over batches is none of the
set's, and picked the best checkpoint by a figure evaluate.py does not report.
"""
import functools

from fairseq import metrics

COUNT_KEY = "_count|"  # then "<group>|<count>"; fairseq leaves meters whose names start with "_" out of its reports
ROWS = "_rows"  # the count of scored rows, which a count of the task's own cannot be named


def logged_counts(group, counts):
    """A batch's counts as logging-output entries; ``group`` is the task's metric prefix ("" or "<task>/")."""
    return {f"{COUNT_KEY}{group}|{name}": value for name, value in counts.items()}


def log_validation_metrics(logging_outputs, task_of_group):
    """Add a batch's counts to the running sums and derive each group's metrics from them;
    ``task_of_group(group)`` is the task whose ``validation_metrics`` reads that group's counts."""
    keys = sorted({key for log in logging_outputs for key in log if key.startswith(COUNT_KEY)})
    counts_by_group = {}
    for key in keys:
        total = sum(log.get(key, 0) for log in logging_outputs)
        metrics.log_scalar_sum(key, total)
        group, name = key[len(COUNT_KEY):].split("|", 1)
        counts_by_group.setdefault(group, {})[name] = total
    for group, counts in counts_by_group.items():
        task = task_of_group(group)
        for name in task.validation_metrics(counts):
            metrics.log_derived(f"{group}{name}", functools.partial(derived_metric, task, group, name))


def derived_metric(task, group, name, meters):
    """Metric ``name`` of ``task`` from the counts of ``group`` summed so far in ``meters``."""
    prefix = f"{COUNT_KEY}{group}|"
    counts = {key[len(prefix):]: meters[key].sum for key in meters if key.startswith(prefix)}
    return round(float(task.validation_metrics(counts).get(name, 0.0)), 4)


def has_counts(logging_outputs):
    return any(key.startswith(COUNT_KEY) for log in logging_outputs for key in log)
