"""Grounded IE on the published datasets, end to end: convert each dataset found under --root with the
documented commands, count what the rows hold, then train and validate its task a few updates with
unify_tiny through run_scripts/<task>/train.sh.

    .venv/bin/python benchmarks/real_ie.py --root /work/realdata [--work DIR] [--updates 4]

The datasets are looked for anywhere under --root, in their repositories' layouts:

- Twitter-2015/2017 (jefferyYu/UMT): folders ``twitter2015/``, ``twitter2017/`` holding
  ``train.txt valid.txt test.txt`` -> ner;
- Twitter-GMNER (NUSTM/GMNER): folders ``Twitter10000*/`` holding ``txt/{train,dev,test}.txt`` and
  ``xml/`` -> ner;
- MNRE (thecharm/MNRE): ``mnre_txt/`` holding ``mnre_{train,val,test}.txt`` (the published val file
  is named ``mnre_val .txt``) and ``Version-1/mnre_txt_org.zip`` (``txt/ours_{train,val,test}.txt``)
  -> re;
- M2E2 (limanling/m2e2): ``m2e2_annotations.zip`` or a ``m2e2_annotations/`` folder -> ee. M2E2
  is one annotated set without splits: the check trains on it and validates on its first rows.

Zips are unpacked into the work folder. The repositories ship no images: give a downloaded folder
with ``--images NAME=DIR`` (NAME as printed, e.g. twitter2015, mnre, m2e2); without one every row
is converted with --text-only-missing (its image and image grounds left out, counted as "rows
without their missing image"; the converters' per-row warnings go to DIR/<name>/convert.log).
The length limits are sized to the data by the task; validation reads the first --valid-rows rows
of the validation split.
"""
import argparse
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field

from common import ROOT, machine_line, print_table

from utils.logs import set_up_logging

if __name__ == "__main__":
    set_up_logging()  # before fairseq is imported (utils/logs.py says why)

from data.errors import BadInputError  # noqa: E402
from preprocess import build_vocab, gmner_to_tsv, m2e2_to_tsv, mnre_to_tsv, twitter_mner_to_tsv  # noqa: E402
from preprocess.ie_convert_common import schema_beside  # noqa: E402

VOCAB_SIZE = 2000
RECORD_KEYS = {"ner": "entities", "re": "relations", "ee": "events"}


@dataclass
class Dataset:
    """A dataset found under --root: its name, task, source folder and converter command per split
    (the first split is the training split, the second the validation split)."""

    name: str
    task: str
    source: str
    splits: list  # [(split name, converter module, argv without --out, --images and --schema)]
    notes: list = field(default_factory=list)


def find_datasets(root, work):
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        name = os.path.basename(folder)
        if name in ("twitter2015", "twitter2017") and {"train.txt", "valid.txt", "test.txt"} <= set(files):
            found.append(Dataset(name, "ner", folder, [
                (split, twitter_mner_to_tsv, ["--conll", os.path.join(folder, f"{split}.txt")])
                for split in ("train", "valid", "test")]))
        if name.startswith("Twitter10000") and os.path.isdir(os.path.join(folder, "xml")):
            found.append(Dataset(f"gmner-{name}", "ner", folder, [
                (split, gmner_to_tsv, ["--conll", os.path.join(folder, "txt", f"{split}.txt"),
                                       "--xml-dir", os.path.join(folder, "xml")])
                for split in ("train", "dev", "test")]))
            dirs.clear()  # thousands of xml files, nothing else
        files_of = {f.replace(" ", "")[len("mnre_"):-len(".txt")]: os.path.join(folder, f) for f in files
                    if f.replace(" ", "") in ("mnre_train.txt", "mnre_val.txt", "mnre_test.txt")}
        if name == "mnre_txt" and len(files_of) == 3:
            found.append(mnre_dataset("mnre", folder, files_of))
        if "mnre_txt_org.zip" in files:
            unpacked = unpack(os.path.join(folder, "mnre_txt_org.zip"), os.path.join(work, "unpacked", "mnre-v1"))
            found.append(mnre_dataset("mnre-v1", unpacked, {
                split: os.path.join(unpacked, "txt", f"ours_{split}.txt") for split in ("train", "val", "test")}))
        if "m2e2_annotations.zip" in files or name == "m2e2_annotations":
            annotations = (os.path.join(unpack(os.path.join(folder, "m2e2_annotations.zip"),
                                               os.path.join(work, "unpacked", "m2e2")), "m2e2_annotations")
                           if name != "m2e2_annotations" else folder)
            found.append(m2e2_dataset(annotations))
    return found


def mnre_dataset(name, source, files_of):
    others = [files_of["val"], files_of["test"]]
    splits = [("train", mnre_to_tsv, ["--mnre", files_of["train"], "--labels-from", *others])]
    splits += [(split, mnre_to_tsv, ["--mnre", files_of[split]]) for split in ("val", "test")]
    return Dataset(name, "re", source, splits)


def m2e2_dataset(folder):
    def at(name):
        return os.path.join(folder, name)
    argv = ["--text-events", at("text_only_event.json"), at("text_multimedia_event.json"),
            "--image-events", at("image_only_event.json"), at("image_multimedia_event.json"),
            "--coref", at("crossmedia_coref.txt")]
    return Dataset("m2e2", "ee", folder, [("all", m2e2_to_tsv, argv)],
                   notes=["M2E2 has no splits: trained on all rows, validated on its first rows"])


def unpack(archive, out):
    if not os.path.isdir(out):
        with zipfile.ZipFile(archive) as z:
            z.extractall(out, [n for n in z.namelist() if not n.startswith("__MACOSX")])
    return out


# ---- conversion and counts -------------------------------------------------------------------------

def convert(dataset, images, out_dir):
    """{split: (tsv path, Conversion, seconds)} converting every split with the dataset's schema."""
    results = {}
    os.makedirs(out_dir, exist_ok=True)
    log = os.path.join(out_dir, "convert.log")
    with open(log, "w", encoding="utf-8") as log_handle:
        for i, (split, module, argv) in enumerate(dataset.splits):
            out = os.path.join(out_dir, f"{split}.tsv")
            argv = argv + ["--out", out, "--images", images or os.path.join(out_dir, "no-images")]
            argv += [] if images else ["--text-only-missing"]
            argv += ["--schema", schema_beside(out)] if i else []
            start = time.perf_counter()
            with contextlib.redirect_stderr(log_handle), contextlib.redirect_stdout(io.StringIO()):
                conversion = module.convert(module.parse_args(argv))
            results[split] = (out, conversion, time.perf_counter() - start)
    return results


def tsv_counts(path):
    """Counter of what the rows of a converted TSV hold."""
    counts = Counter()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            cells = line.rstrip("\n").split("\t")
            annotation = json.loads(cells[5])
            counts["rows"] += 1
            counts["rows with image"] += bool(cells[1])
            counts["rows with text"] += bool(cells[4])
            for kind, records in annotation.items():
                if kind in ("entities", "relations", "events"):
                    count_records(kind, records, counts)
    return counts


def count_records(kind, records, counts):
    for record in records:
        counts["records"] += 1
        if kind == "entities":
            counts[f"entity {record['type']}"] += 1
            mentions = [record]
        elif kind == "relations":
            counts[f"relation {record['label']}"] += 1
            mentions = [record["head"], record["tail"]]
        else:
            counts[f"event {record['type']}"] += 1
            mentions = [record["trigger"], *record["arguments"]]
            counts["arguments"] += len(record["arguments"])
            counts.update(f"role {a['role']}" for a in record["arguments"])
        counts["grounded mentions"] += sum("ground" in m for m in mentions)


def oddities(conversion):
    return {what: n for what, n in conversion.counts.items() if what not in ("rows", "grounded mentions") and n}


def report_conversion(dataset, results):
    rows = []
    totals = Counter()
    for split, (path, conversion, seconds) in results.items():
        counts = tsv_counts(path)
        totals.update(counts)
        rows.append([split, counts["rows"], counts["rows with image"], counts["records"], counts["arguments"],
                     counts["grounded mentions"], seconds])
    print_table(["split", "rows", "with image", "records", "arguments", "grounded", "convert s"], rows)
    for kind in ("entity", "relation", "event", "role"):
        by_type = sorted(((k.split(" ", 1)[1], n) for k, n in totals.items() if k.startswith(kind + " ")),
                         key=lambda item: -item[1])
        if by_type:
            print(f"{kind} by type, all splits ({len(by_type)}): " + ", ".join(f"{t} {n}" for t, n in by_type))
    for split, (_, conversion, _) in results.items():
        odd = oddities(conversion)
        print(f"handled in {split}: " + ("; ".join(f"{n} {what}" for what, n in sorted(odd.items())) or "nothing"))
    return totals


# ---- training --------------------------------------------------------------------------------------

def head(path, count, out):
    with open(path, encoding="utf-8") as source, open(out, "w", encoding="utf-8") as target:
        for _, line in zip(range(count), source):
            target.write(line)
    return out


def train(dataset, results, images, out_dir, args):
    """Train and validate through the task's run script; (the last train and valid log lines, seconds)."""
    paths = [path for path, _, _ in results.values()]
    train_tsv, valid_tsv = paths[0], paths[1] if len(paths) > 1 else paths[0]
    vocab = os.path.join(out_dir, "vocab")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        build_vocab.main(["--input", f"{train_tsv}:4", "--out-dir", vocab, "--vocab-size", str(VOCAB_SIZE)])
    valid = head(valid_tsv, args.valid_rows, os.path.join(out_dir, "valid_head.tsv"))
    env = dict(os.environ, DATA=f"{train_tsv},{valid}", SCHEMA=schema_beside(train_tsv), VOCAB=vocab,
               MAX_UPDATE=str(args.updates), VALID_EVERY=str(args.updates), BATCH=str(args.batch), WARMUP="1",
               SAVE_DIR=os.path.join(out_dir, "checkpoints"), PYTHON=sys.executable)
    command = ["sh", os.path.join(ROOT, "run_scripts", dataset.task, "train.sh"),
               "--log-interval", "1", "--no-save"]
    command += ["--media-dir", images] if images else []
    start = time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    with open(os.path.join(out_dir, "train.log"), "w", encoding="utf-8") as log:
        log.write(run.stdout + run.stderr)
    if run.returncode:
        return None, (run.stdout + run.stderr).strip().splitlines()[-1], seconds
    lines = (run.stdout + run.stderr).splitlines()
    steps = [line.split("| train_inner |")[1] for line in lines if "| train_inner |" in line]
    valid_line = next(line.split("| valid |")[1] for line in lines if "| valid |" in line)
    return steps, valid_line, seconds


def losses(steps):
    return " -> ".join(part.split("=")[1].rstrip(",") for step in steps for part in step.split()
                       if part.startswith("loss="))


# ---- main ------------------------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder holding the datasets' repositories")
    parser.add_argument("--work", help="folder for the TSVs, vocabularies and logs (default: a temporary one)")
    parser.add_argument("--images", action="append", default=[], metavar="NAME=DIR",
                        help="a dataset's downloaded image folder (default: none, rows kept text-only)")
    parser.add_argument("--updates", type=int, default=4, help="training updates per task")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--valid-rows", type=int, default=32, help="validation rows (the split's first)")
    parser.add_argument("--no-train", action="store_true", help="convert and count only")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, force=True)  # no progress or debug lines between the figures
    images = dict(item.split("=", 1) for item in args.images)
    print(machine_line())
    print(f"root: {args.root}; training: unify_tiny, {args.updates} updates of batch {args.batch}, "
          f"limits sized to the data, validation on {args.valid_rows} rows")
    with contextlib.ExitStack() as stack:
        work = args.work or stack.enter_context(tempfile.TemporaryDirectory(prefix="uniground-real-ie-"))
        datasets = find_datasets(args.root, work)
        if not datasets:
            sys.exit(f"no dataset found under {args.root} (see --help for the layouts looked for)")
        failures = 0
        for dataset in datasets:
            failures += not check(dataset, images.get(dataset.name), os.path.join(work, dataset.name), args)
    sys.exit(1 if failures else 0)


def check(dataset, images, out_dir, args):
    """Convert, count, train and validate one dataset; False when a step failed."""
    print(f"\n== {dataset.name} ({dataset.task}) from {dataset.source}")
    print("images: " + (images or "none found, every row kept text-only (--text-only-missing)"))
    for note in dataset.notes:
        print(note)
    try:
        results = convert(dataset, images, out_dir)
    except BadInputError as error:
        print(f"conversion FAILED: {error}")
        return False
    report_conversion(dataset, results)
    if args.no_train:
        return True
    steps, valid_line, seconds = train(dataset, results, images, out_dir, args)
    if steps is None:
        print(f"training FAILED after {seconds:.1f} s: {valid_line} (log: {out_dir}/train.log)")
        return False
    print(f"train: {len(steps)} updates, loss {losses(steps)}; {seconds:.1f} s with start-up and validation")
    print(f"valid:{valid_line}")
    return True


if __name__ == "__main__":
    main()
