"""Convert SNLI-VE (``snli_ve_{train,dev,test}.jsonl``) into snli_ve TSVs: pairID, image id, image,
hypothesis (``sentence2``), premise (``sentence1``, the image's Flickr30k caption), gold label.

Writes ``snli_ve_<name>.tsv`` per input file (name: the file's, less ``snli_ve_``); image cells are
the ``Flikr30kID`` file names (the dataset's spelling) under --media-dir (flickr30k_images). Pairs
without a gold label (``-``) are skipped and counted.

  python preprocess/snli_ve_to_tsv.py --jsonl snli_ve_train.jsonl snli_ve_dev.jsonl snli_ve_test.jsonl \\
      --media-dir flickr30k_images --out-dir data/snli_ve
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from preprocess.benchmark_common import jsonl_records, new_parser, required, run  # noqa: E402
from preprocess.coco_to_tsv import clean_caption  # noqa: E402
from tasks.snli_ve import ANSWERS  # noqa: E402
from utils.progress import track  # noqa: E402


def convert_file(path, output, out_dir):
    name = os.path.basename(path).rsplit(".", 1)[0].removeprefix("snli_ve_")
    out_path = os.path.join(out_dir, f"snli_ve_{name}.tsv")
    for number, record in track(jsonl_records(path), name, unit="pairs"):
        item = f"line {number}"
        label = required(record, "gold_label", path, item)
        if label not in ANSWERS:
            output.skip(f"gold label {label!r}")
            continue
        image = str(required(record, "Flikr30kID", path, item))
        hypothesis = clean_caption(required(record, "sentence2", path, item))
        premise = clean_caption(required(record, "sentence1", path, item))
        if not hypothesis:
            output.skip("empty hypothesis")
            continue
        output.add(out_path, [required(record, "pairID", path, item), image.rsplit(".", 1)[0],
                              output.media_cell(image, path, item), hypothesis, premise, label])


def convert(args, output):
    for path in args.jsonl:
        convert_file(path, output, args.out_dir)


def parse_args(argv=None):
    parser = new_parser(__doc__)
    parser.add_argument("--jsonl", nargs="+", required=True, help="snli_ve_<split>.jsonl files")
    return parser.parse_args(argv)


def main(argv=None):
    return run(convert, parse_args(argv))


if __name__ == "__main__":
    main()
