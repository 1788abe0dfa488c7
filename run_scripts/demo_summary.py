"""Print the demo's metrics beside trivial baselines, for every task with results.

    python run_scripts/demo_summary.py --demo-dir dataset/demo --results-dir results

Baselines, scored by the same metric code as the model:
- refcoco: the mean training box, relative to the image size, placed on every image;
- refseg: the mean bounding box of the training masks, likewise, as a rectangular mask;
- caption, video_caption, audio_caption: the most frequent training caption, given for every sample;
- vqa, video_qa: the most frequent best training answer, given for every question;
- temporal_grounding: the whole clip, for every query;
- ner: the most frequent training entity (type and mention, ungrounded), for every sample;
- nlvr: the most frequent training label, for every statement;
- multi_image_qa: as vqa;
- multi_image_refcoco: the most frequent training image, with the mean training box relative to its size.
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

from utils.logs import MESSAGE_ONLY, add_verbose_flag, set_up_logging  # noqa: E402

if __name__ == "__main__":
    set_up_logging(fmt=MESSAGE_ONLY)  # before fairseq is imported (utils/logs.py says why)

from data.answers import best_answer, parse_answers  # noqa: E402
from data.dataset import Row  # noqa: E402
from data.media import read_media_bytes  # noqa: E402
from data.tsv import TsvFile  # noqa: E402
from evaluation.metrics import (caption_scores, grounding_scores, mask_overlap, overlap_scores,  # noqa: E402
                                seen_unseen_accuracy, temporal_grounding_scores, vqa_soft_accuracy)
from geometry.codec import LocationCodec  # noqa: E402
from ie.records import Entity, Mention, parse_records  # noqa: E402
from ie.scoring import IESample, annotation_records, ie_scores  # noqa: E402
from tasks.caption import normalise_caption  # noqa: E402
from tasks.vqa import VqaTask  # noqa: E402


def image_size(tsv, i, column, k=None):
    """(width, height) of the image in ``column`` of row ``i``: image ``k`` (0-based) of a JSON list if given."""
    where = (tsv.path, tsv.line_number(i), tsv.column_number(column), "image")
    cell = tsv.fields(i)[column]
    return Image.open(io.BytesIO(read_media_bytes(cell if k is None else json.loads(cell)[k], None, where))).size


def boxes_with_sizes(path):
    """(box, (width, height)) of every refcoco row: columns region (3) and image (4)."""
    tsv = TsvFile(path, selected_cols=[3, 4])
    for i in range(len(tsv)):
        yield [float(v) for v in tsv.fields(i)[0].split(",")], image_size(tsv, i, 1)


def mean_relative_box(boxes_and_sizes):
    return np.mean([np.array(box) / (w, h, w, h) for box, (w, h) in boxes_and_sizes], axis=0)


def refcoco_baseline(demo_dir, predictions):
    mean_box = mean_relative_box(boxes_with_sizes(f"{demo_dir}/refcoco_train.tsv"))
    refs, preds = [], []
    for box, (w, h) in boxes_with_sizes(f"{demo_dir}/refcoco_valid.tsv"):
        refs.append(box)
        preds.append(list(mean_box * (w, h, w, h)))
    return grounding_scores(preds, refs)


def chosen_boxes(path):
    """(1-based image, box, (width, height) of that image) of every multi_image_refcoco row: columns region
    (3), images (4) and image (5)."""
    tsv = TsvFile(path, selected_cols=[3, 4, 5])
    for i in range(len(tsv)):
        region, _, image = tsv.fields(i)
        yield int(image), [float(v) for v in region.split(",")], image_size(tsv, i, 1, int(image) - 1)


def multi_image_refcoco_baseline(demo_dir, predictions):
    train = list(chosen_boxes(f"{demo_dir}/multi_image_refcoco_train.tsv"))
    commonest = Counter(image for image, _, _ in train).most_common(1)[0][0]
    mean_box = mean_relative_box((box, size) for _, box, size in train)
    refs, preds = [], []
    for image, box, (w, h) in chosen_boxes(f"{demo_dir}/multi_image_refcoco_valid.tsv"):
        refs.append(box)
        preds.append(list(mean_box * (w, h, w, h)) if image == commonest else None)
    return grounding_scores(preds, refs)


def nlvr_baseline(demo_dir, predictions):
    train = TsvFile(f"{demo_dir}/nlvr_train.tsv", selected_cols=[3])
    commonest = Counter(train.fields(i)[0] for i in range(len(train))).most_common(1)[0][0]
    return seen_unseen_accuracy([p["label"] == commonest for p in predictions])


def polygons_with_sizes(path):
    """(polygons, (width, height)) of every demo refseg row: columns image (1) and annotation (5)."""
    tsv = TsvFile(path, selected_cols=[1, 5])
    for i in range(len(tsv)):
        regions = json.loads(tsv.fields(i)[1])["regions"]
        yield [polygon for region in regions for polygon in region["polygons"]], image_size(tsv, i, 0)


def bounding_box(polygons):
    xs = [x for polygon in polygons for x in polygon[0::2]]
    ys = [y for polygon in polygons for y in polygon[1::2]]
    return [min(xs), min(ys), max(xs), max(ys)]


def refseg_baseline(demo_dir, predictions):
    mean_box = mean_relative_box((bounding_box(polygons), size)
                                 for polygons, size in polygons_with_sizes(f"{demo_dir}/refseg_train.tsv"))
    codec = LocationCodec()
    overlaps = []
    for polygons, (w, h) in polygons_with_sizes(f"{demo_dir}/refseg_valid.tsv"):
        x0, y0, x1, y1 = mean_box * (w, h, w, h)
        guess = codec.rasterize([[x0, y0, x1, y0, x1, y1, x0, y1]], w, h)
        overlaps.append(mask_overlap(guess, codec.rasterize(polygons, w, h)))
    scores = overlap_scores(*zip(*overlaps))
    return {key: scores[key] for key in ("mIoU", "acc@0.5")}


def caption_baseline(name):
    def baseline(demo_dir, predictions):
        train = TsvFile(f"{demo_dir}/{name}_train.tsv", selected_cols=[2])
        commonest = Counter(normalise_caption(train.fields(i)[0]) for i in range(len(train))).most_common(1)[0][0]
        references = {p["uniq_id"]: p["references"] for p in predictions}
        return caption_scores({k: commonest for k in references}, references)
    return baseline


def vqa_baseline(name):
    def baseline(demo_dir, predictions):
        train = TsvFile(f"{demo_dir}/{name}_train.tsv", selected_cols=[0, 5, 2, 3])
        columns = VqaTask.columns[:4]
        answers = Counter(best_answer(parse_answers(Row(train, i, dict(zip(columns, train.fields(i))))))
                          for i in range(len(train)))
        commonest = answers.most_common(1)[0][0]
        return vqa_soft_accuracy([commonest] * len(predictions), [p["references"] for p in predictions])
    return baseline


def temporal_grounding_baseline(demo_dir, predictions):
    return temporal_grounding_scores([[0.0, p["duration"]] for p in predictions],
                                     [p["reference"] for p in predictions])


def ner_baseline(demo_dir, predictions):
    train = TsvFile(f"{demo_dir}/ner_train.tsv", selected_cols=[5])
    entities = Counter((e.type, e.mention.text) for i in range(len(train))
                       for e in parse_records(json.loads(train.fields(i)[0]), "ner"))
    kind, text = entities.most_common(1)[0][0]
    guess = [Entity(kind, Mention(text))]
    scores = ie_scores([IESample(guess, annotation_records(p["reference"]), p["mix"],
                                 tuple(p["size"]) if p["size"] else None) for p in predictions])
    return {key: scores[key] for key in ("entity/f1", "entity/grounded_f1")}


BASELINES = {
    "caption": caption_baseline("caption"),
    "refcoco": refcoco_baseline,
    "refseg": refseg_baseline,
    "video_caption": caption_baseline("video_caption"),
    "audio_caption": caption_baseline("audio_caption"),
    "video_qa": vqa_baseline("video_qa"),
    "vqa": vqa_baseline("vqa"),
    "temporal_grounding": temporal_grounding_baseline,
    "ner": ner_baseline,
    "nlvr": nlvr_baseline,
    "multi_image_qa": vqa_baseline("multi_image_qa"),
    "multi_image_refcoco": multi_image_refcoco_baseline,
}


def read_results(results_dir):
    with open(os.path.join(results_dir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(results_dir, "predictions.jsonl")) as f:
        return metrics, [json.loads(line) for line in f]


def print_table(rows):
    print(f"\n{'task':<20} {'metric':<20} {'model':>8} {'baseline':>9}")
    for task, metric, model, baseline in rows:
        print(f"{task:<20} {metric:<20} {model:>8.3f} {baseline:>9.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", default="dataset/demo")
    parser.add_argument("--results-dir", default="results")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    set_up_logging(args.verbose, MESSAGE_ONLY)
    rows = []
    for task, baseline in BASELINES.items():
        results = os.path.join(args.results_dir, task)
        if not os.path.exists(os.path.join(results, "metrics.json")):
            continue
        model, predictions = read_results(results)
        rows.extend((task, metric, model[metric], value)
                    for metric, value in baseline(args.demo_dir, predictions).items())
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
