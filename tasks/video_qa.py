"""Video question answering on UnIVAL VQA TSVs: question-id, image-id, question, answers, objects, video.

Everything but the medium and the scoring is VQA's: candidate answers, the answer trie, the two
evaluation modes. Answers are matched exactly, without VQA's normalisation, as MSRVTT-QA's accuracy
is computed (its rows list one answer at confidence 1).
"""
from fairseq.tasks import register_task

from tasks.vqa import VqaConfig, VqaTask


@register_task("video_qa", dataclass=VqaConfig)
class VideoQaTask(VqaTask):
    columns = ("question_id", "video", "question", "answers", "objects")
    normalise_answers = False
