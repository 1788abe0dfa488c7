"""Audio captioning on UnIVAL caption TSVs: uniq-id, image-id, caption, objects, audio.

UnIVAL prompts audio with its video question; asking about the audio keeps the
two tasks apart when they are trained together. With ``--unival-inputs`` (UnIVAL
checkpoints) the prompt is UnIVAL's.
"""
from fairseq.tasks import register_task

from tasks.caption import CaptionConfig, CaptionTask


@register_task("audio_caption", dataclass=CaptionConfig)
class AudioCaptionTask(CaptionTask):
    columns = ("uniq_id", "audio", "caption")
    prompt = " what does the audio describe?"
    unival_prompt = " what does the video describe?"
