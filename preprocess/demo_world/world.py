"""The whole demo world written into a folder: the image world, the video and audio clips, the IE samples
over every modality mix, and the entity catalogue."""
import os

from preprocess.demo_world import audio, ie, video
from preprocess.demo_world.images import write_catalogue, write_split
from preprocess.demo_world.scenes import write_rows

def write_clip_split(out_dir, split, num_videos, num_audio, video_size, video_fps, seed):
    """Write the video and audio worlds' TSVs of a split; returns {file name: row count}.

    Both worlds' temporal grounding rows share ``temporal_{split}.tsv``, interleaved clip by clip
    (video clip i, then audio clip i).
    """

    def clips():
        for index in range(max(num_videos, num_audio)):
            if index < num_videos:
                yield video.clip_rows(split, index, video_size, video_fps, seed)
            if index < num_audio:
                yield audio.clip_rows(split, index, seed)

    return write_rows(out_dir, split, clips())


def write_world(out_dir, seed=1, images=(2000, 100), image_size=128, videos=(400, 50), audio_clips=(400, 50),
                video_size=64, video_fps=8, ie_samples=(500, 60)):
    """Write every file of the world into ``out_dir``; each count is (train, valid). Returns
    {file name: row count}."""
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for split, num_images in zip(("train", "valid"), images):
        counts.update(write_split(out_dir, split, num_images, image_size, seed))
    for k, split in enumerate(("train", "valid")):
        counts.update(write_clip_split(out_dir, split, videos[k], audio_clips[k], video_size, video_fps, seed))
    for split, samples in zip(("train", "valid"), ie_samples):
        counts.update(ie.write_ie_split(out_dir, split, samples, image_size, video_size, video_fps, seed))
    counts.update(write_catalogue(out_dir))
    return counts
