"""Grounded multimodal relation extraction (MUIE's RE) on the generic layout (tasks/ie.py)."""
from fairseq.tasks import register_task

from tasks.ie import IEConfig, IETask


@register_task("re", dataclass=IEConfig)
class RelationExtractionTask(IETask):
    subtask = "re"
    offered = ("relation",)
    instruction = " extract relations:"
    primary_metric = "relation/grounded_f1"
