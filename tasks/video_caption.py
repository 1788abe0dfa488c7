"""Video captioning on UnIVAL caption TSVs: uniq-id, image-id, caption, objects, video."""
from fairseq.tasks import register_task

from tasks.caption import CaptionConfig, CaptionTask


@register_task("video_caption", dataclass=CaptionConfig)
class VideoCaptionTask(CaptionTask):
    columns = ("uniq_id", "video", "caption")
    prompt = " what does the video describe?"
