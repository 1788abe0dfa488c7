"""Print the demo's metrics beside trivial baselines.

    python run_scripts/demo_summary.py --demo-dir dataset/demo --results-dir results

Baselines, scored by the same metric code as the model:
- refcoco: the mean training box, relative to the image size, placed on every image;
- caption: the most frequent training caption, given for every image.
"""
import argparse
import io
import json
import os
import sys
from collections import Counter

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.media import read_media_bytes  # noqa: E402
from data.tsv import TsvFile  # noqa: E402
from tasks.caption import normalise_caption  # noqa: E402
from utils.metrics import caption_scores, grounding_scores  # noqa: E402


def image_size(tsv, i, column):
    where = (tsv.path, tsv.line_number(i), tsv.column_number(column), "image")
    return Image.open(io.BytesIO(read_media_bytes(tsv.fields(i)[column], None, where))).size


def boxes_with_sizes(path):
    """(box, (width, height)) of every refcoco row: columns region (3) and image (4)."""
    tsv = TsvFile(path, selected_cols=[3, 4])
    for i in range(len(tsv)):
        yield [float(v) for v in tsv.fields(i)[0].split(",")], image_size(tsv, i, 1)


def refcoco_baseline(demo_dir):
    relative = [np.array(box) / (w, h, w, h) for box, (w, h) in boxes_with_sizes(f"{demo_dir}/refcoco_train.tsv")]
    mean_box = np.mean(relative, axis=0)
    refs, preds = [], []
    for box, (w, h) in boxes_with_sizes(f"{demo_dir}/refcoco_valid.tsv"):
        refs.append(box)
        preds.append(list(mean_box * (w, h, w, h)))
    return grounding_scores(preds, refs)


def caption_baseline(demo_dir):
    train = TsvFile(f"{demo_dir}/caption_train.tsv", selected_cols=[2])
    commonest = Counter(normalise_caption(train.fields(i)[0]) for i in range(len(train))).most_common(1)[0][0]
    valid = TsvFile(f"{demo_dir}/caption_valid.tsv", selected_cols=[0, 2])
    references = {}
    for i in range(len(valid)):
        uniq_id, captions = valid.fields(i)
        references[uniq_id] = [normalise_caption(c) for c in captions.split("&&")]
    return caption_scores({k: commonest for k in references}, references)


def print_table(rows):
    print(f"\n{'task':<10} {'metric':<10} {'model':>8} {'baseline':>9}")
    for task, metric, model, baseline in rows:
        print(f"{task:<10} {metric:<10} {model:>8.3f} {baseline:>9.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", default="dataset/demo")
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args(argv)
    baselines = {"caption": caption_baseline(args.demo_dir), "refcoco": refcoco_baseline(args.demo_dir)}
    rows = []
    for task, scores in baselines.items():
        with open(os.path.join(args.results_dir, task, "metrics.json")) as f:
            model = json.load(f)
        rows.extend((task, metric, model[metric], value) for metric, value in scores.items())
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
