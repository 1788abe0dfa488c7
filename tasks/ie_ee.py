"""Grounded multimodal event extraction (MUIE's EE) on the generic layout (tasks/ie.py)."""
from fairseq.tasks import register_task

from tasks.ie import IEConfig, IETask


@register_task("ee", dataclass=IEConfig)
class EventExtractionTask(IETask):
    subtask = "ee"
    offered = ("event", "role")
    instruction = " extract events:"
    primary_metric = "argument/grounded_f1"
