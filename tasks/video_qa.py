"""Video question answering on UnIVAL VQA TSVs: question-id, image-id, question, answers, objects, video.

Everything but the medium is VQA's: candidate answers, the answer trie, the two evaluation
modes and VQA soft accuracy.
"""
from fairseq.tasks import register_task

from tasks.vqa import VqaConfig, VqaTask


@register_task("video_qa", dataclass=VqaConfig)
class VideoQaTask(VqaTask):
    columns = ("question_id", "video", "question", "answers", "objects")
