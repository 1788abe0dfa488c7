"""Convert VQAv2 (the questions JSON of a split and, for train and val, its annotations JSON) into vqa
TSVs: question_id, image_id, question, ``conf|!+answer&&...``, objects (empty), image.

Each question's candidates are its ten human answers after the official normalisation, each with the
accuracy the official evaluation gives it (evaluation/vqa_accuracy.py: 0.3, 0.6, 0.9 or 1 for 1, 2, 3 or 4+
humans), so the vqa task's score is the official accuracy. Test questions have no public answers: their
rows list the placeholder ``0|!+unanswered``, and the server scores evaluate.py's
``--result-format vqa`` file. Writes ``vqa_<subtype>.tsv`` per questions file (subtype from the file:
train2014, val2014, test-dev2015, ...); image cells are ``<folder>/COCO_<folder>_<id:012>.jpg`` under
--media-dir (test-dev's images are in test2015).

``--answers-out FILE`` writes the candidate list for the vqa task's --answers-file: the normalised
``multiple_choice_answer`` given at least --min-answer-count times (9 over train+val gives the 3,129
answers OFA and UnIVAL use). ``--answers FILE`` keeps only rows with a candidate in that list (training
rows without one cannot be trained on), counting the others.

  python preprocess/vqav2_to_tsv.py --media-dir coco --out-dir data/vqa \\
      --questions v2_OpenEnded_mscoco_train2014_questions.json v2_OpenEnded_mscoco_val2014_questions.json \\
      --annotations v2_mscoco_train2014_annotations.json v2_mscoco_val2014_annotations.json \\
      --answers-out data/vqa/answers.txt
"""
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.answers import ANSWER_SEPARATOR, CONFIDENCE_SEPARATOR, read_answer_file  # noqa: E402
from evaluation.vqa_accuracy import answer_confidences, normalise_answer  # noqa: E402
from preprocess.benchmark_common import ConversionError, file_part, new_parser, required, run  # noqa: E402
from preprocess.coco_to_tsv import clean_caption  # noqa: E402
from preprocess.ie_convert_common import load_json_file  # noqa: E402
from utils.progress import track  # noqa: E402

PLACEHOLDER = f"0{CONFIDENCE_SEPARATOR}unanswered"
IMAGE_FOLDERS = {"test-dev2015": "test2015"}  # test-dev is a subset of test2015's images


def answers_by_question(path):
    """{question_id: annotation} of an annotations JSON."""
    data, _ = load_json_file(path)
    return {required(a, "question_id", path, f"annotation {i + 1}"): a
            for i, a in enumerate(required(data, "annotations", path, "top level"))}


def answers_cell(confidences):
    return ANSWER_SEPARATOR.join(f"{round(c, 4):g}{CONFIDENCE_SEPARATOR}{clean_caption(a)}" for a, c in confidences.items())


def convert_split(questions_path, annotations, output, args, allowed):
    data, _ = load_json_file(questions_path)
    subtype = file_part(required(data, "data_subtype", questions_path, "top level"), questions_path, "top level")
    folder = IMAGE_FOLDERS.get(subtype, subtype)
    out_path = os.path.join(args.out_dir, f"vqa_{subtype}.tsv")
    for number, question in enumerate(track(required(data, "questions", questions_path, "top level"), subtype,
                                            unit="questions"), start=1):
        item = f"question {number}"
        question_id = required(question, "question_id", questions_path, item)
        image_id = required(question, "image_id", questions_path, item)
        if not isinstance(image_id, int):
            raise ConversionError(questions_path, item, f"image_id {image_id!r} is not an integer")
        text = clean_caption(required(question, "question", questions_path, item))
        if annotations is None:
            cell = PLACEHOLDER
        else:
            annotation = annotations.get(question_id)
            if annotation is None:
                raise ConversionError(questions_path, f"{item} (question_id {question_id})",
                                      "has no annotation in the annotations file")
            humans = [required(a, "answer", questions_path, f"question_id {question_id}") for a in
                      required(annotation, "answers", questions_path, f"question_id {question_id}")]
            confidences = answer_confidences(humans)
            if allowed is not None and not allowed.intersection(confidences):
                output.skip("no answer in --answers")
                continue
            cell = answers_cell(confidences)
        if not text:
            output.skip("empty question")
            continue
        image = output.media_cell(f"{folder}/COCO_{folder}_{image_id:012d}.jpg", questions_path, item)
        output.add(out_path, [question_id, image_id, text, cell, "", image])


def candidate_answers(annotation_sets, min_count):
    """Normalised ``multiple_choice_answer``s given at least ``min_count`` times, most frequent first."""
    counts = Counter(normalise_answer(a.get("multiple_choice_answer", "")) for annotations in annotation_sets
                     for a in annotations.values())
    return [answer for answer, count in counts.most_common() if count >= min_count and answer]


def convert(args, output):
    if args.annotations and len(args.annotations) != len(args.questions):
        raise ConversionError(args.annotations[0], "command line", "give one annotations file per questions file, "
                                                                   "in the same order (none for test questions)")
    annotation_sets = [answers_by_question(path) for path in args.annotations or []]
    allowed = set(read_answer_file(args.answers)) if args.answers else None
    for i, questions_path in enumerate(args.questions):
        convert_split(questions_path, annotation_sets[i] if annotation_sets else None, output, args, allowed)
    if args.answers_out:
        for answer in candidate_answers(annotation_sets, args.min_answer_count):
            output.add(args.answers_out, [answer])


def parse_args(argv=None):
    parser = new_parser(__doc__)
    parser.add_argument("--questions", nargs="+", required=True, help="v2_OpenEnded_mscoco_<subtype>_questions.json")
    parser.add_argument("--annotations", nargs="+",
                        help="v2_mscoco_<subtype>_annotations.json, one per questions file (none for test)")
    parser.add_argument("--answers", help="keep only rows with a candidate in this answer list")
    parser.add_argument("--answers-out", help="write the candidate answers here (needs --annotations)")
    parser.add_argument("--min-answer-count", type=int, default=9,
                        help="a candidate answer is the multiple-choice answer of at least this many questions")
    args = parser.parse_args(argv)
    if args.answers_out and not args.annotations:
        parser.error("--answers-out needs --annotations")
    return args


def main(argv=None):
    return run(convert, parse_args(argv))


if __name__ == "__main__":
    main()
