"""The evaluation report (``evaluate.py --report DIR``): one self-contained HTML page.

``DIR/index.html`` needs nothing from the network: its pictures lie beside it in ``DIR/media/`` and a
few lines of inline script sort and filter the samples. At the top: the metrics of the whole run and
a legend of the two colours; below, one card per sample: the input (the image with boxes and masks
drawn on it, a video as the strip of its sampled frames, audio as its waveform, time spans as bars
under either), the prompt the model read, the prediction beside the reference, IE records as a table
with their mentions highlighted in the text, and the sample's own metrics, by which the page sorts.

The page knows nothing of tasks: the caller gives each sample's metrics and, for the samples drawn,
what the task makes of them (``SampleCard``): the row, the prompt, a ``SampleView`` and the row's media
({"image": PIL image, "video": (F x 3 x S x S uint8 frames, seconds), "audio": (mono samples, sample rate)}).
"""
import html
import json
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from evaluation.drawing import COLOURS, IMAGE_KINDS, SIDES, draw_on_image, frame_strip, image_png, waveform
from utils.files import atomic_open

REPORT_FRAME_SIZE = 160  # pixels of a video frame in the strip
DEFAULT_LIMIT = 200  # samples drawn on a page


@dataclass
class SampleView:
    """What the report shows of one prediction. ``marks``: ``evaluation.drawing.Mark`` s for the media;
    ``records``: IE table rows (side, kind, label, mentions); ``text``: the row's input text, in which
    ``highlights`` ((side, substring) pairs) are marked."""

    prediction: str
    reference: str
    marks: list = field(default_factory=list)
    records: list = field(default_factory=list)
    text: str = ""
    highlights: list = field(default_factory=list)


@dataclass
class SampleCard:
    """One drawn sample: its TSV ``row``, the ``prompt`` the model read, its ``view`` and ``media``."""

    row: object
    prompt: str
    view: SampleView
    media: dict


def ranking_metric(primary, scores):
    """The per-sample metric the page sorts by first: the task's primary one (ignoring case, as the
    full evaluation may spell it differently), else the first one the samples have."""
    names = [name for s in scores for name in s]
    for name in names:
        if name.lower() == primary.lower():
            return name
    return names[0] if names else ""


def chosen_samples(values, limit):
    """Indices of the samples drawn when there are more than ``limit``: the worst half by ``values``
    (missing values last) and the rest evenly spread over the others, in the original order."""
    if len(values) <= limit:
        return list(range(len(values)))
    order = sorted(range(len(values)), key=lambda i: (math.isnan(values[i]), values[i]))
    worst, rest = order[: limit // 2], sorted(order[limit // 2:])
    spread = [rest[int(k)] for k in np.linspace(0, len(rest) - 1, limit - len(worst))]
    return sorted(set(worst) | set(spread))


def write_report(out_dir, scores, primary, card_of, metrics, title, limit=DEFAULT_LIMIT):
    """Write ``out_dir/index.html`` and its pictures. ``scores``: each sample's metrics; ``primary``: the
    metric to sort by; ``card_of(i)``: the ``SampleCard`` of sample ``i``, asked only for the samples drawn."""
    os.makedirs(os.path.join(out_dir, "media"), exist_ok=True)
    key = ranking_metric(primary, scores)
    chosen = chosen_samples([float(s.get(key, math.nan)) for s in scores], limit)
    cards = []
    for i in chosen:
        card = card_of(i)
        pictures = write_pictures(render_media(card.media, card.view.marks), out_dir, f"{i:06d}")
        cards.append(sample_card(i, card.row, card.prompt, card.view, scores[i], pictures))
    names = sorted({name for i in chosen for name in scores[i]}, key=lambda n: (n != key, n))
    note = "" if len(chosen) == len(scores) else (
        f"{len(chosen)} of {len(scores)} samples drawn: the {limit // 2} worst by {key} and an even spread "
        "of the rest.")
    with atomic_open(os.path.join(out_dir, "index.html")) as f:
        f.write(page(title, metrics, names, cards, note))
    return os.path.join(out_dir, "index.html")


def render_media(media, marks):
    """The row's media drawn with the marks: [(kind, PNG bytes, description)], kind "image", "frames"
    or "audio". Spans go on the clip whose timeline they are in: the video's when there is one, else the
    audio's."""
    pictures = []
    if "image" in media:
        pictures.append(("image", image_png(draw_on_image(media["image"], [m for m in marks if m.kind in IMAGE_KINDS])),
                         "image"))
    spans = [m for m in marks if m.kind == "span"]
    if "video" in media:
        frames, duration = media["video"]
        pictures.append(("frames", frame_strip(frames, duration, spans), f"{len(frames)} frames of {duration:.2f} s"))
        spans = []
    if "audio" in media:
        samples, rate = media["audio"]
        pictures.append(("audio", waveform(samples, rate, spans), f"waveform of {len(samples) / rate:.2f} s"))
    return pictures


def write_pictures(pictures, out_dir, stem):
    """Write ``render_media``'s pictures as ``out_dir/media/<stem>-<kind>.png``; [(file relative to out_dir,
    description)]."""
    written = []
    for kind, png, description in pictures:
        path = f"media/{stem}-{kind}.png"
        with atomic_open(os.path.join(out_dir, path), "wb") as f:
            f.write(png)
        written.append((path, description))
    return written


def esc(value):
    return html.escape(str(value), quote=True)


def number(value):
    return f"{value:.4g}" if isinstance(value, float) else esc(value)


def highlighted(text, highlights):
    """``text`` as HTML with every whole-word occurrence of each highlight marked by its side's class."""
    flags = [set() for _ in text]
    for side, needle in highlights:
        for found in re.finditer(rf"(?<!\w){re.escape(needle)}(?!\w)", text) if needle.strip() else ():
            for k in range(found.start(), found.end()):
                flags[k].add(side)
    out, k = [], 0
    while k < len(text):
        end = k
        while end < len(text) and flags[end] == flags[k]:
            end += 1
        piece = esc(text[k:end])
        out.append(f'<mark class="{" ".join(sorted(flags[k]))}">{piece}</mark>' if flags[k] else piece)
        k = end
    return "".join(out)


def sample_card(position, row, prompt, view, scores, pictures):
    """One sample's card; ``data-scores`` holds its metrics for the sorting script."""
    path, line, _, _ = row.where(next(iter(row.cells)))
    uid = next(iter(row.cells.values()))
    searchable = " ".join([uid, prompt, view.text, view.prediction, view.reference]).lower()
    metric_text = " · ".join(f"{esc(k)} {number(v)}" for k, v in scores.items())
    parts = [f'<div class="sample" data-order="{position}" data-scores="{esc(json.dumps(scores))}" '
             f'data-text="{esc(searchable)}">',
             f'<div class="head"><b>{esc(uid)}</b> <span class="where">{esc(os.path.basename(path))} line {line}'
             f'</span> <span class="scores">{metric_text}</span></div>', '<div class="body"><div class="media">']
    parts += [f'<figure><img src="{esc(src)}" alt="{esc(alt)}"><figcaption>{esc(alt)}</figcaption></figure>'
              for src, alt in pictures]
    parts.append('</div><div class="texts">')
    parts.append(f'<p><span class="tag">prompt</span> {esc(prompt)}</p>')
    if view.text:
        parts.append(f'<p><span class="tag">text</span> {highlighted(view.text, view.highlights)}</p>')
    parts.append('<table class="pair">')
    parts += [f'<tr><th class="{side}">{side}</th><td>{esc(getattr(view, side))}</td></tr>' for side in SIDES]
    parts.append("</table>")
    if view.records:
        parts.append('<table class="records"><tr><th></th><th>record</th><th>label</th><th>mentions</th></tr>')
        parts += [f'<tr class="{side}"><td class="{side}">{side}</td><td>{esc(kind)}</td><td>{esc(label)}</td>'
                  f'<td>{esc(mentions)}</td></tr>' for side, kind, label, mentions in view.records]
        parts.append("</table>")
    parts.append("</div></div></div>")
    return "\n".join(parts)


def rgb(side, alpha=1.0):
    r, g, b = COLOURS[side]
    return f"rgba({r}, {g}, {b}, {alpha})"


STYLE = """
body { font: 14px/1.4 sans-serif; margin: 1.5em; color: #222; }
.metrics { display: grid; grid-template-columns: repeat(auto-fill, minmax(19em, 1fr)); gap: 2px 1.5em; }
.metrics span { font-family: monospace; }
.legend span.swatch { display: inline-block; width: 1.2em; height: 0.8em; margin: 0 0.3em 0 1em; }
.controls { margin: 1em 0; padding: 0.5em; background: #f3f3f3; }
.controls label { margin-right: 1em; }
.sample { border-top: 1px solid #ccc; padding: 0.8em 0; }
.sample .where { color: #777; margin-left: 0.5em; }
.sample .scores { float: right; font-family: monospace; }
.body { display: flex; flex-wrap: wrap; gap: 1em; margin-top: 0.4em; }
.media { display: flex; flex-wrap: wrap; gap: 0.5em; }
figure { margin: 0; } figcaption { color: #777; font-size: 12px; }
.texts { flex: 1; min-width: 20em; }
.tag { display: inline-block; min-width: 4.5em; color: #777; }
table.pair th, table.records td, table.records th { text-align: left; padding: 1px 8px 1px 0; vertical-align: top; }
mark { background: none; }
"""


def style():
    lines = [STYLE]
    for side in SIDES:
        lines.append(f"th.{side}, td.{side} {{ color: {rgb(side)}; }}")
        lines.append(f".swatch.{side} {{ background: {rgb(side)}; }}")
    lines.append(f"mark.reference {{ background: {rgb('reference', 0.2)}; }}")
    lines.append(f"mark.prediction {{ border-bottom: 2px solid {rgb('prediction')}; }}")
    return "\n".join(lines)


SCRIPT = """
const cards = Array.from(document.querySelectorAll(".sample"));
const scores = new Map(cards.map(card => [card, JSON.parse(card.dataset.scores)]));
const list = document.getElementById("samples");
const [key, order, below, filter, shown] = ["sort-key", "sort-order", "below", "filter", "shown"].map(
    id => document.getElementById(id));
function value(card) {
  const v = scores.get(card)[key.value];
  return typeof v === "number" ? v : NaN;
}
function update() {
  const sign = order.value === "worst" ? 1 : -1, needle = filter.value.toLowerCase(), limit = parseFloat(below.value);
  const sorted = cards.slice().sort((a, b) => {
    const x = value(a), y = value(b);
    if (isNaN(x) || isNaN(y)) return isNaN(x) - isNaN(y) || a.dataset.order - b.dataset.order;
    return sign * (x - y) || a.dataset.order - b.dataset.order;
  });
  let count = 0;
  for (const card of sorted) {
    const visible = card.dataset.text.includes(needle) && (isNaN(limit) || value(card) <= limit);
    card.hidden = !visible;
    count += visible;
    list.appendChild(card);
  }
  shown.textContent = count + " of " + cards.length + " samples shown";
}
for (const control of [key, order, below, filter]) control.addEventListener("input", update);
update();
"""


def page(title, metrics, names, cards, note):
    rows = "".join(f"<div><b>{esc(k)}</b> <span>{number(v)}</span></div>" for k, v in metrics.items())
    options = "".join(f'<option value="{esc(n)}">{esc(n)}</option>' for n in names)
    legend = "".join(f'<span class="swatch {side}"></span>{side}' for side in SIDES)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>{esc(title)}</title>
<style>{style()}</style>
</head>
<body>
<h1>{esc(title)}</h1>
<div class="metrics">{rows}</div>
<p class="legend">Colours:{legend}</p>
<p>{esc(note)}</p>
<div class="controls">
<label>sort by <select id="sort-key">{options}</select></label>
<label><select id="sort-order"><option value="worst">worst first</option><option value="best">best first</option>
</select></label>
<label>only at most <input id="below" type="number" step="any" size="6"></label>
<label>containing <input id="filter" type="search"></label>
<span id="shown"></span>
</div>
<div id="samples">
{"".join(cards)}
</div>
<script>{SCRIPT}</script>
</body>
</html>
"""
