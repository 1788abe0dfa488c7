import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from geometry.codec import (
    IE_TOKENS,
    IMAGE_TOKENS,
    MIN_VERTICES,
    POLY,
    CodecError,
    LocationCodec,
    bin_token,
    box_iou,
    ends_after_clip,
    outside_image,
    span_iou,
    special_tokens,
    time_token,
)

# pycocotools' decode trips a numpy 2 deprecation inside the library itself.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PROPERTY = settings(max_examples=200, deadline=None)

sizes = st.floats(min_value=1.0, max_value=5000.0, allow_nan=False)
num_bins = st.sampled_from([2, 10, 100, 1000, 2048])
unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def half_bin(size, bins):
    # Half a bin, plus float slack far below a bin.
    return 0.5 * size / (bins - 1) + 1e-9 * size


def mask_iou(a, b):
    return (a & b).sum() / (a | b).sum()


def circle(cx, cy, r, n, phase=0.0):
    angles = phase + np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1).ravel().tolist()


# --- tokens -------------------------------------------------------------------------------------

def test_token_names():
    assert bin_token(12) == "<bin_12>"
    assert time_token(3) == "<time_3>"


@pytest.mark.parametrize("b, t", [(1000, 100), (16, 4)])
def test_special_tokens_order_and_count(b, t):
    tokens = special_tokens(b, t)
    assert len(tokens) == b + t + 1 + 8 + 8
    assert len(set(tokens)) == len(tokens)
    assert tokens[:b] == [f"<bin_{i}>" for i in range(b)]
    assert tokens[b:b + t] == [f"<time_{i}>" for i in range(t)]
    assert tokens[b + t] == POLY == "<poly>"
    assert tokens[b + t + 1:b + t + 9] == list(IE_TOKENS)
    assert tokens[b + t + 9:] == list(IMAGE_TOKENS) == [f"<image_{k}>" for k in range(1, 9)]
    assert IE_TOKENS == ("<ent>", "<rel>", "<evt>", "<head>", "<tail>", "<trg>", "<arg>", "<is>")


def test_annotations_may_overhang_their_medium_by_the_tolerance_only():
    assert not outside_image([-1.0, 101.0], [0.0, 50.0], 100, 50)
    assert outside_image([-1.01, 50.0], [0.0, 50.0], 100, 50)
    assert outside_image([0.0, 50.0], [0.0, 51.01], 100, 50)
    assert not ends_after_clip(10.05, 10.0) and ends_after_clip(10.06, 10.0)


def test_a_polygon_needs_min_vertices():
    codec = LocationCodec()
    triangle = [0.0, 0.0, 10.0, 0.0, 0.0, 10.0]
    assert len(codec.encode_polygons([triangle], 20, 20)[0]) == 2 * MIN_VERTICES
    with pytest.raises(CodecError, match=f">= {2 * MIN_VERTICES}"):
        codec.encode_polygons([triangle[:-2]], 20, 20)
    with pytest.raises(CodecError, match=f">= {2 * MIN_VERTICES}"):
        codec.decode_polygons([[1, 2, 3, 4]], 20, 20)


def test_codec_rejects_bad_configuration():
    for kwargs in ({"num_bins": 1}, {"num_time_bins": 1}, {"max_poly_vertices": 2}):
        with pytest.raises(CodecError):
            LocationCodec(**kwargs)


# --- boxes --------------------------------------------------------------------------------------

@PROPERTY
@given(w=sizes, h=sizes, b=num_bins, xs=st.tuples(unit, unit), ys=st.tuples(unit, unit))
def test_box_round_trip_within_half_bin(w, h, b, xs, ys):
    (u0, u1), (v0, v1) = sorted(xs), sorted(ys)
    box = (u0 * w, v0 * h, u1 * w, v1 * h)
    assume(box[2] > box[0] and box[3] > box[1])
    codec = LocationCodec(num_bins=b)
    bins = codec.encode_box(box, w, h)
    assert all(isinstance(x, int) and 0 <= x <= b - 1 for x in bins)
    decoded = codec.decode_box(bins, w, h)
    for got, want, size in zip(decoded, box, (w, h, w, h)):
        assert abs(got - want) <= half_bin(size, b)


@PROPERTY
@given(w=sizes, h=sizes, xs=st.tuples(unit, unit), ys=st.tuples(unit, unit),
       margins=st.tuples(*[st.floats(0.0, 2.0)] * 4))
def test_box_partly_outside_is_clipped(w, h, xs, ys, margins):
    (u0, u1), (v0, v1) = sorted(xs), sorted(ys)
    inside = (u0 * w, v0 * h, u1 * w, v1 * h)
    assume(inside[2] > inside[0] and inside[3] > inside[1])
    box = (inside[0] - margins[0] * w, inside[1] - margins[1] * h, inside[2] + margins[2] * w, inside[3] + margins[3] * h)
    clipped = (max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h))
    codec = LocationCodec()
    decoded = codec.decode_box(codec.encode_box(box, w, h), w, h)
    for got, want, size in zip(decoded, clipped, (w, h, w, h)):
        assert abs(got - want) <= half_bin(size, 1000)


def test_box_clipping_to_edges():
    codec = LocationCodec()
    assert codec.encode_box((-50, -1, 700, 20), 640, 480) == (0, 0, 999, 42)
    assert codec.decode_box((0, 0, 999, 999), 640, 480) == (0.0, 0.0, 640.0, 480.0)


@pytest.mark.parametrize("box, w, h", [
    ((10, 10, 10, 20), 100, 100),                # zero width
    ((10, 30, 20, 20), 100, 100),                # y1 < y0
    ((100, 10, 150, 20), 100, 100),              # right of the image
    ((-30, 10, 0, 20), 100, 100),                # left of the image, touching the edge
    ((10, -20, 20, -5), 100, 100),               # above the image
    ((float("nan"), 10, 20, 20), 100, 100),
    ((0, 0, float("inf"), 20), 100, 100),
    ((0, 0, 10, 10), 0, 100),                    # non-positive image size
    ((0, 0, 10, 10), 100, -5),
    ((0, 0, 10, 10), float("nan"), 100),
    ((0, 0, 10), 100, 100),                      # wrong arity
])
def test_invalid_box_rejected(box, w, h):
    with pytest.raises(CodecError):
        LocationCodec().encode_box(box, w, h)


def test_box_error_names_values():
    with pytest.raises(CodecError, match="37"):
        LocationCodec().encode_box((37, 5, 12, 9), 100, 100)


@PROPERTY
@given(x0=st.floats(0, 100), dx=st.floats(-100, 0), y=st.floats(0, 50))
def test_degenerate_boxes_always_rejected(x0, dx, y):
    with pytest.raises(CodecError):
        LocationCodec().encode_box((x0, y, x0 + dx, y + 1), 100, 100)


@pytest.mark.parametrize("bins", [(0, 0, 1000, 10), (-1, 0, 5, 5), (0, 0, 5), (0.5, 0, 5, 5)])
def test_decode_box_rejects_bad_bins(bins):
    with pytest.raises(CodecError):
        LocationCodec().decode_box(bins, 100, 100)


# --- spans --------------------------------------------------------------------------------------

@PROPERTY
@given(d=st.floats(0.01, 10000.0), t=st.sampled_from([2, 100, 500]), us=st.tuples(unit, unit))
def test_span_round_trip_within_half_bin(d, t, us):
    start, end = sorted(u * d for u in us)
    codec = LocationCodec(num_time_bins=t)
    s, e = codec.encode_span(start, end, d)
    assert 0 <= s <= e <= t - 1
    got_start, got_end = codec.decode_span((s, e), d)
    assert abs(got_start - start) <= half_bin(d, t)
    assert abs(got_end - end) <= half_bin(d, t)


@PROPERTY
@given(d=st.floats(0.1, 1000.0), a=st.floats(-2.0, 3.0), b=st.floats(-2.0, 3.0))
def test_span_clipped_or_rejected(d, a, b):
    start, end = a * d, b * d
    codec = LocationCodec()
    if start > end or end < 0 or start > d:
        with pytest.raises(CodecError):
            codec.encode_span(start, end, d)
    else:
        got = codec.decode_span(codec.encode_span(start, end, d), d)
        for g, want in zip(got, (min(max(start, 0), d), min(max(end, 0), d))):
            assert abs(g - want) <= half_bin(d, 100)


@pytest.mark.parametrize("start, end, d", [
    (5, 4, 10), (-3, -1, 10), (11, 12, 10), (float("nan"), 2, 10), (0, 2, 0), (0, 2, float("inf")),
])
def test_invalid_span_rejected(start, end, d):
    with pytest.raises(CodecError):
        LocationCodec().encode_span(start, end, d)


def test_span_edges_and_decode_checks():
    codec = LocationCodec()
    assert codec.encode_span(-1.0, 30.0, 20.0) == (0, 99)
    assert codec.encode_span(5.0, 5.0, 20.0) == (25, 25)
    for bins in [(10, 9), (0, 100), (-1, 3)]:
        with pytest.raises(CodecError):
            codec.decode_span(bins, 20.0)


# --- polygons -----------------------------------------------------------------------------------

bin_points = st.lists(st.tuples(st.integers(0, 999), st.integers(0, 999)), min_size=3, max_size=32, unique=True)


@PROPERTY
@given(w=sizes, h=sizes, points=bin_points, offsets=st.lists(st.floats(-0.49, 0.49), min_size=64, max_size=64))
def test_polygon_within_budget_round_trips(w, h, points, offsets):
    pts = np.array(points)
    assume(np.linalg.matrix_rank(pts - pts[0]) == 2)
    # Pixel vertices that lie within half a bin of the chosen bins, so the expected encoding is known.
    jitter = np.array(offsets[:2 * len(points)]).reshape(-1, 2)
    pixels = np.clip((pts + jitter) / 999 * [w, h], 0, [w, h]).ravel().tolist()
    codec = LocationCodec()
    encoded = codec.encode_polygons([pixels], w, h)
    assert encoded == [pts.ravel().tolist()]
    (decoded,) = codec.decode_polygons(encoded, w, h)
    for i, (got, want) in enumerate(zip(decoded, pixels)):
        assert abs(got - want) <= half_bin(w if i % 2 == 0 else h, 1000)


@PROPERTY
@given(n=st.integers(3, 300), budget=st.integers(3, 40), seed=st.integers(0, 2**32 - 1))
def test_simplification_respects_budget(n, budget, seed):
    angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
    r = np.random.default_rng(seed).uniform(5, 45, n)
    star = np.stack([50 + r * np.cos(angles), 50 + r * np.sin(angles)], axis=1).ravel().tolist()
    codec = LocationCodec(max_poly_vertices=budget)
    for poly in codec.encode_polygons([star, circle(20, 20, 10, n)], 100, 100):
        assert 6 <= len(poly) <= 2 * budget
        assert len(poly) % 2 == 0


def test_circle_simplified_keeps_shape():
    original = circle(50, 50, 40, 200)
    codec = LocationCodec()
    (encoded,) = codec.encode_polygons([original], 100, 100)
    assert len(encoded) == 2 * 32
    simplified = codec.rasterize(codec.decode_polygons([encoded], 100, 100), 100, 100)
    assert mask_iou(simplified, codec.rasterize([original], 100, 100)) >= 0.9


@PROPERTY
@given(cx=st.floats(60, 140), cy=st.floats(60, 140), r=st.floats(15, 55), phase=st.floats(0, 2 * math.pi),
       n=st.integers(33, 400))
def test_simplified_circles_keep_high_iou(cx, cy, r, phase, n):
    original = circle(cx, cy, r, n, phase)
    codec = LocationCodec()
    encoded = codec.encode_polygons([original], 200, 200)
    assert len(encoded[0]) <= 64
    simplified = codec.rasterize(codec.decode_polygons(encoded, 200, 200), 200, 200)
    assert mask_iou(simplified, codec.rasterize([original], 200, 200)) >= 0.9


def test_dense_square_simplifies_to_its_corners():
    corners = np.array([[10, 10], [90, 10], [90, 90], [10, 90]], dtype=float)
    # 50 collinear points per edge: every vertex but the corners spans a zero-area triangle.
    dense = np.concatenate([np.linspace(corners[i], corners[(i + 1) % 4], 50, endpoint=False) for i in range(4)])
    codec = LocationCodec(max_poly_vertices=4)
    assert codec.encode_polygons([dense.ravel().tolist()], 100, 100) == [[100, 100, 899, 100, 899, 899, 100, 899]]


def test_multi_part_object_and_clipping():
    codec = LocationCodec()
    left = [-10, 10, 40, 10, 40, 60]         # one vertex outside: clipped to x = 0
    right = [60, 10, 90, 10, 90, 60, 60, 60]
    encoded = codec.encode_polygons([left, right], 100, 100)
    assert encoded == [[0, 100, 400, 100, 400, 599], [599, 100, 899, 100, 899, 599, 599, 599]]


def test_consecutive_duplicate_bins_dropped():
    codec = LocationCodec(num_bins=11)
    # The second vertex quantises to the same bin as the first.
    assert codec.encode_polygons([[0, 0, 1, 1, 100, 0, 100, 100]], 100, 100) == [[0, 0, 10, 0, 10, 10]]


def test_collapsed_polygons_dropped_or_rejected():
    codec = LocationCodec()
    tiny = [50, 50, 50.01, 50, 50.01, 50.01]          # all vertices in one bin
    line = [10, 10, 20, 20, 30, 30]                     # collinear
    outside = [120, 10, 150, 10, 150, 40]               # collapses onto the right edge
    good = [10, 10, 40, 10, 40, 40]
    assert codec.encode_polygons([tiny, good, line, outside], 100, 100) == [[100, 100, 400, 100, 400, 400]]
    for polygons in ([tiny], [line, outside], []):
        with pytest.raises(CodecError):
            codec.encode_polygons(polygons, 100, 100)


@pytest.mark.parametrize("polygon", [
    [0, 0, 10, 10],                         # 2 vertices
    [0, 0, 10, 0, 10, 10, 5],               # odd length
    [0, 0, 10, 0, float("nan"), 10],
])
def test_invalid_polygon_rejected(polygon):
    with pytest.raises(CodecError):
        LocationCodec().encode_polygons([polygon, [0, 0, 50, 0, 50, 50]], 100, 100)


@pytest.mark.parametrize("bins", [[0, 0, 5, 5], [0, 0, 5, 5, 9], [0, 0, 5, 5, 1000, 3]])
def test_decode_polygons_rejects_bad_bins(bins):
    with pytest.raises(CodecError):
        LocationCodec().decode_polygons([bins], 100, 100)


def test_rasterize_rectangle():
    codec = LocationCodec()
    mask = codec.rasterize([[10, 20, 50, 20, 50, 60, 10, 60]], 100, 80)
    assert mask.shape == (80, 100) and mask.dtype == bool
    assert mask.sum() == 40 * 40
    assert mask[20:60, 10:50].all()
    two = codec.rasterize([[10, 20, 50, 20, 50, 60, 10, 60], [60, 0, 70, 0, 70, 10, 60, 10]], 100, 80)
    assert two.sum() == 40 * 40 + 10 * 10
    assert not codec.rasterize([], 100, 80).any()
    with pytest.raises(CodecError):
        codec.rasterize([[0, 0, 10, 10]], 100, 80)


# --- IoU ----------------------------------------------------------------------------------------

def test_iou_known_values():
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert span_iou((0, 10), (5, 20)) == pytest.approx(0.25)
    assert span_iou((0, 1), (2, 3)) == 0.0
    assert span_iou((1, 1), (1, 1)) == 0.0


@PROPERTY
@given(a=st.tuples(unit, unit, unit, unit), b=st.tuples(unit, unit, unit, unit))
def test_iou_properties(a, b):
    a = (min(a[0], a[2]), min(a[1], a[3]), max(a[0], a[2]), max(a[1], a[3]))
    b = (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))
    assert 0.0 <= box_iou(a, b) <= 1.0 + 1e-12
    assert box_iou(a, b) == pytest.approx(box_iou(b, a))
    if (a[2] - a[0]) * (a[3] - a[1]) > 1e-9:
        assert box_iou(a, a) == pytest.approx(1.0)
    assert 0.0 <= span_iou(a[::2], b[::2]) <= 1.0 + 1e-12
    if a[2] - a[0] > 1e-9:
        assert span_iou(a[::2], a[::2]) == pytest.approx(1.0)
