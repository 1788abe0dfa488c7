"""Binary masks in pixels: COCO RLE decoding with validation, and mask -> polygon outlines.

The location codec turns polygons into tokens; a region given as a COCO RLE (crowd annotations,
segmentation datasets) first becomes polygons here. Neither scikit-image nor OpenCV is a
dependency of the project, so the outlines are traced directly on the pixel grid: every outer
boundary of a 4-connected component is followed along pixel edges ("crack following"), which gives
a polygon through pixel corners whose rasterisation is the component itself (holes are filled; a
polygon mask cannot hold them, as COCO's own polygons cannot).
"""
import numpy as np
from pycocotools import mask as mask_utils


class MaskError(ValueError):
    """An RLE that does not decode, or a size that does not match."""


# Steps of the four edge directions in image coordinates (y down): east, south, west, north.
# In this order (d + 1) % 4 is a right turn on screen.
_DX = np.array([1, 0, -1, 0])
_DY = np.array([0, 1, 0, -1])


def _compressed_counts(text):
    """The run lengths of COCO's compressed RLE string (pycocotools' rleFrString format): each
    number is written in 5-bit groups as characters from '0', the 0x20 bit marking that another
    group follows and the 0x10 bit of the last group its sign; from the third run on, a number
    is the difference to the run two places back."""
    counts, position = [], 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise MaskError("compressed RLE counts end in the middle of a number")
            group = ord(text[position]) - 48
            if not 0 <= group < 64:
                raise MaskError(f"compressed RLE counts hold the invalid character {text[position]!r}")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def decode_rle(rle, height=None, width=None):
    """A COCO RLE ``{"size": [h, w], "counts": str or [int, ...]}`` -> bool mask (h, w).

    Raises MaskError when the RLE is malformed (pycocotools reads some malformed strings past their
    end without complaint, so the runs are checked here first: non-negative, covering h * w pixels)
    or when ``height``/``width`` are given and differ from its size.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise MaskError('an RLE needs "size": [height, width] and "counts"')
    size = rle["size"]
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise MaskError(f"RLE size must be [height, width] with positive integers, got {size!r}")
    h, w = size
    if height is not None and (h, w) != (height, width):
        raise MaskError(f"RLE size {h}x{w} (height x width) differs from the image's {height}x{width}")
    counts = rle["counts"]
    if isinstance(counts, str):
        runs = _compressed_counts(counts)
    elif isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        runs = counts
    else:
        raise MaskError("RLE counts must be a compressed string or a list of integers")
    if any(v < 0 for v in runs):
        raise MaskError("RLE counts hold a negative run")
    if sum(runs) != h * w:
        raise MaskError(f"RLE runs cover {sum(runs)} pixels, not the {h}x{w} = {h * w} of its size")
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        rle = {"size": [h, w], "counts": counts.encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def encode_rle(mask):
    """bool mask (h, w) -> JSON-ready compressed COCO RLE."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _boundary_edges(mask):
    """Directed pixel edges between the mask and the background, foreground on their right:
    start corners (x, y) and directions, the outer boundaries running clockwise on screen."""
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1]
    neighbours = (padded[:-2, 1:-1], padded[1:-1, 2:], padded[2:, 1:-1], padded[1:-1, :-2])  # up, right, down, left
    # Corner where each side's edge starts, relative to the pixel's top-left corner, and its direction.
    starts = ((0, 0, 0), (1, 0, 1), (1, 1, 2), (0, 1, 3))
    xs, ys, ds = [], [], []
    for outside, (sx, sy, direction) in zip(neighbours, starts):
        rows, cols = np.nonzero(inside & ~outside)
        xs.append(cols + sx)
        ys.append(rows + sy)
        ds.append(np.full(len(rows), direction))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ds)


def _next_edges(xs, ys, ds, width):
    """For every edge, the edge that continues the boundary at its end corner: a right turn where
    two boundaries touch diagonally (so 4-connected components stay apart), else straight on or left."""
    stride = width + 1
    keys = (ys * stride + xs) * 4 + ds
    order = np.argsort(keys)
    sorted_keys = keys[order]
    end_corner = (ys + _DY[ds]) * stride + (xs + _DX[ds])
    following = np.full(len(ds), -1)
    for turn in (3, 0, 1):  # later turns overwrite earlier ones: right beats straight beats left
        wanted = end_corner * 4 + (ds + turn) % 4
        at = np.minimum(np.searchsorted(sorted_keys, wanted), len(keys) - 1)
        found = sorted_keys[at] == wanted
        following[found] = order[at[found]]
    return following


def _rings(following):
    """The cycles of the successor permutation, each as a list of edge indices."""
    seen = np.zeros(len(following), dtype=bool)
    rings = []
    for first in range(len(following)):
        if seen[first]:
            continue
        ring, edge = [], first
        while not seen[edge]:
            seen[edge] = True
            ring.append(edge)
            edge = following[edge]
        rings.append(np.array(ring))
    return rings


def mask_to_polygons(mask, max_polygons=None):
    """Outer outlines of a bool mask's 4-connected components as flat pixel polygons
    ``[x0, y0, x1, y1, ...]`` through pixel corners, largest area first; at most ``max_polygons``.
    Only the corners where the outline turns are kept. Holes are filled."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise MaskError(f"a mask is two-dimensional, got shape {mask.shape}")
    if not mask.any():
        return []
    xs, ys, ds = _boundary_edges(mask)
    following = _next_edges(xs, ys, ds, mask.shape[1])
    outlines = []
    for ring in _rings(following):
        turns = ring[ds[ring] != ds[np.roll(ring, 1)]]
        x, y = xs[turns].astype(float), ys[turns].astype(float)
        area = 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
        if area > 0:  # clockwise on screen: an outer boundary; holes run the other way
            outlines.append((area, np.stack([x, y], axis=1).ravel().tolist()))
    outlines.sort(key=lambda item: -item[0])
    return [polygon for _, polygon in outlines[:max_polygons]]
