"""Pictures of predictions beside references for the evaluation report (evaluation/report.py).

Boxes, polygon masks and bit masks are drawn on the original image, scaled so its longer side is
``DISPLAY_SIDE`` pixels; time spans are drawn as bars under a strip of the sampled video frames or
under the audio waveform, on one axis in seconds of the whole clip. The reference and the prediction
have one colour each (``COLOURS``); the prediction is drawn last, so its outlines stay visible where
the two coincide.
"""
import io
import logging
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from utils.files import atomic_open

logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its font scan logs at DEBUG

SIDES = ("reference", "prediction")  # drawing order: the prediction on top
COLOURS = {"reference": (0, 114, 178), "prediction": (213, 94, 0)}  # Okabe-Ito blue and vermillion
DISPLAY_SIDE = 384  # pixels of the longer side of a drawn image
LINE_WIDTH = 2
FILL_ALPHA = 70  # of 255, for polygon and mask interiors
WAVEFORM_COLUMNS = 2000  # min/max envelope columns of a waveform
IMAGE_KINDS = ("box", "polygons", "mask")


@dataclass
class Mark:
    """One thing drawn on a medium: ``kind`` "box" (x0, y0, x1, y1 pixels), "polygons" (flat
    [x0, y0, x1, y1, ...] pixel polygons), "mask" (H x W bool array) or "span" (start, end seconds);
    ``side`` "reference" or "prediction"; ``label`` written beside it."""

    side: str
    kind: str
    value: object
    label: str = ""


def display_scale(size):
    """The factor from original pixels to drawn pixels for an image of ``size`` (width, height)."""
    return DISPLAY_SIDE / max(size)


def draw_on_image(image, marks):
    """A copy of the PIL ``image`` scaled by ``display_scale`` with the image marks drawn on it."""
    scale = display_scale(image.size)
    shown = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    marks = sorted((m for m in marks if m.kind in IMAGE_KINDS), key=lambda m: SIDES.index(m.side))
    fill = Image.new("RGBA", shown.size, (0, 0, 0, 0))
    for mark in marks:
        if mark.kind == "polygons":
            for polygon in mark.value:
                ImageDraw.Draw(fill).polygon(_scaled_points(polygon, scale), fill=COLOURS[mark.side] + (FILL_ALPHA,))
        elif mark.kind == "mask":
            layer = Image.new("RGBA", shown.size, COLOURS[mark.side] + (0,))
            alpha = Image.fromarray(np.asarray(mark.value, dtype=np.uint8) * FILL_ALPHA)
            layer.putalpha(alpha.resize(shown.size, Image.NEAREST))
            fill = Image.alpha_composite(fill, layer)
    shown = Image.alpha_composite(shown.convert("RGBA"), fill).convert("RGB")
    draw = ImageDraw.Draw(shown)
    for mark in marks:
        colour = COLOURS[mark.side]
        if mark.kind == "box":
            x0, y0, x1, y1 = scaled_box(mark.value, scale)
            draw.rectangle([x0, y0, x1, y1], outline=colour, width=LINE_WIDTH)
            anchor = (x0, y0)
        elif mark.kind == "polygons":
            for polygon in mark.value:
                draw.polygon(_scaled_points(polygon, scale), outline=colour, width=LINE_WIDTH)
            anchor = _first_point(mark.value, scale)
        else:
            anchor = None
        if mark.label and anchor is not None:
            _label(draw, anchor, mark.label, colour)
    return shown


def scaled_box(box, scale):
    """A box in drawn pixels: its outline's first pixels are at (x0, y0) and its last at (x1, y1),
    LINE_WIDTH wide inwards."""
    return [round(v * scale) for v in box]


def _scaled_points(polygon, scale):
    return [(x * scale, y * scale) for x, y in zip(polygon[0::2], polygon[1::2])]


def _first_point(polygons, scale):
    return (polygons[0][0] * scale, polygons[0][1] * scale) if polygons and polygons[0] else None


def _label(draw, anchor, text, colour):
    """``text`` on a white ground just above ``anchor`` (below it at the top edge)."""
    x, y = anchor
    left, top, right, bottom = draw.textbbox((0, 0), text)
    y = y - (bottom - top) - 4 if y >= bottom - top + 4 else y + LINE_WIDTH + 1
    draw.rectangle([x, y, x + right - left + 2, y + bottom - top + 2], fill=(255, 255, 255))
    draw.text((x + 1 - left, y + 1 - top), text, fill=colour)


def frame_strip(frames, duration, marks):
    """PNG bytes of the sampled video ``frames`` (F x 3 x S x S uint8, sampled at the centres of F equal
    segments, so frame i covers [i, i + 1) * duration / F) side by side over a seconds axis, with the
    span marks as bars under it."""
    strip = np.concatenate([np.asarray(f).transpose(1, 2, 0) for f in frames], axis=1)

    def draw(ax):
        ax.imshow(strip, extent=(0, duration, 0, 1), aspect="auto", interpolation="nearest")
        ax.set_yticks([])

    return _timeline(draw, duration, marks, width=max(6.0, len(frames) * 1.1))


def waveform(samples, sample_rate, marks):
    """PNG bytes of the waveform of mono ``samples`` (its min/max envelope) over a seconds axis, with the
    span marks as bars under it."""
    samples = np.asarray(samples, dtype=np.float32)
    duration = len(samples) / sample_rate
    columns = max(1, min(WAVEFORM_COLUMNS, len(samples)))
    edges = np.linspace(0, len(samples), columns + 1).astype(int)
    low = np.minimum.reduceat(samples, edges[:-1]) if len(samples) else np.zeros(1)
    high = np.maximum.reduceat(samples, edges[:-1]) if len(samples) else np.zeros(1)
    times = edges[:-1] / sample_rate

    def draw(ax):
        ax.fill_between(times, low, high, color="0.3", linewidth=0.5, step="post")
        ax.set_xlim(0, duration)
        ax.set_ylabel("amplitude")

    return _timeline(draw, duration, marks, width=8.0)


def _timeline(draw_medium, duration, marks, width):
    """PNG bytes of a figure of the medium over a bar track holding one row per side for the span marks."""
    spans = [m for m in marks if m.kind == "span"]
    figure = new_figure(figsize=(width, 2.6))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    draw_medium(top)
    for row, side in enumerate(SIDES):
        colour = tuple(c / 255 for c in COLOURS[side])
        for mark in (m for m in spans if m.side == side):
            start, end = mark.value
            bottom.broken_barh([(start, max(end - start, duration / 500))], (row + 0.15, 0.7), color=colour)
    bottom.set(ylim=(0, len(SIDES)), yticks=[r + 0.5 for r in range(len(SIDES))], yticklabels=SIDES,
               xlim=(0, duration), xlabel="seconds")
    figure.tight_layout()
    return figure_png(figure, dpi=80)


def image_png(image):
    """PNG bytes of a PIL image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def new_figure(figsize):
    """A matplotlib figure drawn by Agg, without pyplot: no global backend to choose, no figure for pyplot
    to keep (it is freed with its last reference)."""
    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure, dpi):
    """PNG bytes of a matplotlib figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(figure, path, dpi):
    """A matplotlib figure as a PNG at ``path``, written atomically."""
    png = figure_png(figure, dpi)
    with atomic_open(path, "wb") as f:
        f.write(png)
