"""Training curves as PNG files from a fairseq training log, without TensorBoard.

    python preprocess/plot_logs.py checkpoints/run/train.log --out-dir checkpoints/run/curves

Reads what train.py prints (or writes with ``--log-file``) in the ``simple``, ``tqdm`` or ``json``
``--log-format``: the periodic training lines (``train_inner``), the end-of-epoch averages (``train``)
and every validation (``valid`` and other subsets). Writes ``loss.png`` (training and validation loss
against updates) and one ``<subset>_<metric>.png`` per validation metric (the task's metrics from
``--eval-metrics``, nll_loss, ppl, ...), leaving out speeds and counters. Lines of other loggers, and
log lines wrapped with fairseq's ``date | LEVEL | name |`` prefix, are handled.
"""
import argparse
import json
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluation.drawing import new_figure, save_figure  # noqa: E402

NOT_PLOTTED = {"num_updates", "wps", "ups", "wpb", "bsz", "wall", "train_wall", "gb_free", "clip", "loss_scale"}
PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| \w+ \| [\w.]+ \| ")
SIMPLE_INNER = re.compile(r"^epoch \d+:\s+\d+ / \d+ (.*)$")
SIMPLE_VALID = re.compile(r"^epoch \d+ \| valid on '([^']+)' subset \| (.*)$")
SIMPLE_EPOCH = re.compile(r"^epoch \d+ \| (.*)$")


@dataclass
class Entry:
    """One logged set of statistics: ``kind`` "train_inner", "train" or "valid", the ``subset`` a
    validation ran on, and the values by name (without fairseq's ``valid_``/``train_`` prefixes)."""

    kind: str
    subset: str
    values: dict

    @property
    def update(self):
        return self.values["num_updates"]


def numbers(pairs):
    """{name: float} of the (name, text) pairs whose text is a number."""
    values = {}
    for name, text in pairs:
        try:
            values[name] = float(text)
        except (TypeError, ValueError):
            continue
    return values


def parse_json(record):
    if "num_updates" in record:
        return Entry("train_inner", "", numbers(record.items()))
    prefix = next((key[: -len("num_updates")] for key in record if key.endswith("_num_updates")), None)
    if prefix is None:
        return None
    values = numbers((key[len(prefix):], value) for key, value in record.items() if key.startswith(prefix))
    return Entry("train", "", values) if prefix == "train_" else Entry("valid", prefix[:-1], values)


def parse_line(line):
    """The Entry a log line holds, or None."""
    line = PREFIX.sub("", line.strip())
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return None
        return parse_json(record) if isinstance(record, dict) and "epoch" in record else None
    if match := SIMPLE_INNER.match(line):
        return Entry("train_inner", "", numbers(item.split("=", 1) for item in match.group(1).split(", ")))
    if match := SIMPLE_VALID.match(line):
        return Entry("valid", match.group(1), numbers(item.split(" ", 1) for item in match.group(2).split(" | ")))
    if match := SIMPLE_EPOCH.match(line):
        return Entry("train", "", numbers(item.split(" ", 1) for item in match.group(1).split(" | ")))
    return None


def parse_log(lines):
    """Every Entry with an update count, in log order."""
    return [entry for entry in map(parse_line, lines) if entry is not None and "num_updates" in entry.values]


def file_name(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def plot(series, path, title):
    """One PNG of named (updates, values) series."""
    figure = new_figure(figsize=(6, 3.5))
    ax = figure.subplots()
    for label, (updates, values) in series.items():
        ax.plot(updates, values, marker="o" if len(updates) < 30 else None, markersize=3, label=label)
    ax.set(xlabel="update", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    save_figure(figure, path, dpi=100)


def curves(entries):
    """{(kind, subset): {metric: ([updates], [values])}}."""
    found = defaultdict(lambda: defaultdict(lambda: ([], [])))
    for entry in entries:
        for name, value in entry.values.items():
            if name not in NOT_PLOTTED and not name.startswith("best_"):
                updates, values = found[entry.kind, entry.subset][name]
                updates.append(entry.update)
                values.append(value)
    return found


def write_plots(entries, out_dir):
    """loss.png and one PNG per validation metric; the paths written."""
    found = curves(entries)
    loss = {("training" if kind == "train_inner" else "training (epoch mean)" if kind == "train" else subset):
            metrics["loss"] for (kind, subset), metrics in found.items() if "loss" in metrics}
    if not loss:
        raise ValueError("no training or validation statistics with num_updates in the log")
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, "loss.png")]
    plot(loss, paths[0], "loss")
    for (kind, subset), metrics in sorted(found.items()):
        if kind != "valid":
            continue
        for name, series in sorted(metrics.items()):
            if name != "loss":
                paths.append(os.path.join(out_dir, file_name(f"{subset}_{name}") + ".png"))
                plot({subset: series}, paths[-1], f"{subset} {name}")
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", help="training logs (train.py's output or --log-file), in order")
    parser.add_argument("--out-dir", required=True, help="where the PNG files go")
    args = parser.parse_args(argv)
    entries = []
    for path in args.logs:
        with open(path, encoding="utf-8", errors="replace") as f:
            entries += parse_log(f)
    for path in write_plots(entries, args.out_dir):
        print(path)


if __name__ == "__main__":
    sys.exit(main())
