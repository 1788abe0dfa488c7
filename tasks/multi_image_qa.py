"""Questions about several images: the vqa task's layout, machinery and metric, the image cell a JSON list.

question-id, image-id, question, ``conf|!+answer&&...``, objects, images; the question may name images
by ``<image_k>`` markers (data/interleave.py), and images no marker names come first.
"""
from fairseq.tasks import register_task

from tasks.vqa import VqaConfig, VqaTask


@register_task("multi_image_qa", dataclass=VqaConfig)
class MultiImageQaTask(VqaTask):
    uniground_tokens = True  # <image_k> tokens, which OFA's vocabulary gets appended
