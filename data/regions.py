"""The regions of a refseg annotation cell, ``{"regions": [{"polygons": [[x0, y0, ...], ...]},
{"rle": {"size": [h, w], "counts": ...}}]}``: COCO polygons or a COCO RLE (crowds), checked against the
image, and the mask they make."""
import math

import numpy as np

from geometry.codec import MIN_VERTICES, outside_image
from geometry.masks import MaskError, decode_rle, mask_to_polygons


def parse_regions(row, annotation, width, height):
    """The annotation's regions as ("polygons", [flat pixel polygon, ...]) or ("mask", bool mask)
    pairs, checked against the image size; bad ones are errors in the annotation cell."""
    regions = annotation.get("regions")
    if not isinstance(regions, list) or not regions:
        raise row.error("annotation", f'expected "regions": a non-empty list, got {regions!r:.80}')
    parsed = []
    for i, region in enumerate(regions):
        if not isinstance(region, dict) or ("polygons" in region) == ("rle" in region):
            raise row.error("annotation", f'region {i} needs exactly one of "polygons" and "rle"')
        if "polygons" in region:
            parsed.append(("polygons", parse_polygons(row, i, region["polygons"], width, height)))
            continue
        try:
            mask = decode_rle(region["rle"], height, width)
        except MaskError as error:
            raise row.error("annotation", f"region {i}: RLE does not decode: {error}") from None
        if not mask.any():
            raise row.error("annotation", f"region {i}: RLE mask is empty")
        parsed.append(("mask", mask))
    return parsed


def parse_polygons(row, region, polygons, width, height):
    """A region's COCO polygons, each an even list of at least six finite numbers inside the image."""
    if not isinstance(polygons, list) or not polygons:
        raise row.error("annotation", f"region {region}: polygons must be a non-empty list of [x, y, ...] lists")
    for k, polygon in enumerate(polygons):
        where = f"region {region}, polygon {k}"
        if not isinstance(polygon, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon):
            raise row.error("annotation", f"{where}: expected a flat list of numbers [x0, y0, x1, y1, ...]")
        if len(polygon) % 2 or len(polygon) < 2 * MIN_VERTICES:
            raise row.error("annotation", f"{where}: needs an even number (>= {2 * MIN_VERTICES}) of coordinates, got {len(polygon)}")
        if not all(math.isfinite(v) for v in polygon):
            raise row.error("annotation", f"{where}: has non-finite coordinates")
        if outside_image(polygon[0::2], polygon[1::2], width, height):
            raise row.error("annotation", f"{where}: lies outside the {width}x{height} image")
    return polygons


def region_parts(regions):
    """Every polygon of the regions, a mask's traced outlines included (``mask_to_polygons``)."""
    return [part for kind, value in regions for part in (value if kind == "polygons" else mask_to_polygons(value))]


def reference_mask(regions, width, height, codec):
    """The union of the regions at the original resolution, exact (RLE masks as given)."""
    mask = np.zeros((height, width), dtype=bool)
    for kind, value in regions:
        mask |= codec.rasterize(value, width, height) if kind == "polygons" else value
    return mask
