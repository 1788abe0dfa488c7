"""Image transforms that move boxes and polygon vertices with the pixels (crop, flip, resize)."""

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


@dataclass
class TransformedImage:
    """An image in the model frame, with its boxes and polygons in that frame's pixels."""

    pixels: torch.Tensor  # uint8, 3 x size x size: the model normalises batches (models.image_encoder.model_pixels)
    boxes: np.ndarray | None  # (N, 4) x0, y0, x1, y1
    polygons: list | None  # per object, per part: (K, 2) vertices
    size: tuple[int, int]  # (width, height)
    flipped: bool

    def region(self):
        """The first object's box (or its polygons' box) as x0, y0, x1, y1 fractions of the frame."""
        if self.boxes is not None:
            corners = self.boxes[0].reshape(2, 2)
        else:
            vertices = np.concatenate(self.polygons[0])
            corners = np.stack([vertices.min(0), vertices.max(0)])
        return (corners / np.array(self.size, np.float32)).clip(0, 1).astype(np.float32).ravel()


class ImageTransform:
    """Resize to ``size`` x ``size``; in training, first a random crop keeping every object, then a random flip.

    Randomness comes from torch's global generator, so fairseq/torch seeding makes it reproducible.
    ``pil_bicubic`` resizes as OFA does (PIL's bicubic filter) rather than by torchvision's antialiased
    bilinear resize of tensors.
    """

    def __init__(self, size, train, crop_prob=0.0, hflip_prob=0.0, pil_bicubic=False):
        self.size, self.train, self.pil_bicubic = size, train, pil_bicubic
        self.crop_prob, self.hflip_prob = crop_prob, hflip_prob

    def __call__(self, image, boxes=None, polygons=None, frame=None):
        """``image``: uint8 3 x H x W pixels (or a PIL image); ``boxes``: (N, 4) x0, y0, x1, y1 and
        ``polygons``: per object, per part, flat [x0, y0, x1, y1, ...], both in the pixels of
        ``frame`` = (width, height), by default the image's own size (``DecodedImage`` explains
        why they may differ)."""
        image = F.to_image(image)
        height, width = image.shape[-2:]
        to_pixels = np.ones(2, np.float32) if frame is None else np.array(
            [width / frame[0], height / frame[1]], np.float32)
        canvas = (height, width)
        box_tensor = None if boxes is None else _as_boxes(boxes, canvas, to_pixels)
        vertices, part_lengths = _flatten_polygons(polygons, canvas, to_pixels)
        crop = self._crop_region(image, box_tensor, vertices)
        flipped = self.train and _happens(self.hflip_prob)
        image, box_tensor, vertices = self._move(image, box_tensor, vertices, crop, flipped)

        return TransformedImage(
            pixels=image.as_subclass(torch.Tensor),
            boxes=None if box_tensor is None else box_tensor.as_subclass(torch.Tensor).numpy(),
            polygons=None if vertices is None else _split_polygons(vertices, part_lengths),
            size=(self.size, self.size),
            flipped=flipped,
        )

    @staticmethod
    def center_crop(pixels, size):
        """The central ``size`` x ``size`` of ... x H x W pixels, zero-padded first on a side shorter than
        ``size``, as torchvision's ``CenterCrop`` (UnIVAL's video frames: cropped, never resized)."""
        height, width = pixels.shape[-2:]
        pad_h, pad_w = max(size - height, 0), max(size - width, 0)
        if pad_h or pad_w:
            pixels = torch.nn.functional.pad(pixels, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2))
            height, width = pixels.shape[-2:]
        top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
        return pixels[..., top:top + size, left:left + size]

    def _move(self, image, boxes, vertices, crop, flipped):
        """Crop and resize to the model frame, then maybe mirror; boxes and vertices follow the pixels."""
        size = [self.size, self.size]
        if self.pil_bicubic:
            image = F.to_image(F.resized_crop(F.to_pil_image(image), *crop, size=size,
                                              interpolation=v2.InterpolationMode.BICUBIC))
        else:
            image = F.resized_crop(image, *crop, size=size, antialias=True)
        boxes, vertices = [None if x is None else F.resized_crop(x, *crop, size=size) for x in (boxes, vertices)]
        if flipped:
            image, boxes = [None if x is None else F.horizontal_flip(x) for x in (image, boxes)]
            vertices = None if vertices is None else _mirror_x(vertices, self.size)
        return image, boxes, vertices

    def _crop_region(self, image, boxes, vertices):
        """(top, left, height, width) of the crop; the whole image unless a training crop happens."""
        height, width = image.shape[-2:]
        if not (self.train and _happens(self.crop_prob)):
            return 0, 0, height, width
        kept = _extent(boxes, vertices, width, height)
        if kept is None:
            return v2.RandomResizedCrop.get_params(image, scale=[0.5, 1.0], ratio=[3 / 4, 4 / 3])
        return _crop_containing(kept, width, height)


def _happens(probability):
    return probability > 0 and torch.rand(()).item() < probability


def _mirror_x(vertices, width):
    # Not F.horizontal_flip: for KeyPoints it maps x to W - 1 - x (pixel indices), but boxes and COCO
    # polygons use continuous coordinates, where the mirror of x is W - x.
    mirrored = vertices.clone()
    mirrored[:, 0] = width - vertices[:, 0]
    return mirrored


def _as_boxes(boxes, canvas, to_pixels):
    data = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 2) * to_pixels).reshape(-1, 4)
    return tv_tensors.BoundingBoxes(data, format="XYXY", canvas_size=canvas)


def _flatten_polygons(polygons, canvas, to_pixels):
    """All vertices as one (M, 2) KeyPoints, plus each object's part lengths to split them back."""
    if polygons is None:
        return None, None
    parts = [[np.asarray(part, dtype=np.float32).reshape(-1, 2) * to_pixels for part in obj] for obj in polygons]
    part_lengths = [[len(part) for part in obj] for obj in parts]
    flat = [part for obj in parts for part in obj]
    vertices = np.concatenate(flat) if flat else np.zeros((0, 2), np.float32)
    return tv_tensors.KeyPoints(torch.from_numpy(vertices), canvas_size=canvas), part_lengths


def _split_polygons(vertices, part_lengths):
    """Undo ``_flatten_polygons``: per object, per part, a (K, 2) array."""
    vertices = vertices.as_subclass(torch.Tensor).numpy()
    ends = iter(np.cumsum([n for lengths in part_lengths for n in lengths], dtype=int).tolist())
    return [[vertices[end - n:end] for n, end in zip(lengths, ends)] for lengths in part_lengths]


def _extent(boxes, vertices, width, height):
    """The union of every box and polygon vertex, clipped to the image; None if there are none."""
    points = [t.as_subclass(torch.Tensor).reshape(-1, 2) for t in (boxes, vertices) if t is not None]
    points = torch.cat(points) if points else torch.zeros((0, 2))
    if len(points) == 0:
        return None
    low, high = torch.tensor([0.0, 0.0]), torch.tensor([float(width), float(height)])
    x0, y0 = points.amin(0).clamp(low, high).tolist()
    x1, y1 = points.amax(0).clamp(low, high).tolist()
    return x0, y0, x1, y1


def _crop_containing(kept, width, height):
    """A random integer crop whose sides are drawn uniformly from the margins around ``kept``."""
    x0, y0, x1, y1 = kept
    u = torch.rand(4).tolist()
    left, top = math.floor(u[0] * x0), math.floor(u[1] * y0)
    right = max(math.ceil(x1 + u[2] * (width - x1)), left + 1)
    bottom = max(math.ceil(y1 + u[3] * (height - y1)), top + 1)
    return top, left, min(bottom, height) - top, min(right, width) - left
