"""Convert AudioCaps (``train.csv``, ``val.csv``, ``test.csv``: audiocap_id, youtube_id, start_time,
caption) into audio_caption TSVs ``audiocaps_<name>.tsv`` (uniq_id, youtube_id, caption, objects, audio).

The train file gives one row per caption; the others one row per clip with its five references joined
by ``&&``, as captions are scored. Audio cells are --audio-name filled with the row's fields (default
``{youtube_id}.wav``; downloaders differ) under --media-dir. Bad CSV rows are located by line.

  python preprocess/audiocaps_to_tsv.py --csv train.csv val.csv test.csv --media-dir audiocaps/audio \\
      --out-dir data/audiocaps
"""
import csv
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from preprocess.benchmark_common import ConversionError, new_parser, run  # noqa: E402
from preprocess.coco_to_tsv import caption_lines  # noqa: E402
from utils.progress import track  # noqa: E402

FIELDS = ("audiocap_id", "youtube_id", "start_time", "caption")


def read_clips(path):
    """{youtube_id: (first row's fields, [{"id", "caption"}, ...])} in file order."""
    clips = defaultdict(lambda: (None, []))
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in FIELDS if f not in (reader.fieldnames or [])]
        if missing:
            raise ConversionError(path, "line 1", f"the header lacks {', '.join(missing)}")
        for record in reader:
            if any(record.get(f) in (None, "") for f in FIELDS):
                raise ConversionError(path, f"line {reader.line_num}", f"a field of {', '.join(FIELDS)} is empty")
            first, captions = clips[record["youtube_id"]]
            clips[record["youtube_id"]] = (first or record, captions)
            captions.append({"id": record["audiocap_id"], "caption": record["caption"]})
    return clips


def convert(args, output):
    for path in args.csv:
        name = os.path.basename(path).rsplit(".", 1)[0]
        out_path = os.path.join(args.out_dir, f"audiocaps_{name}.tsv")
        for youtube_id, (record, captions) in track(read_clips(path).items(), name, unit="clips"):
            try:
                audio = args.audio_name.format(**record)
            except KeyError as error:
                raise ConversionError(path, "--audio-name", f"no field {error} in the CSV") from None
            cell = output.media_cell(audio, path, f"youtube_id {youtube_id}")
            output.add_lines(out_path, caption_lines(youtube_id, captions, name, cell))


def parse_args(argv=None):
    parser = new_parser(__doc__)
    parser.add_argument("--csv", nargs="+", required=True, help="AudioCaps CSVs; the one named train.csv is "
                                                                "written one row per caption")
    parser.add_argument("--audio-name", default="{youtube_id}.wav",
                        help="audio file name from the CSV fields (default {youtube_id}.wav; e.g. "
                             "{youtube_id}_{start_time}.wav)")
    return parser.parse_args(argv)


def main(argv=None):
    return run(convert, parse_args(argv))


if __name__ == "__main__":
    main()
