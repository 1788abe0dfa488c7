"""Media cells (base64 or a path under --media-dir) to bytes, and image bytes to checked RGB pixels."""

import base64
import binascii
import io
import os
from dataclasses import dataclass

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2.functional import pil_to_tensor

from data.errors import BadInputError


def bad_input(where, message):
    """A BadInputError at ``where`` = (tsv_path, line, column, column_name)."""
    tsv_path, line, column, column_name = where
    return BadInputError(tsv_path, line, column, message, column_name)


def read_media_bytes(cell, media_dir, where):
    """The file bytes a media cell stands for.

    A cell containing a "." is a path relative to ``media_dir`` (base64's alphabet has no "."); any
    other cell is base64 of the file bytes, in the standard or the URL-safe alphabet (OFA's and
    UnIVAL's readers use ``urlsafe_b64decode``, which takes both), with or without its padding.
    """
    if not cell:
        raise bad_input(where, "empty media cell")
    if "." in cell:
        return _read_media_file(cell, media_dir, where)
    try:
        standard = cell.replace("-", "+").replace("_", "/")
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError) as e:  # ValueError: a non-ASCII character
        raise bad_input(where, f"invalid base64: {e}") from None


def _read_media_file(relative_path, media_dir, where):
    if media_dir is None:
        raise bad_input(where, f"media path {relative_path!r} given but no media dir is set")
    if "\x00" in relative_path:
        raise bad_input(where, f"media path {relative_path!r} contains a NUL character")
    if os.path.isabs(relative_path):
        raise bad_input(where, f"media path {relative_path!r} must be relative to the media dir")
    root = os.path.realpath(media_dir)
    path = os.path.realpath(os.path.join(root, relative_path))
    if os.path.commonpath([root, path]) != root:
        raise bad_input(where, f"media path {relative_path!r} resolves outside the media dir {media_dir}")
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise bad_input(where, f"media file not found: {os.path.join(media_dir, relative_path)}") from None
    except OSError as e:
        raise bad_input(where, f"cannot read media file {os.path.join(media_dir, relative_path)}: {e}") from None


@dataclass
class DecodedImage:
    """An image's RGB pixels and the size of the file's own pixel grid.

    Annotations and predictions live in the file's grid (``size``); the pixels may be fewer when
    a JPEG was decoded at a reduced scale, so consumers scale by ``pixels`` over ``size``.
    """

    pixels: torch.Tensor  # uint8, 3 x h x w
    size: tuple[int, int]  # the file's (width, height)

    def pil(self):
        return Image.fromarray(self.pixels.permute(1, 2, 0).numpy())


def decode_image(data, where, max_pixels=89_478_485, draft_size=None):
    """Decode image bytes to RGB pixels, refusing images larger than ``max_pixels`` before decoding pixels.

    With ``draft_size``, a JPEG at least twice that size on both sides is decoded at 1/2, 1/4 or
    1/8 scale (libjpeg's DCT scaling, through PIL's draft mode), keeping both sides at least
    ``draft_size``: several times less decoding work for large photos.
    """
    image = _open_header(data, where)
    width, height = image.size
    if width * height > max_pixels:
        raise bad_input(where, f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
    if draft_size:
        image.draft("RGB", (draft_size, draft_size))
    try:
        if image.format == "JPEG" and image.size == (width, height):
            # torchvision's libjpeg-turbo decoder writes straight into a tensor (same pixels as PIL's, faster).
            pixels = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        else:
            image.load()  # truncated files fail here rather than later in a transform
            pixels = pil_to_tensor(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, RuntimeError) as e:
        raise bad_input(where, f"cannot decode image: {e}") from None
    return DecodedImage(pixels, (width, height))


def _open_header(data, where):
    try:
        return Image.open(io.BytesIO(data))  # reads only the header
    except UnidentifiedImageError:
        raise bad_input(where, "cannot decode image: not a known image format") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise bad_input(where, f"cannot decode image: {e}") from None
