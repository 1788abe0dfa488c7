"""Several images in one row: an image cell holding a JSON list, and ``<image_k>`` markers in the text.

An image cell holds one image (base64 or a path under --media-dir), or a JSON list of such strings,
``["<base64>", "photos/b.jpg"]``. The row's text places image k (1-based) where it writes ``<image_k>``;
images no marker names come first, in order, before all text.
"""
import json
import re

from data.media import bad_input
from geometry.codec import MAX_IMAGES

MARKER = re.compile(r"<image_([0-9]+)>")


def image_cells(cell, where, max_images=MAX_IMAGES):
    """The media strings of an image cell: the cell itself, or the strings of its JSON list."""
    if not cell.startswith("["):
        return [cell]
    try:
        cells = json.loads(cell)
    except json.JSONDecodeError as error:
        raise bad_input(where, f"image list is not valid JSON: {error.msg} at character {error.pos}") from None
    if not isinstance(cells, list) or not cells:
        raise bad_input(where, "an image list must hold at least one image")
    kinds = sorted({type(c).__name__ for c in cells if not isinstance(c, str) or not c})
    if kinds:
        raise bad_input(where, f"an image list holds non-empty strings (base64 or paths), not {', '.join(kinds)}")
    limit = min(max_images, MAX_IMAGES)
    if len(cells) > limit:
        raise bad_input(where, f"{len(cells)} images, more than the limit of {limit} per row (--max-images)")
    return cells


def split_markers(text):
    """The text as its pieces between ``<image_k>`` markers: strings, and the 0-based image of each
    marker, in order."""
    pieces, start = [], 0
    for match in MARKER.finditer(text):
        pieces.extend([text[start:match.start()], int(match.group(1)) - 1])
        start = match.end()
    pieces.append(text[start:])
    return [piece for piece in pieces if piece != ""]


def check_markers(pieces, count, where):
    """Refuse a marker naming an image the row lacks, or one image placed twice."""
    named = [piece for piece in pieces if isinstance(piece, int)]
    for k in named:
        if not 0 <= k < count:
            raise bad_input(where, f"<image_{k + 1}> names an image the row lacks: it holds {count}")
    twice = sorted({k for k in named if named.count(k) > 1})
    if twice:
        raise bad_input(where, f"<image_{twice[0] + 1}> appears twice: each image has one place")
