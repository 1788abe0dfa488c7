"""Convert MSR-VTT captions (``MSRVTT_data.json``, or ``train_val_videodatainfo.json`` and
``test_videodatainfo.json``) into video_caption TSVs, and MSRVTT-QA (``{train,val,test}_qa.json``) into
video_qa TSVs. Video cells are ``<video_id>.mp4`` under --media-dir.

Captions: ``msrvtt_caption_<split>.tsv`` (uniq_id, video_id, caption, objects, video): the train split
one row per sentence, the others one row per video with its references joined by ``&&``. The split
of a video is its ``split`` field (train, validate, test) unless --split NAME=LIST gives lists of
video ids (one a line: the ``train_list_full.txt``/``val_list_full.txt``/``test_list_full.txt`` of the
7k/1k-A splits), the split ``train`` being the one read one row per sentence.

QA: ``msrvtt_qa_<name>.tsv`` per file (question id, video_id, question, ``1|!+answer``, objects,
video), accuracy being the share of exactly right answers as MSRVTT-QA scores it.

  python preprocess/msrvtt_to_tsv.py --media-dir MSRVTT/videos/all --out-dir data/msrvtt \\
      --annotations MSRVTT_data.json --qa train_qa.json val_qa.json test_qa.json
"""
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.answers import CONFIDENCE_SEPARATOR  # noqa: E402
from preprocess.benchmark_common import ConversionError, file_part, new_parser, required, run  # noqa: E402
from preprocess.coco_to_tsv import caption_lines, clean_caption  # noqa: E402
from preprocess.ie_convert_common import load_json_file  # noqa: E402
from utils.progress import track  # noqa: E402


def video_name(video_id):
    """MSRVTT-QA numbers its videos (7010); the caption files name them (``video7010``)."""
    return f"video{video_id}" if isinstance(video_id, int) else str(video_id)


def read_split_lists(specs):
    """{video_id: split} from NAME=FILE specs."""
    splits = {}
    for spec in specs:
        name, separator, path = spec.partition("=")
        if not separator:
            raise ConversionError(spec, "--split", "expected NAME=FILE")
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    splits[line.strip()] = name
    return splits


def add_captions(args, output):
    data, _ = load_json_file(args.annotations)
    listed = read_split_lists(args.split) if args.split else None
    splits = {}
    for number, video in enumerate(required(data, "videos", args.annotations, "top level"), start=1):
        video_id = required(video, "video_id", args.annotations, f"video {number}")
        split = listed.get(video_id) if listed is not None else required(video, "split", args.annotations,
                                                                         f"video {number}")
        splits[video_id] = split and file_part(split, args.annotations, f"video {number}")
    sentences = defaultdict(list)
    for number, sentence in enumerate(required(data, "sentences", args.annotations, "top level"), start=1):
        item = f"sentence {number}"
        sentences[required(sentence, "video_id", args.annotations, item)].append(
            {"id": required(sentence, "sen_id", args.annotations, item),
             "caption": required(sentence, "caption", args.annotations, item)})
    for video_id, split in track(splits.items(), "captions", unit="videos"):
        if split is None:
            output.skip("video in no --split list")
            continue
        captions = [c for c in sentences.get(video_id, []) if clean_caption(c["caption"])]
        if not captions:
            output.skip("video without captions")
            continue
        cell = output.media_cell(f"{video_id}.mp4", args.annotations, f"video {video_id}")
        output.add_lines(os.path.join(args.out_dir, f"msrvtt_caption_{split}.tsv"),
                         caption_lines(video_id, captions, split, cell))


def add_questions(path, args, output):
    data, _ = load_json_file(path)
    if not isinstance(data, list):
        raise ConversionError(path, "top level", "expected a list of questions")
    name = os.path.basename(path).rsplit(".", 1)[0].removesuffix("_qa")
    out_path = os.path.join(args.out_dir, f"msrvtt_qa_{name}.tsv")
    for number, record in enumerate(track(data, name, unit="questions"), start=1):
        item = f"question {number}"
        video = video_name(required(record, "video_id", path, item))
        question = clean_caption(required(record, "question", path, item))
        answer = clean_caption(str(required(record, "answer", path, item)))
        if not question or not answer:
            output.skip("empty question or answer")
            continue
        output.add(out_path, [required(record, "id", path, item), video, question,
                              f"1{CONFIDENCE_SEPARATOR}{answer}", "", output.media_cell(f"{video}.mp4", path, item)])


def convert(args, output):
    if args.annotations:
        add_captions(args, output)
    for path in args.qa or []:
        add_questions(path, args, output)


def parse_args(argv=None):
    parser = new_parser(__doc__)
    parser.add_argument("--annotations", help="MSRVTT_data.json (videos and sentences)")
    parser.add_argument("--split", action="append", metavar="NAME=FILE",
                        help="a split's video ids, one a line (repeat per split); default: each video's split field")
    parser.add_argument("--qa", nargs="+", help="MSRVTT-QA files: train_qa.json, val_qa.json, test_qa.json")
    args = parser.parse_args(argv)
    if not args.annotations and not args.qa:
        parser.error("give --annotations, --qa or both")
    return args


def main(argv=None):
    return run(convert, parse_args(argv))


if __name__ == "__main__":
    main()
