"""Media cells (base64 or a path under --media-dir) to bytes, and image bytes to a checked RGB image."""

import base64
import binascii
import io
import os

from PIL import Image, UnidentifiedImageError

from data.errors import BadInputError


def bad_input(where, message):
    """A BadInputError at ``where`` = (tsv_path, line, column, column_name)."""
    tsv_path, line, column, column_name = where
    return BadInputError(tsv_path, line, column, message, column_name)


def read_media_bytes(cell, media_dir, where):
    """The file bytes a media cell stands for.

    A cell containing a "." is a path relative to ``media_dir`` (base64's alphabet has no "."); any
    other cell is base64 of the file bytes.
    """
    if not cell:
        raise bad_input(where, "empty media cell")
    if "." in cell:
        return _read_media_file(cell, media_dir, where)
    try:
        return base64.b64decode(cell, validate=True)
    except binascii.Error as e:
        raise bad_input(where, f"invalid base64: {e}") from None


def _read_media_file(relative_path, media_dir, where):
    if media_dir is None:
        raise bad_input(where, f"media path {relative_path!r} given but no media dir is set")
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


def decode_image(data, where, max_pixels=89_478_485):
    """Decode image bytes to an RGB image, refusing images larger than ``max_pixels`` before decoding pixels."""
    try:
        image = Image.open(io.BytesIO(data))  # reads only the header
    except UnidentifiedImageError:
        raise bad_input(where, "cannot decode image: not a known image format") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise bad_input(where, f"cannot decode image: {e}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise bad_input(where, f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
    try:
        image.load()  # truncated files fail here rather than later in a transform
        return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:
        raise bad_input(where, f"cannot decode image: {e}") from None
