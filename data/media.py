"""Media cells (base64 or a path under --media-dir) to bytes, and image bytes to checked RGB pixels."""

import base64
import binascii
import io
import os
import stat
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


MAX_MEDIA_BYTES = 1 << 30
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def read_media_bytes(cell, media_dir, where, max_bytes=MAX_MEDIA_BYTES):
    """The file bytes a media cell stands for, at most ``max_bytes`` of them.

    A cell containing a "." is a path relative to ``media_dir`` (base64's alphabet has no "."); any
    other cell is base64 of the file bytes.
    """
    if not cell:
        raise bad_input(where, "empty media cell")
    if "." in cell:
        return _read_media_file(cell, media_dir, where, max_bytes)
    padding = 2 if cell.endswith("==") else int(cell.endswith("="))
    _check_size(len(cell) * 3 // 4 - padding, "base64 cell", where, max_bytes)
    try:
        return base64.b64decode(cell, validate=True)
    except (binascii.Error, ValueError) as e:  # ValueError: a non-ASCII character
        raise bad_input(where, f"invalid base64: {e}") from None


def _read_media_file(relative_path, media_dir, where, max_bytes):
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
    shown = os.path.join(media_dir, relative_path)
    try:
        return _read_regular_file(path, shown, where, max_bytes)
    except FileNotFoundError:
        raise bad_input(where, f"media file not found: {shown}") from None
    except OSError as e:
        raise bad_input(where, f"cannot read media file {shown}: {e}") from None


def _read_regular_file(path, shown, where, max_bytes):
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``. A FIFO, socket or device
    (whose read may block forever or never end) is refused by its type before it is opened, and again
    once opened, in case the path was replaced in between; O_NONBLOCK keeps even that open from
    waiting for a FIFO's writer."""
    _check_regular_file(os.stat(path), shown, where, max_bytes)
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY), "rb") as f:
        _check_regular_file(os.fstat(f.fileno()), shown, where, max_bytes)
        data = f.read(max_bytes + 1)
    _check_size(len(data), f"media file {shown}", where, max_bytes)  # it grew after the check
    return data


def _check_regular_file(status, shown, where, max_bytes):
    if not stat.S_ISREG(status.st_mode):
        kind = next((kind for is_kind, kind in _FILE_KINDS if is_kind(status.st_mode)), "of another kind")
        raise bad_input(where, f"media file {shown} is {kind}, not a regular file")
    _check_size(status.st_size, f"media file {shown}", where, max_bytes)


def _check_size(size, what, where, max_bytes):
    if size > max_bytes:
        raise bad_input(where, f"{what} holds {size} bytes, more than the limit of {max_bytes} (--max-media-bytes)")


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
