"""Media cells (base64 or a path under --media-dir) to bytes, and image bytes to checked RGB pixels."""

import base64
import binascii
import io
import os
import stat
import struct
from dataclasses import dataclass

import torch
from PIL import ExifTags, Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg, decode_png
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
    other cell is base64 of the file bytes, in the standard or the URL-safe alphabet (OFA's and
    UnIVAL's readers use ``urlsafe_b64decode``, which takes both), with or without its padding.
    """
    if not cell:
        raise bad_input(where, "empty media cell")
    if "." in cell:
        return _read_media_file(cell, media_dir, where, max_bytes)
    padding = 2 if cell.endswith("==") else int(cell.endswith("="))
    _check_size(len(cell) * 3 // 4 - padding, "base64 cell", where, max_bytes)
    try:
        standard = cell.replace("-", "+").replace("_", "/")
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
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


# EXIF orientation -> (transpose, flipped dims) that turn the stored pixels (C x H x W) into the photo as
# displayed, as PIL's ImageOps.exif_transpose does; 1 (or any other value) leaves them as stored.
_ORIENTATIONS = {2: (False, (-1,)), 3: (False, (-2, -1)), 4: (False, (-2,)), 5: (True, ()), 6: (True, (-1,)),
                 7: (True, (-2, -1)), 8: (True, (-2,))}


@dataclass
class DecodedImage:
    """An image's RGB pixels and the size of the file's own pixel grid.

    Annotations and predictions live in the file's grid (``size``); the pixels may be fewer when
    a JPEG was decoded at a reduced scale, so consumers scale by ``pixels`` over ``size``. With
    ``exif_transpose`` the grid is that of the photo as displayed.
    """

    pixels: torch.Tensor  # uint8, 3 x h x w
    size: tuple[int, int]  # the file's (width, height)
    orientation: int = 1  # an EXIF orientation the pixels are stored in but were not turned by (1: none)

    def pil(self):
        return Image.fromarray(self.pixels.permute(1, 2, 0).numpy())


def decode_image(data, where, max_pixels=89_478_485, draft_size=None, exif_transpose=False):
    """Decode image bytes to RGB pixels, refusing images larger than ``max_pixels`` before decoding pixels.

    With ``draft_size``, a JPEG at least twice that size on both sides is decoded at 1/2, 1/4 or
    1/8 scale (libjpeg's DCT scaling, through PIL's draft mode), keeping both sides at least
    ``draft_size``: several times less decoding work for large photos. Truncated data is an error,
    never a partly black image: JPEG and PNG are decoded by libjpeg-turbo and libpng through
    torchvision, which refuse missing rows (PIL fills a PNG's missing rows with black), other formats by
    PIL with ``LOAD_TRUNCATED_IMAGES`` off. The pixels stay in the file's stored frame unless
    ``exif_transpose``, which turns them as the EXIF orientation says.
    """
    image = _open_header(data, where)
    width, height = image.size
    if width * height > max_pixels:
        raise bad_input(where, f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
    orientation = _exif_orientation(image, where)
    if draft_size:
        image.draft("RGB", (draft_size, draft_size))
    try:
        pixels = _decode_pixels(image, data, (width, height))
    except (OSError, SyntaxError, ValueError) as e:
        raise bad_input(where, f"cannot decode image: {e}") from None
    except RuntimeError as e:  # torchvision's decoders
        raise bad_input(where, f"cannot decode image: truncated or corrupt {image.format} data ({e})") from None
    if not exif_transpose or orientation == 1:
        return DecodedImage(pixels, (width, height), orientation)
    transpose, flips = _ORIENTATIONS[orientation]
    if transpose:
        pixels, width, height = pixels.transpose(-2, -1), height, width
    return DecodedImage(pixels.flip(flips).contiguous() if flips else pixels.contiguous(), (width, height))


def _decode_pixels(image, data, size):
    """uint8 3 x H x W RGB pixels of the image whose header PIL read, from its bytes ``data``."""
    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if image.format == "JPEG" and image.size == size:  # not drafted
        # torchvision's libjpeg-turbo decoder writes straight into a tensor (same pixels as PIL's, faster).
        return decode_jpeg(encoded, mode=ImageReadMode.RGB)
    if image.format == "PNG":
        pixels = decode_png(encoded, mode=ImageReadMode.RGB)
        return pixels if pixels.dtype == torch.uint8 else (pixels.to(torch.int32) >> 8).to(torch.uint8)  # 16 bits
    image.load()  # truncated files fail here rather than later in a transform
    return pil_to_tensor(image.convert("RGB"))


def _exif_orientation(image, where):
    """The EXIF orientation in the image's header (1 if none or not a valid one)."""
    try:
        if image.format == "PNG":  # PIL's getexif would decode the whole PNG to look for an eXIf chunk after IDAT
            exif = Image.Exif()
            exif.load(image.info.get("exif", b""))
        else:
            exif = image.getexif()
        orientation = exif.get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError, TypeError, struct.error) as e:
        raise bad_input(where, f"cannot read the image's EXIF data: {e}") from None
    return orientation if orientation in _ORIENTATIONS else 1


def image_size(data, where):
    """(width, height) of image bytes, read from the header alone."""
    return _open_header(data, where).size


def _open_header(data, where):
    try:
        return Image.open(io.BytesIO(data))  # reads only the header
    except UnidentifiedImageError:
        raise bad_input(where, "cannot decode image: not a known image format") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise bad_input(where, f"cannot decode image: {e}") from None
