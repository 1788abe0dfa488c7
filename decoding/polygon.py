"""The polygon syntax of masks, in one place: written, read back and constrained (DESIGN.md section 3).

A mask is one or more polygons, each ``<poly>`` then ``MIN_VERTICES`` to ``max_vertices`` (x, y) bin
pairs. Targets write every polygon clockwise on screen from its top-most, then left-most vertex, the
largest first, so an outline always gives the same tokens. refseg's output is a mask alone
(``PolygonSyntax``); an IE mention's ground may be one (ie/tokens.py, ie/grammar.py).
"""
import copy

import numpy as np
import torch

from decoding.constraints import Constraint
from geometry.codec import MIN_VERTICES


class MalformedPolygons(ValueError):
    pass


def canonical_polygon(bins):
    """(area, bins) of a flat bin polygon written clockwise on screen from its top-most, then
    left-most vertex: the same outline always gives the same tokens."""
    points = np.asarray(bins, dtype=np.int64).reshape(-1, 2)
    x, y = points[:, 0].astype(float), points[:, 1].astype(float)
    area = 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
    if area < 0:  # counter-clockwise on screen (y points down)
        points = points[::-1]
    first = int(np.lexsort((points[:, 0], points[:, 1]))[0])
    return abs(area), np.roll(points, -first, axis=0).ravel().tolist()


def polygon_tokens(bin_polygons, vocab):
    """Token ids of a mask: its canonical polygons, largest first."""
    ordered = sorted((canonical_polygon(p) for p in bin_polygons), key=lambda item: -item[0])
    return [t for _, polygon in ordered for t in [vocab.poly] + vocab.bin_ids(polygon)]


def read_polygons(ids, start, vocab, max_vertices=None):
    """The mask whose first ``<poly>`` is ``ids[start]``: (flat bin polygons, index after the mask);
    ``MalformedPolygons`` where a polygon has an odd count of bins or too few (or too many) vertices."""
    polygons, k = [], start
    while k < len(ids) and ids[k] == vocab.poly:
        end = k + 1
        while end < len(ids) and vocab.to_bin(ids[end]) is not None:
            end += 1
        polygon = [vocab.to_bin(t) for t in ids[k + 1:end]]
        if len(polygon) % 2 or len(polygon) < 2 * MIN_VERTICES or (
                max_vertices is not None and len(polygon) > 2 * max_vertices):
            raise MalformedPolygons(f"a polygon of {len(polygon)} bins at token {k}")
        polygons.append(polygon)
        k = end
    if not polygons:
        raise MalformedPolygons(f"no <poly> at token {start}")
    return polygons, k


def polygon_closable(coords):
    """Whether a polygon of ``coords`` bins may end here (an int, or a tensor of one entry a hypothesis)."""
    return (coords >= 2 * MIN_VERTICES) & (coords % 2 == 0)


def polygon_moves(coords, left, max_vertices, owed=0):
    """What may follow a polygon whose ``<poly>`` has ``coords`` bins after it, with ``left`` tokens
    (this one included) before EOS, ``owed`` of them needed after the mask: (another bin, the end of
    the polygon, a new ``<poly>`` once it has ended). Plain ints, or tensors of one entry a hypothesis."""
    shortest, more = 2 * MIN_VERTICES, coords + 1
    # bins still needed after one more to close the polygon: up to the shortest, else to an even count
    to_close = more % 2 + (shortest - more - more % 2) * (more < shortest)
    can_bin = (more <= 2 * max_vertices) & (1 + to_close + owed <= left)
    can_end = polygon_closable(coords)
    can_open = 1 + shortest + owed <= left
    return can_bin, can_end, can_open


class PolygonSyntax(Constraint):
    """A mask alone as the output, the last polygon followed by EOS.

    The state of a hypothesis is the number of tokens since its last ``<poly>``, read off the
    prefix with tensor operations for all hypotheses at once. With ``max_length`` (the most tokens
    before EOS; the generator's limit should be no smaller), a polygon is only started or extended
    where it can still be closed in time, so generation never ends inside a polygon.
    """

    def __init__(self, first_bin, num_bins, poly, eos, vocab_size, max_vertices, max_length=None):
        if max_vertices < MIN_VERTICES:
            raise ValueError(f"a polygon needs at least {MIN_VERTICES} vertices, got max_vertices {max_vertices}")
        self.poly, self.max_vertices, self.max_length = poly, max_vertices, max_length
        self.bins = torch.zeros(vocab_size, dtype=torch.bool)
        self.bins[first_bin:first_bin + num_bins] = True
        self.poly_only = torch.zeros(vocab_size, dtype=torch.bool)
        self.poly_only[poly] = True
        self.eos_only = torch.zeros(vocab_size, dtype=torch.bool)
        self.eos_only[eos] = True

    def with_max_length(self, max_length):
        other = copy.copy(self)
        other.max_length = max_length if self.max_length is None else min(self.max_length, max_length)
        return other

    def allowed(self, prefix, rows):
        n, step = prefix.shape
        device = prefix.device
        if step:
            positions = torch.arange(step, device=device)
            last_poly = torch.where(prefix == self.poly, positions, -1).amax(1)
        else:
            last_poly = torch.full((n,), -1, device=device)
        started = last_poly >= 0
        coords = step - 1 - last_poly  # bins in the open polygon (tokens since its <poly>)
        left = (1 << 30) if self.max_length is None else self.max_length - step
        can_bin, can_end, can_open = polygon_moves(coords, left, self.max_vertices)
        can_bin, can_end = can_bin & started, can_end & started
        can_open = (can_end | ~started) & can_open
        bins, poly, eos = (m.to(device)[None, :] for m in (self.bins, self.poly_only, self.eos_only))
        mask = (bins & can_bin[:, None]) | (poly & can_open[:, None])
        # EOS where the polygon may end, and as the way out of a state with no legal token
        return mask | (eos & (can_end[:, None] | ~mask.any(1, keepdim=True)))
