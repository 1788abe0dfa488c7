"""A row's media as the model reads them: its image, video and audio cells decoded, sampled and
transformed as the task's options say; and as the evaluation report draws them; and stacked into a batch."""
import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from data.audio import SAMPLE_RATE, decode_audio, log_mel, unival_waveform
from data.errors import BadInputError
from data.interleave import image_cells
from data.media import bad_input, decode_image, image_size, read_media_bytes
from data.transforms import ImageTransform
from data.video import decode_video

MEDIA_COLUMNS = ("image", "video", "audio")


class RowMedia:
    """The media reader of a task whose rows have ``columns``; with ``optional`` (the generic layout)
    any media cell may be empty, otherwise each declared medium is required."""

    def __init__(self, cfg, columns, optional):
        self.cfg, self.columns, self.optional = cfg, columns, optional
        resize = {"pil_bicubic": cfg.ofa_preprocessing}
        self.image_transforms = {
            True: ImageTransform(cfg.patch_image_size, train=True, crop_prob=cfg.crop_prob, hflip_prob=cfg.hflip_prob,
                                 **resize),
            False: ImageTransform(cfg.patch_image_size, train=False, **resize),
        }

    def read(self, row, train, keep=None):
        """Sample entries for the media columns: ``{"image": pixels}``, ``{"video": frames, "video_times":
        fractions of the clip}`` or ``{"audio": log-mel frames}``, and for a clip ``"window"``, the (start,
        length, duration) in seconds of the part the model sees. ``keep`` = (start, end) seconds asks a
        training crop of long audio to contain that span."""
        wanted = [name for name in MEDIA_COLUMNS if name in self.columns and (row[name] or not self.optional)]
        entries = {}
        if "image" in wanted:
            entries["image"] = self.pixels(row, train)
        if "video" in wanted:
            entries.update(self.video(row, train))
        if "audio" in wanted:
            entries.update(self.audio(row, train, keep))
        return entries

    def for_report(self, row, frame_size):
        """The row's media as the evaluation report draws them: the original image (predictions are in
        its pixels), the video's frames sampled as at evaluation at ``frame_size`` pixels with the
        clip's seconds, and the whole audio clip's samples with their rate."""
        media = {}
        if "image" in self.columns and row["image"]:
            media["image"] = self.images(row, "image", draft=False)[0].pil()
        if "video" in self.columns and row["video"]:
            clip = decode_video(self.file_bytes(row, "video"), row.where("video"), self.cfg.num_frames, frame_size,
                                max_seconds=self.cfg.max_video_seconds, max_pixels=self.cfg.max_image_pixels)
            media["video"] = (clip.frames, clip.duration)
        if "audio" in self.columns and row["audio"]:
            seconds = self.cfg.max_input_audio_seconds
            clip = decode_audio(self.file_bytes(row, "audio"), row.where("audio"), seconds, max_input_seconds=seconds)
            media["audio"] = (clip.samples.numpy(), SAMPLE_RATE)
        return media

    def video(self, row, train):
        cfg = self.cfg
        clip = decode_video(self.file_bytes(row, "video"), row.where("video"), cfg.num_frames,
                            None if cfg.unival_inputs else cfg.video_frame_size,
                            cfg.frame_sampling if train else "uniform", rng=training_rng() if train else None,
                            max_seconds=cfg.max_video_seconds, max_pixels=cfg.max_image_pixels)
        frames = clip.frames
        if cfg.unival_inputs:
            frames = ImageTransform.center_crop(frames, cfg.video_frame_size)
        return {
            "video": frames,  # uint8, as images: the model normalises them
            "video_times": torch.as_tensor(clip.times / clip.duration, dtype=torch.float32),
            "window": (0.0, clip.duration, clip.duration),
        }

    def audio(self, row, train, keep=None):
        cfg = self.cfg
        rate = cfg.waveform_sample_rate if cfg.unival_inputs else SAMPLE_RATE
        clip = decode_audio(self.file_bytes(row, "audio"), row.where("audio"), cfg.max_audio_seconds, train=train,
                            rng=training_rng() if train else None, keep=keep,
                            max_input_seconds=cfg.max_input_audio_seconds, sample_rate=rate)
        if cfg.unival_inputs:
            audio = unival_waveform(clip.samples, round(cfg.max_audio_seconds * rate))
        else:
            audio = log_mel(clip.samples, cfg.num_mel_bins)
        return {"audio": audio, "window": (clip.start, len(clip.samples) / rate, clip.duration)}

    def file_bytes(self, row, column):
        """The file bytes of a media cell (base64 or a path under --media-dir)."""
        return read_media_bytes(row[column], self.cfg.media_dir, row.where(column), self.cfg.max_media_bytes)

    def image(self, row, column, draft=True):
        """The ``DecodedImage`` of a media cell. With ``draft``, a large JPEG may be decoded at a reduced
        scale that still covers the model input, unless a training crop could zoom into it or OFA's
        preprocessing resizes the whole image."""
        return self.decode(self.file_bytes(row, column), row, column, draft)

    def decode(self, data, row, column, draft):
        whole = self.cfg.crop_prob > 0 or self.cfg.ofa_preprocessing
        draft_size = self.cfg.patch_image_size if draft and not whole else None
        image = decode_image(data, row.where(column), self.cfg.max_image_pixels, draft_size, self.cfg.exif_transpose)
        if image.orientation != 1:
            row.exif_orientation = image.orientation
        return image

    def images(self, row, column="image", draft=True):
        """The ``DecodedImage`` of each image of a cell holding one or a JSON list (``data.interleave``),
        refused when they declare more than --max-row-pixels in all; a bad image is named by its place."""
        where = row.where(column)
        cells = image_cells(row[column], where, self.cfg.max_images)
        if len(cells) == 1:
            return [self.decode(read_media_bytes(cells[0], self.cfg.media_dir, where, self.cfg.max_media_bytes),
                                row, column, draft)]
        images, total = [], 0
        for k, cell in enumerate(cells):
            try:
                data = read_media_bytes(cell, self.cfg.media_dir, where, self.cfg.max_media_bytes)
                width, height = image_size(data, where)
                total += width * height
                if total > self.cfg.max_row_pixels:
                    raise bad_input(where, f"with it the images declare more than --max-row-pixels "
                                           f"{self.cfg.max_row_pixels} pixels in all")
                images.append(self.decode(data, row, column, draft))
            except BadInputError as error:
                raise row.error(column, f"image {k + 1} of {len(cells)}: {error.reason}") from None
        return images

    def pixels(self, row, train):
        """The model-frame pixels of a row's images (each transformed on its own), as ``stacked_pixels``."""
        return stacked_pixels(row, [self.transform(image, train).pixels for image in self.images(row)])

    def transform(self, image, train, boxes=None, polygons=None):
        """The ``DecodedImage`` in the model frame, its boxes and polygons (in the file's pixels) moved with it."""
        return self.image_transforms[train](image.pixels, boxes=boxes, polygons=polygons, frame=image.size)


def stacked_pixels(row, pixels):
    """A sample's "image": 3 x S x S for a cell of one image, K x 3 x S x S for a list of K."""
    return torch.stack(pixels) if row["image"].startswith("[") else pixels[0]


def training_rng():
    """A numpy generator drawn from torch's global one, which fairseq seeds per step."""
    return np.random.default_rng(int(torch.randint(2 ** 62, ())))


def collate_media(samples):
    """net_input entries of the samples' media: per medium, the stacked inputs of the samples that
    have it and a B-long ``<medium>_present`` mask. Audio is padded to the batch's longest clip
    (rather than to --max-audio-seconds) and masked by its lengths."""
    media = {}
    for name in MEDIA_COLUMNS:
        have = [s for s in samples if s.get(name) is not None]
        if not have:
            continue
        media[f"{name}_present"] = torch.tensor([s.get(name) is not None for s in samples])
        if name == "audio":
            media["audio"] = pad_sequence([s["audio"] for s in have], batch_first=True)
            media["audio_lengths"] = torch.tensor([len(s["audio"]) for s in have])
        elif name == "image" and any(s["image"].dim() == 4 for s in have):  # rows of several images
            media["image"] = torch.cat([s["image"].reshape(-1, *s["image"].shape[-3:]) for s in have])
            media["image_counts"] = torch.tensor([image_count(s) for s in samples])
        else:
            media[name] = torch.stack([s[name] for s in have])
    if "video" in media:
        media["video_times"] = torch.stack([s["video_times"] for s in samples if s.get("video") is not None])
    return media


def image_count(sample):
    """How many images a sample holds: 0, 1, or K for its K x 3 x H x W stack."""
    image = sample.get("image")
    return 0 if image is None else 1 if image.dim() == 3 else len(image)
