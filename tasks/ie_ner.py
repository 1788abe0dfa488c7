"""Grounded multimodal named entity recognition (MUIE's NER) on the generic layout (tasks/ie.py)."""
from fairseq.tasks import register_task

from tasks.ie import IEConfig, IETask


@register_task("ner", dataclass=IEConfig)
class NerTask(IETask):
    subtask = "ner"
    offered = ("entity",)
    instruction = " extract entities:"
    primary_metric = "entity/grounded_f1"
