"""Train the SentencePiece model on TSV text columns and write the fairseq dictionary.

    python preprocess/build_vocab.py --input dataset/demo/caption_train.tsv:2 \\
        --input dataset/demo/refcoco_train.tsv:2 --out-dir dataset/demo/vocab

Writes ``spm.model`` and ``dict.txt`` (text pieces, then the location and IE tokens
in their fixed order). The task prompts are part of the training text, and byte
fallback means any text encodes without <unk>. Same input, same files.
"""
import argparse
import io
import os
import re
import sys

import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.logs import MESSAGE_ONLY, add_verbose_flag, set_up_logging  # noqa: E402

if __name__ == "__main__":
    set_up_logging(fmt=MESSAGE_ONLY)  # before fairseq is imported (utils/logs.py says why)

from data.errors import BadInputError, DataFileError  # noqa: E402
from data.tsv import TsvFile  # noqa: E402
from data.vocab import DICT_FILE, SPM_FILE, write_dictionary  # noqa: E402
from tasks.base import UniGroundTask  # noqa: E402
from utils.files import atomic_open  # noqa: E402
from utils.progress import track  # noqa: E402


def parse_input(spec):
    path, _, cols = spec.rpartition(":")
    if not path or not cols:
        raise argparse.ArgumentTypeError(f"expected FILE:COLUMNS (e.g. train.tsv:2,3), got {spec!r}")
    return path, [int(c) for c in cols.split(",")]


def task_prompts():
    tasks = [UniGroundTask]
    while tasks:
        task = tasks.pop()
        tasks.extend(task.__subclasses__())
        if task.prompt:
            yield task.prompt.replace("{}", " ")


def text_lines(inputs):
    yield from task_prompts()
    for path, cols in inputs:
        tsv = TsvFile(path, selected_cols=cols)
        for i in track(range(len(tsv)), f"read {path}", unit="rows"):
            for cell in tsv.fields(i):
                yield from (t.strip() for t in cell.split("&&") if t.strip())


class VocabSizeError(ValueError):
    """--vocab-size below what every text character, the 256 byte-fallback pieces and <unk> need."""

    @classmethod
    def from_sentencepiece(cls, error):
        found = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(error))
        if not found:
            return error
        return cls(f"--vocab-size {found[1]} is too small: the text's distinct characters, the 256 byte-fallback "
                   f"pieces and <unk> need at least {found[2]}")


def recording_errors(lines, errors):
    """``lines``, appending to ``errors`` what stops them: SentencePiece reports an exception raised
    by its sentence iterator only as text inside its own RuntimeError."""
    try:
        yield from lines
    except Exception as error:
        errors.append(error)
        raise


def build(inputs, out_dir, vocab_size, num_bins, num_time_bins):
    model = io.BytesIO()  # not model_prefix: that would record the output path inside the model
    reading_errors = []
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=recording_errors(text_lines(inputs), reading_errors), model_writer=model,
            vocab_size=vocab_size, model_type="unigram", character_coverage=1.0, byte_fallback=True,
            hard_vocab_limit=False, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, num_threads=1,
            shuffle_input_sentence=False, minloglevel=2)
    except RuntimeError as error:
        if reading_errors:
            raise reading_errors[0] from None
        raise VocabSizeError.from_sentencepiece(error) from None
    os.makedirs(out_dir, exist_ok=True)  # only now: a failed run leaves no empty folder behind
    with atomic_open(os.path.join(out_dir, SPM_FILE), "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not sp.is_unknown(i)]
    write_dictionary(pieces, os.path.join(out_dir, DICT_FILE), num_bins, num_time_bins)
    return len(pieces)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=parse_input, action="append", required=True,
                        help="FILE:COLUMNS, 0-based text columns of a TSV; repeat for more files")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--vocab-size", type=int, default=8000, help="text pieces (an upper bound on small data)")
    parser.add_argument("--num-bins", type=int, default=1000)
    parser.add_argument("--num-time-bins", type=int, default=100)
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    set_up_logging(args.verbose, MESSAGE_ONLY)
    try:
        n = build(args.input, args.out_dir, args.vocab_size, args.num_bins, args.num_time_bins)
    except VocabSizeError as error:
        parser.error(str(error))
    except (BadInputError, DataFileError, OSError) as error:
        sys.exit(f"error: {error}")
    print(f"wrote {args.out_dir}/{SPM_FILE} and {DICT_FILE}: {n} text pieces + location tokens")


if __name__ == "__main__":
    main()
