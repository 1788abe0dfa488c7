"""Conversion time of the published benchmarks' converters, on generated files in each dataset's format.

    .venv/bin/python benchmarks/convert_benchmarks.py [--scale 0.1] [--only vqav2 refcoco ...]

Each dataset's largest file is generated with ``--scale`` times its published row count (media files
absent: converted with --allow-missing, so each cell is still checked), converted, and the time
extrapolated linearly to the full count. Files are written to a temporary folder, deleted afterwards.
"""
import argparse
import contextlib
import io
import json
import os
import pickle
import tempfile
import time

from common import machine_line, print_table

from preprocess import (audiocaps_to_tsv, karpathy_to_tsv, msrvtt_to_tsv, oven_to_tsv,  # noqa: E402
                        refcoco_to_tsv, snli_ve_to_tsv, vqav2_to_tsv)

HUMANS = ["2", "two", "3", "2", "yes", "2", "Two.", "3", "4", "2"]


def refcoco(folder, n):
    """RefCOCO (unc): 50,000 referred objects, 142,210 expressions (about 3 per object)."""
    refs = [{"ref_id": i, "ann_id": i, "image_id": i // 3, "split": "train", "category_id": 1,
             "sentences": [{"sent_id": 3 * i + k, "sent": f"man number {k} on the left", "raw": "x", "tokens": []}
                           for k in range(3)]} for i in range(n)]
    instances = {"images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg"} for i in range(n // 3 + 1)],
                 "annotations": [{"id": i, "image_id": i // 3, "bbox": [1, 2, 30, 40], "iscrowd": 0,
                                  "segmentation": [[1, 2, 31, 2, 31, 42, 1, 42]]} for i in range(n)]}
    with open(os.path.join(folder, "refs(unc).p"), "wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    with open(os.path.join(folder, "instances.json"), "w") as handle:
        json.dump(instances, handle)
    return refcoco_to_tsv, ["--refs", os.path.join(folder, "refs(unc).p"),
                            "--instances", os.path.join(folder, "instances.json")]


def vqav2(folder, n):
    questions = [{"image_id": i // 5, "question": "How many dogs are there?", "question_id": i} for i in range(n)]
    annotations = [{"question_id": i, "image_id": i // 5, "multiple_choice_answer": "2",
                    "answers": [{"answer": a, "answer_id": k + 1} for k, a in enumerate(HUMANS)]} for i in range(n)]
    for name, data in (("q.json", {"data_subtype": "train2014", "questions": questions}),
                       ("a.json", {"annotations": annotations})):
        with open(os.path.join(folder, name), "w") as handle:
            json.dump(data, handle)
    return vqav2_to_tsv, ["--questions", os.path.join(folder, "q.json"), "--annotations",
                          os.path.join(folder, "a.json"), "--answers-out", os.path.join(folder, "out", "answers.txt")]


def jsonl(folder, name, records):
    path = os.path.join(folder, name)
    with open(path, "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    return path


def snli_ve(folder, n):
    path = jsonl(folder, "snli_ve_train.jsonl", ({"Flikr30kID": f"{i // 15}.jpg", "gold_label": "neutral",
                                                  "sentence1": "Two dogs run in a field.", "sentence2": "Dogs play.",
                                                  "pairID": f"{i // 15}.jpg#{i}"} for i in range(n)))
    return snli_ve_to_tsv, ["--jsonl", path]


def msrvtt(folder, n):
    data = {"videos": [{"video_id": f"video{v}", "split": "train"} for v in range(n // 20)],
            "sentences": [{"video_id": f"video{i // 20}", "sen_id": i, "caption": "a man is singing a song"}
                          for i in range(n)]}
    with open(os.path.join(folder, "MSRVTT_data.json"), "w") as handle:
        json.dump(data, handle)
    return msrvtt_to_tsv, ["--annotations", os.path.join(folder, "MSRVTT_data.json")]


def msrvtt_qa(folder, n):
    path = os.path.join(folder, "train_qa.json")
    with open(path, "w") as handle:
        json.dump([{"answer": "man", "id": i, "question": "who is singing?", "video_id": i // 20} for i in range(n)],
                  handle)
    return msrvtt_to_tsv, ["--qa", path]


def audiocaps(folder, n):
    path = os.path.join(folder, "train.csv")
    with open(path, "w") as handle:
        handle.write("audiocap_id,youtube_id,start_time,caption\n")
        handle.writelines(f"{i},yt{i:07d},30,A dog barks while cars pass\n" for i in range(n))
    return audiocaps_to_tsv, ["--csv", path]


def oven(folder, n):
    path = jsonl(folder, "oven_entity_train.jsonl", (
        {"data_id": f"oven_entity_train_{i:08d}", "image_id": f"oven_{i:08d}", "question": "what is this building?",
         "entity_id": f"Q{i % 5000}", "entity_text": f"Entity {i % 5000}", "data_split": "train"}
        for i in range(n)))
    return oven_to_tsv, ["--jsonl", path]


def karpathy(folder, n):
    """dataset_coco.json: 123,287 images (82,783 train, 30,504 restval, 5,000 val, 5,000 test), 616,767
    sentences (332 images have a sixth); converted with --restval-in-train."""
    held_out, restval, sixth = round(5_000 * n / 123_287), round(30_504 * n / 123_287), round(332 * n / 123_287)
    raw = "A man with a red helmet on a small moped on a dirt road. "
    images = []
    for i in range(n):
        split = "val" if i < held_out else "test" if i < 2 * held_out else "restval" if i < 2 * held_out + restval \
            else "train"
        count = 6 if i < sixth else 5
        images.append({"filepath": "val2014", "filename": f"COCO_val2014_{i:012d}.jpg", "imgid": i, "split": split,
                       "cocoid": i, "sentids": list(range(6 * i, 6 * i + count)),
                       "sentences": [{"tokens": raw.lower().split(), "raw": raw, "imgid": i, "sentid": 6 * i + k}
                                     for k in range(count)]})
    with open(os.path.join(folder, "dataset_coco.json"), "w") as handle:
        json.dump({"images": images, "dataset": "coco"}, handle)
    return karpathy_to_tsv, ["--karpathy", os.path.join(folder, "dataset_coco.json"), "--restval-in-train"]


# name: (the largest file's rows as published, what a row is, generator)
DATASETS = {
    "refcoco": (50_000, "objects (142,210 expressions)", refcoco),
    "vqav2": (443_757, "train questions", vqav2),
    "snli_ve": (529_527, "train pairs", snli_ve),
    "msrvtt": (200_000, "captions of 10,000 videos", msrvtt),
    "msrvtt_qa": (158_581, "train questions", msrvtt_qa),
    "audiocaps": (49_838, "train captions (about)", audiocaps),
    "oven": (4_958_569, "entity train rows (about)", oven),
    "coco_karpathy": (123_287, "images (616,767 captions)", karpathy),
}


def time_conversion(name, scale):
    published, what, generate = DATASETS[name]
    rows = max(1, int(published * scale))
    with tempfile.TemporaryDirectory() as folder:
        module, argv = generate(folder, rows)
        argv += ["--media-dir", folder, "--allow-missing", "--out-dir", os.path.join(folder, "out")]
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            module.main(argv)
        seconds = time.perf_counter() - start
    return [name, f"{published:,} {what}", f"{rows:,}", f"{seconds:.1f}", f"{seconds * published / rows:.0f}"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1, help="share of the published row count generated")
    parser.add_argument("--only", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    args = parser.parse_args()
    print(machine_line())
    print_table(["dataset", "published size", "rows generated", "seconds", "seconds at full size (estimate)"],
                [time_conversion(name, args.scale) for name in args.only])


if __name__ == "__main__":
    main()
