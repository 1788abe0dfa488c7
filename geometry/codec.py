"""Location codec: the only place converting pixels/seconds <-> location and time bins (DESIGN.md section 3).

A coordinate c in an extent of `size` maps to bin round(c / size * (N - 1)) and decodes to bin / (N - 1) * size,
so a round trip is exact to within half a bin.
"""

import math

import numpy as np
from pycocotools import mask as mask_utils


class CodecError(ValueError):
    """Degenerate or invalid geometry, or bins that do not decode."""


POLY = "<poly>"
IE_TOKENS = ("<ent>", "<rel>", "<evt>", "<head>", "<tail>", "<trg>", "<arg>", "<is>")
MAX_IMAGES = 8  # most images a row may hold: one marker and image-index token each
IMAGE_TOKENS = tuple(f"<image_{k}>" for k in range(1, MAX_IMAGES + 1))  # image k of a row (1-based)
MIN_VERTICES = 3  # fewest vertices of a polygon, in pixels, in bins and in tokens
# How far an annotation may reach past its medium and still be rounding in a public dataset (beyond, it
# is an error in the row); what lies within is clipped by the codec. The span tolerance is the same for
# every task: about a frame at 25 fps, by which a container's duration and an annotated one differ.
IMAGE_TOLERANCE = 1.0  # pixels
SPAN_TOLERANCE = 0.05  # seconds


def bin_token(i: int) -> str:
    return f"<bin_{i}>"


def time_token(i: int) -> str:
    return f"<time_{i}>"


def special_tokens(num_bins: int, num_time_bins: int) -> list[str]:
    """Special tokens in dictionary order: location bins, time bins, <poly>, IE tokens, image tokens."""
    return (
        [bin_token(i) for i in range(num_bins)]
        + [time_token(i) for i in range(num_time_bins)]
        + [POLY, *IE_TOKENS, *IMAGE_TOKENS]
    )


def box_iou(a, b) -> float:
    """IoU of two pixel boxes (x0, y0, x1, y1); 0.0 when the union is empty."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def span_iou(a, b) -> float:
    """Temporal IoU of two spans (start, end); 0.0 when the union is empty."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return float(inter / union) if union > 0 else 0.0


def outside_image(xs, ys, width, height) -> bool:
    """Whether any of the points (``xs``, ``ys``) lies further than IMAGE_TOLERANCE outside the image."""
    t = IMAGE_TOLERANCE
    return min(xs) < -t or min(ys) < -t or max(xs) > width + t or max(ys) > height + t


def ends_after_clip(end, duration) -> bool:
    """Whether a span ending at ``end`` seconds overhangs a clip of ``duration`` by more than SPAN_TOLERANCE."""
    return end > duration + SPAN_TOLERANCE


def _check_extent(name: str, value) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise CodecError(f"{name} must be finite and positive, got {value}")
    return value


def _finite_array(name: str, values, length: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if length is not None and arr.shape != (length,):
        raise CodecError(f"{name} needs {length} values, got {arr.tolist()}")
    if not np.all(np.isfinite(arr)):
        raise CodecError(f"{name} has non-finite values: {arr.tolist()}")
    return arr


def _polygon_coords(polygon) -> np.ndarray:
    """A flat pixel polygon [x0, y0, x1, y1, ...] as an array: finite, at least MIN_VERTICES (x, y) pairs."""
    coords = _finite_array("polygon", polygon)
    if coords.ndim != 1 or len(coords) % 2 or len(coords) < 2 * MIN_VERTICES:
        raise CodecError(f"polygon needs an even number (>= {2 * MIN_VERTICES}) of coordinates, got {len(coords)}")
    return coords


def _bin_array(name: str, bins, num_bins: int, length: int | None = None) -> np.ndarray:
    arr = np.asarray(bins)
    if length is not None and arr.shape != (length,):
        raise CodecError(f"{name} needs {length} bins, got {arr.tolist()}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise CodecError(f"{name} must be integers, got {arr.tolist()}")
    if np.any(arr < 0) or np.any(arr > num_bins - 1):
        raise CodecError(f"{name} {arr.tolist()} outside [0, {num_bins - 1}]")
    return arr.astype(np.int64)


def _quantize(values: np.ndarray, size: float, num_bins: int) -> np.ndarray:
    return np.rint(values / size * (num_bins - 1)).astype(np.int64)


def _dequantize(bins: np.ndarray, size: float, num_bins: int) -> np.ndarray:
    return bins / (num_bins - 1) * size


def _triangle_areas(points: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Twice the area of the triangle each vertex idx spans with its ring neighbours."""
    prev, cur, nxt = points[idx - 1], points[idx], points[(idx + 1) % len(points)]
    return np.abs((prev[:, 0] - cur[:, 0]) * (nxt[:, 1] - cur[:, 1])
                  - (nxt[:, 0] - cur[:, 0]) * (prev[:, 1] - cur[:, 1]))


def _simplify_ring(points: np.ndarray, max_vertices: int) -> np.ndarray:
    """Visvalingam-Whyatt on a closed ring: drop the vertex with the smallest triangle until within budget.

    Ties go to the lowest index, so the result is deterministic.
    """
    points = np.array(points, dtype=float)
    areas = _triangle_areas(points, np.arange(len(points)))
    while len(points) > max_vertices:
        i = int(np.argmin(areas))
        points = np.delete(points, i, axis=0)
        areas = np.delete(areas, i)
        # Only the two neighbours of the removed vertex change their triangle.
        neighbours = np.array([(i - 1) % len(points), i % len(points)])
        areas[neighbours] = _triangle_areas(points, neighbours)
    return points


class LocationCodec:
    """Encodes boxes, time spans and polygon masks as bin indices and back."""

    def __init__(self, num_bins: int = 1000, num_time_bins: int = 100, max_poly_vertices: int = 32):
        if num_bins < 2 or num_time_bins < 2 or max_poly_vertices < 3:
            raise CodecError(
                f"need num_bins >= 2, num_time_bins >= 2, max_poly_vertices >= 3; got "
                f"{num_bins}, {num_time_bins}, {max_poly_vertices}"
            )
        self.num_bins = num_bins
        self.num_time_bins = num_time_bins
        self.max_poly_vertices = max_poly_vertices

    def encode_box(self, box, width, height) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1) -> 4 bins, clipped to the image."""
        width, height = _check_extent("image width", width), _check_extent("image height", height)
        x0, y0, x1, y1 = _finite_array("box", box, 4).tolist()
        if x1 <= x0 or y1 <= y0:
            raise CodecError(f"degenerate box {[x0, y0, x1, y1]}: need x0 < x1 and y0 < y1")
        clipped = np.clip([x0, y0, x1, y1], 0, [width, height, width, height])
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            raise CodecError(f"box {[x0, y0, x1, y1]} lies outside the {width}x{height} image")
        xs = _quantize(clipped[0::2], width, self.num_bins)
        ys = _quantize(clipped[1::2], height, self.num_bins)
        return int(xs[0]), int(ys[0]), int(xs[1]), int(ys[1])

    def decode_box(self, bins, width, height) -> tuple[float, float, float, float]:
        """4 bins -> pixel box (x0, y0, x1, y1)."""
        width, height = _check_extent("image width", width), _check_extent("image height", height)
        bins = _bin_array("box bins", bins, self.num_bins, 4)
        xs = _dequantize(bins[0::2], width, self.num_bins)
        ys = _dequantize(bins[1::2], height, self.num_bins)
        return float(xs[0]), float(ys[0]), float(xs[1]), float(ys[1])

    def encode_span(self, start, end, duration) -> tuple[int, int]:
        """Span in seconds -> 2 time bins, clipped to [0, duration]."""
        duration = _check_extent("duration", duration)
        start, end = _finite_array("span", (start, end), 2).tolist()
        if start > end:
            raise CodecError(f"span start {start} is after end {end}")
        if end < 0 or start > duration:
            raise CodecError(f"span ({start}, {end}) lies outside the clip [0, {duration}]")
        bins = _quantize(np.clip([start, end], 0, duration), duration, self.num_time_bins)
        return int(bins[0]), int(bins[1])

    def decode_span(self, bins, duration) -> tuple[float, float]:
        """2 time bins (s <= e) -> span in seconds."""
        duration = _check_extent("duration", duration)
        bins = _bin_array("span bins", bins, self.num_time_bins, 2)
        if bins[0] > bins[1]:
            raise CodecError(f"span bins {bins.tolist()} have start after end")
        start, end = _dequantize(bins, duration, self.num_time_bins)
        return float(start), float(end)

    def encode_polygons(self, polygons, width, height) -> list[list[int]]:
        """COCO flat pixel polygons -> flat bin polygons, clipped, simplified and deduplicated.

        Polygons that collapse (fewer than 3 distinct, non-collinear vertices) are dropped;
        if none remain the mask is rejected.
        """
        width, height = _check_extent("image width", width), _check_extent("image height", height)
        encoded = []
        for polygon in polygons:
            coords = _polygon_coords(polygon)
            points = np.clip(coords.reshape(-1, 2), 0, [width, height])
            points = _simplify_ring(points, self.max_poly_vertices)
            bins = np.stack([
                _quantize(points[:, 0], width, self.num_bins),
                _quantize(points[:, 1], height, self.num_bins),
            ], axis=1)
            bins = bins[np.any(bins != np.roll(bins, -1, axis=0), axis=1)]
            if len(bins) < MIN_VERTICES or np.linalg.matrix_rank(bins - bins[0]) < 2:
                continue
            encoded.append([int(b) for b in bins.ravel()])
        if not encoded:
            raise CodecError(f"no polygon of {len(polygons)} survives clipping and quantisation "
                             f"in a {width}x{height} image")
        return encoded

    def decode_polygons(self, bin_polygons, width, height) -> list[list[float]]:
        """Flat bin polygons -> flat pixel polygons."""
        width, height = _check_extent("image width", width), _check_extent("image height", height)
        decoded = []
        for polygon in bin_polygons:
            bins = _bin_array("polygon bins", polygon, self.num_bins)
            if bins.ndim != 1 or len(bins) % 2 or len(bins) < 2 * MIN_VERTICES:
                raise CodecError(f"bin polygon needs an even number (>= {2 * MIN_VERTICES}) of bins, got {len(bins)}")
            coords = np.empty(len(bins))
            coords[0::2] = _dequantize(bins[0::2], width, self.num_bins)
            coords[1::2] = _dequantize(bins[1::2], height, self.num_bins)
            decoded.append(coords.tolist())
        return decoded

    def rasterize(self, polygons, width, height) -> np.ndarray:
        """Flat pixel polygons -> bool mask of shape (height, width); empty when there are no polygons."""
        width, height = int(_check_extent("image width", width)), int(_check_extent("image height", height))
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        checked = []
        for polygon in polygons:
            coords = _polygon_coords(polygon)  # pycocotools would read a 4-value list as a box
            # pycocotools walks every edge pixel by pixel: far-out vertices would take unbounded memory.
            xs, ys = coords[0::2], coords[1::2]
            if xs.min() < -width or ys.min() < -height or xs.max() > 2 * width or ys.max() > 2 * height:
                raise CodecError(f"polygon lies more than an image size outside the {width}x{height} image")
            checked.append(coords.tolist())
        rles = mask_utils.frPyObjects(checked, height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
