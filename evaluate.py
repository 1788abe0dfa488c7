"""Evaluate a checkpoint on a TSV: generate, score, and write the results.

    python evaluate.py --path checkpoints/refcoco/checkpoint_best.pt \\
        --data dataset/demo/refcoco_valid.tsv --results-dir results/refcoco

Writes ``predictions.jsonl`` (boxes in original-image pixels, captions as text)
and ``metrics.json``, and prints the metrics; ``--result-format coco-caption|vqa`` writes the
predictions as the COCO caption or VQA evaluation server takes them too; ``--report DIR`` writes an HTML page of the
samples (evaluation/report.py): each input with prediction and reference drawn on it, and
its own metrics. The checkpoint's own task decides
how rows are read, which constraint applies and what is scored; ``--task`` picks
another on the same vocabulary (one task of a multitask checkpoint, say). With two
checkpoints and ``--lambdas`` it evaluates along their weight interpolation (the
weight_average task) and writes ``curve.csv`` and ``curve.png`` too. With ``--bpe-dir`` the
checkpoint is OFA's, evaluated on OFA's vocabulary (tasks/ofa_checkpoint.py).

Several processes (``torchrun --nproc-per-node N evaluate.py ...``, or run_scripts/slurm/eval.sbatch) share
out the rows: rank r generates the batches r, r + N, ... (on GPU LOCAL_RANK with nccl, or on the CPU with
gloo), every rank gets every batch's predictions and bad rows (--skip-bad-rows holds for them all), and
rank 0 alone scores and writes the same files one process would.
"""
import argparse
import json
import logging
import os
import sys
from argparse import Namespace
from collections import namedtuple

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

from utils.logs import add_verbose_flag, set_up_logging  # noqa: E402

if __name__ == "__main__":
    set_up_logging()  # before fairseq is imported (utils/logs.py says why)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from fairseq import utils as fairseq_utils  # noqa: E402

fairseq_utils.import_user_module(Namespace(user_dir=ROOT))

from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from data.errors import DataFileError  # noqa: E402
from data.ofa_vocab import MissingBPEFilesError  # noqa: E402
from data.vocab import MissingVocabularyError  # noqa: E402
from evaluation.report import DEFAULT_LIMIT, REPORT_FRAME_SIZE, SampleCard, write_report  # noqa: E402
from tasks.caption import CaptionTask  # noqa: E402
from tasks.multitask import checkpoint_subtask  # noqa: E402
from tasks.ofa_checkpoint import load_ofa_model_and_task  # noqa: E402
from tasks.options import UnknownTaskOptionError, check_task_options  # noqa: E402
from tasks.vqa import VqaTask  # noqa: E402
from tasks.weight_average import CURVE_FILES, write_curve  # noqa: E402
from utils.checkpoint import (CheckpointMismatchError, CheckpointReadError, MissingEmaError,  # noqa: E402
                              UntrustedCheckpointError, load_models_and_task)
from utils.files import OutputError, atomic_files, check_outputs  # noqa: E402
from utils.progress import track  # noqa: E402

logger = logging.getLogger("evaluate")
RESULT_FILES = ("predictions.jsonl", "metrics.json")
# --result-format: the JSON list an evaluation server takes, [{id_field: int, text_field: str}, ...]
ServerFormat = namedtuple("ServerFormat", "file task_class id_key id_field text_field")
SERVER_FORMATS = {
    "coco-caption": ServerFormat("captions_results.json", CaptionTask, "uniq_id", "image_id", "caption"),
    "vqa": ServerFormat("vqa_results.json", VqaTask, "question_id", "question_id", "answer"),
}
# one batch's results; under several ranks they travel to every rank
BatchOutput = namedtuple("BatchOutput", "rows prompts predictions bad_rows exif_rotated")
GENERATION_OPTIONS = ("beam", "max_len_b", "min_len", "no_repeat_ngram_size", "lenpen")
# failures of the user's files or options: reported in a line, without a traceback
USER_ERRORS = (CheckpointMismatchError, CheckpointReadError, DataFileError, MissingBPEFilesError, MissingEmaError,
               MissingVocabularyError, OutputError, UnknownTaskOptionError, UntrustedCheckpointError)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", required=True, nargs="+",
                        help="checkpoint file; two with --lambdas, to evaluate along their interpolation")
    parser.add_argument("--lambdas", nargs="+", type=float,
                        help="evaluate (1 - l) * first + l * second at each l (the weight_average task)")
    parser.add_argument("--allow-extrapolation", action="store_true", help="allow --lambdas outside [0, 1]")
    parser.add_argument("--data", required=True, help="TSV to evaluate")
    parser.add_argument("--results-dir", required=True, help="where predictions.jsonl and metrics.json go")
    parser.add_argument("--selected-cols", help="override the checkpoint task's column choice")
    parser.add_argument("--task", help="evaluate as this task rather than the checkpoint's own (multitask "
                                       "checkpoints, merged models); same vocabulary and image options")
    parser.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                        help="set an option of the evaluated task, e.g. eval_mode=candidates (repeatable; "
                             "VALUE is read as JSON when it parses, else as text)")
    parser.add_argument("--vocab-dir", help="override the vocabulary folder recorded in the checkpoint")
    parser.add_argument("--bpe-dir", help="the checkpoint is OFA's: its dict.txt, encoder.json and vocab.bpe are here")
    parser.add_argument("--media-dir", help="root for media cells given as paths")
    parser.add_argument("--skip-bad-rows", type=int, default=0, help="tolerate up to N bad rows (each logged)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=1)
    add_generation_options(parser)
    parser.add_argument("--unconstrained", action="store_true", help="generate without the task's constraint")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a legacy checkpoint's pickled objects (runs code: trusted files only)")
    parser.add_argument("--use-ema", action="store_true",
                        help="evaluate the EMA weights (extra_state['ema'], kept by --store-ema) instead of 'model'")
    parser.add_argument("--cpu", action="store_true", help="evaluate on the CPU even if a GPU is present")
    parser.add_argument("--result-format", choices=sorted(SERVER_FORMATS),
                        help="also write the predictions as the evaluation server takes them: coco-caption "
                             "(captions_results.json: image_id, caption; the rows' ids are the COCO image ids) "
                             "or vqa (vqa_results.json: question_id, answer)")
    parser.add_argument("--report", metavar="DIR", help="write an HTML report of the samples to DIR/index.html "
                                                        "(with --lambdas, one per lambda in DIR/lambda_<value>)")
    parser.add_argument("--report-limit", type=int, default=DEFAULT_LIMIT,
                        help="most samples the report draws: the worst half by the task's metric, and an "
                             "even spread of the others")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if (args.lambdas is None) != (len(args.path) == 1):
        parser.error("give one --path, or two with --lambdas")
    if args.bpe_dir and args.use_ema:
        parser.error("--bpe-dir (an OFA or UnIVAL checkpoint) goes without --use-ema")
    return args


def task_options(args):
    """--task-option KEY=VALUE pairs as {key: value}."""
    options = {}
    for item in args.task_option:
        key, separator, text = item.partition("=")
        if not separator or not key.strip():
            raise SystemExit(f"--task-option expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        options[key.strip().replace("-", "_")] = value
    return options


def task_overrides(args):
    """Options replaced in the checkpoint's task; with --task, that task gets --data and the
    --task-option values instead (``select_task``)."""
    overrides = {"eval_metrics": False, "unconstrained": args.unconstrained, "skip_bad_rows": args.skip_bad_rows}
    names = ("vocab_dir", "media_dir") if args.task else ("data", "selected_cols", "vocab_dir", "media_dir")
    for name in names:
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if not args.task:
        overrides.update(task_options(args))
    return overrides


def select_task(task, args):
    """The task that reads --data: the checkpoint's own, or --task, another one on the same vocabulary
    (a sub-task of a multitask checkpoint, or any task for a merged model)."""
    if args.task is None:
        return task
    return checkpoint_subtask(task, args.task, args.path[0], data=args.data, selected_cols=args.selected_cols,
                              **task_options(args))


def generate(args, models, task):
    """Predictions on --data, with the dataset row and the prompt text of each, in row order. Under several
    ranks each generates its share of the batches (fairseq's sharding: every world-th, padded with empty
    ones at the end) and every rank gets them all, with their bad and EXIF-rotated rows counted in ``task``."""
    task.load_dataset("valid")
    rank, world_size = ranks()
    epoch = task.get_batch_iterator(dataset=task.dataset("valid"), max_sentences=args.batch_size,
                                    num_workers=args.num_workers, num_shards=world_size, shard_id=rank)
    generator = task.build_generator(models, generation_args(args, task))
    task.prepare_generation(models)
    use_cuda = torch.cuda.is_available() and not args.cpu
    outputs = []
    for sample in track(epoch.next_epoch_itr(shuffle=False), "evaluated", unit="rows", log=logger,
                        total=sum(map(len, epoch.frozen_batches[rank::world_size])),
                        size=lambda sample: len(sample.get("bad_rows", [])) + len(sample.get("meta", []))):
        task.bad_rows.count(sample)
        task.bad_rows.count_exif_rotated(sample)
        output = BatchOutput([], [], [], sample.get("bad_rows", []), sample.get("exif_rotated", []))
        if "net_input" in sample:
            output.rows.extend(sample["id"].tolist())
            output.prompts.extend(task.vocab.decode_text(t.tolist()) for t in sample["net_input"]["src_tokens"])
            sample = fairseq_utils.move_to_cuda(sample) if use_cuda else sample
            output.predictions.extend(task.predict(generator, models, sample))
        outputs.append(output)
    batches = all_ranks_batches(outputs)
    add_other_ranks_rows(task, batches)
    return tuple([item for batch in batches for item in getattr(batch, field)]
                 for field in ("predictions", "rows", "prompts"))


def add_other_ranks_rows(task, batches):
    """Count the bad rows (held to one --skip-bad-rows budget) and EXIF-rotated rows of every rank's
    ``batches`` in ``task``, as one process would have; this rank's own are counted already."""
    task.bad_rows.add([message for batch in batches for message in batch.bad_rows])
    for batch in batches:
        for path, line, _ in batch.exif_rotated:
            task.bad_rows.exif_rotated.setdefault(path, set()).add(line)


def ranks():
    """(this process's rank, the number of ranks): (0, 1) for one process."""
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def join_ranks(use_cuda):
    """Under torchrun or run_scripts/slurm/rank_env.sh (WORLD_SIZE > 1), join the group at MASTER_ADDR:MASTER_PORT
    as rank RANK: on GPU LOCAL_RANK with nccl, or on the CPU with gloo."""
    if int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://")


def all_ranks_batches(outputs):
    """Every rank's list of batch outputs, joined into the list of all batches in order: rank r holds the
    batches r, r + world size, ..., every rank as many."""
    _, world_size = ranks()
    if world_size == 1:
        return outputs
    shards = [None] * world_size
    dist.all_gather_object(shards, outputs)
    return [batch for group in zip(*shards) for batch in group]


def from_rank_0(value):
    """Rank 0's ``value``, on every rank."""
    if ranks()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def add_generation_options(parser):
    """Beam-search options, each replacing the default of ``generation_args``."""
    parser.add_argument("--beam", type=int, help="beam size (default 5, or an OFA checkpoint's as OFA evaluates it)")
    parser.add_argument("--max-len-b", type=int, help="longest output in tokens (default 32, or OFA's)")
    parser.add_argument("--min-len", type=int, help="shortest output in tokens (default 1, or OFA's)")
    parser.add_argument("--no-repeat-ngram-size", type=int, help="forbid repeating n-grams of this size "
                                                                 "(default: none, or OFA's)")
    parser.add_argument("--lenpen", type=float, help="length penalty (default 1)")


def generation_options(args):
    """The GENERATION_OPTIONS given on the command line."""
    return {name: getattr(args, name) for name in GENERATION_OPTIONS if getattr(args, name) is not None}


def generation_args(args, task):
    """Beam search settings: beam 5 and at most 32 tokens, or for an OFA checkpoint those of OFA's evaluation
    scripts (the task's ``generation_defaults``), each replaced by the option given on the command line."""
    settings = {"beam": 5, "max_len_b": 32, **task.generation_defaults}
    settings.update(generation_options(args))
    return Namespace(**settings)


def evaluate(args, models, task, results_dir, report_dir=None):
    """Generate and score on --data; write predictions.jsonl and metrics.json into ``results_dir``, and
    the HTML report into ``report_dir`` if given."""
    task.bad_rows.clear()
    predictions, rows, prompts = generate(args, models, task)
    if ranks()[0] != 0:
        return from_rank_0(None)
    metrics = task.score(predictions, full=True)
    metrics["rows"] = len(predictions)
    metrics["bad_rows"] = len(task.bad_rows.seen)
    metrics["exif_rotated"] = sum(map(len, task.bad_rows.exif_rotated.values()))
    write_results(results_dir, predictions, metrics, args.result_format)
    if report_dir:
        name = next(name for name, cls in TASK_REGISTRY.items() if cls is type(task))
        title = f"{name} on {args.data} ({', '.join(args.path)})"
        page = write_report(report_dir, task.sample_scores(predictions, full=True), task.primary_metric,
                            card_maker(task, predictions, rows, prompts), metrics, title, args.report_limit)
        logger.info("report: %s", page)
    return from_rank_0(metrics)


def card_maker(task, predictions, rows, prompts):
    """The report's ``card_of``: what ``task`` makes of prediction ``i`` of its "valid" dataset's row ``rows[i]``."""
    dataset = task.dataset("valid")

    def card_of(i):
        row = dataset.row(rows[i])
        return SampleCard(row, prompts[i], task.report_view(predictions[i], row),
                          task.media.for_report(row, REPORT_FRAME_SIZE))
    return card_of


def write_results(results_dir, predictions, metrics, result_format=None):
    """predictions.jsonl and metrics.json (and the server's results file with ``result_format``), which
    replace the previous ones together once all are whole: a failure (a full disk) leaves the previous
    ones as they were."""
    paths = [os.path.join(results_dir, name) for name in result_files(result_format)]
    server = server_results(predictions, result_format) if result_format else None
    try:
        os.makedirs(results_dir, exist_ok=True)
        with atomic_files(paths) as (predictions_file, metrics_file, *server_file):
            predictions_file.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
            json.dump(metrics, metrics_file, indent=2)
            if server_file:
                json.dump(server, server_file[0], ensure_ascii=False)
    except OSError as error:
        raise OutputError(f"cannot write {' and '.join(paths)}: {error.strerror or error}; "
                          "the previous results there are untouched") from error


def result_files(result_format=None):
    return RESULT_FILES + ((SERVER_FORMATS[result_format].file,) if result_format else ())


def server_results(predictions, result_format):
    """The predictions as the evaluation server takes them: one {id: int, text} per id."""
    spec = SERVER_FORMATS[result_format]
    results, seen = [], set()
    for prediction in predictions:
        raw = prediction[spec.id_key]
        try:
            number = int(raw)
        except (TypeError, ValueError):
            raise OutputError(f"--result-format {result_format}: the server takes integer {spec.id_field}s, and the "
                              f"row id {raw!r} is not one") from None
        if number in seen:
            raise OutputError(f"--result-format {result_format}: {spec.id_field} {number} is in two rows; the server "
                              f"takes one {spec.text_field} per {spec.id_field}")
        seen.add(number)
        results.append({spec.id_field: number, spec.text_field: prediction[spec.text_field]})
    return results


def check_result_format(args, task):
    spec = SERVER_FORMATS.get(args.result_format)
    if spec is not None and not isinstance(task, spec.task_class):
        names = sorted(name for name, cls in TASK_REGISTRY.items() if issubclass(cls, spec.task_class))
        raise OutputError(f"--result-format {args.result_format} is for the {', '.join(names)} tasks, "
                          f"not {type(task).__name__}")


def result_folders(args):
    """(results folder, report folder or None) of each evaluation: one, or one per lambda."""
    if args.lambdas is None:
        return [(args.results_dir, args.report)]
    return [(os.path.join(args.results_dir, f"lambda_{value:g}"),
             args.report and os.path.join(args.report, f"lambda_{value:g}")) for value in args.lambdas]


def check_result_paths(args):
    """Before anything is evaluated: every output may be written, and none is an input."""
    outputs = [os.path.join(folder, name) for folder, _ in result_folders(args)
               for name in result_files(args.result_format)]
    outputs += [os.path.join(report, "index.html") for _, report in result_folders(args) if report]
    if args.lambdas is not None:
        outputs += [os.path.join(args.results_dir, name) for name in CURVE_FILES]
    check_outputs(outputs, [*args.path, args.data])


def interpolation_curve(args, models, task):
    """The weight_average task: evaluate (1 - l) * A + l * B for each lambda; write curve.csv and curve.png."""
    cfg = OmegaConf.structured(TASK_DATACLASS_REGISTRY["weight_average"])
    cfg.checkpoints, cfg.lambdas = ",".join(args.path), ",".join(map(str, args.lambdas))
    cfg.ema, cfg.allow_extrapolation, cfg.trust_pickle = args.use_ema, args.allow_extrapolation, args.trust_pickle
    path_task = TASK_REGISTRY["weight_average"].setup_task(cfg)

    folders = dict(zip(args.lambdas, result_folders(args)))

    def evaluate_state(value, state):
        models[0].load_state_dict(state)
        logger.info("lambda %g", value)
        return evaluate(args, models, task, *folders[value])

    rows = path_task.curve(evaluate_state)
    if ranks()[0] == 0:
        write_curve(rows, args.results_dir)
    return rows


def main(argv=None):
    args = parse_args(argv)
    set_up_logging(args.verbose)
    try:
        return run(args)
    except USER_ERRORS as error:
        raise SystemExit(f"{type(error).__name__}: {error}") from None


def load_checkpoint(path, overrides, bpe_dir=None, trust_pickle=False, use_ema=False, device="cpu"):
    """(models, task) of a checkpoint, the task's options replaced by ``overrides``: UniGround's, or OFA's
    read with the vocabulary in ``bpe_dir``; the models in eval mode on ``device``."""
    if bpe_dir:
        models, task = load_ofa_model_and_task(path, bpe_dir, overrides, trust_pickle)
    else:
        models, _, task = load_models_and_task(path, overrides, trust_pickle, use_ema)
        check_task_options(task.cfg._name, task.cfg, overrides)  # fairseq's override skipped unknown ones
    for model in models:
        model.eval().to(device)
    return models, task


def run(args):
    use_cuda = torch.cuda.is_available() and not args.cpu
    join_ranks(use_cuda)
    result = evaluate_checkpoint(args, use_cuda)
    if dist.is_initialized():
        dist.destroy_process_group()
    return result


def evaluate_checkpoint(args, use_cuda):
    models, task = load_checkpoint(args.path[0], task_overrides(args), args.bpe_dir, args.trust_pickle, args.use_ema,
                                   "cuda" if use_cuda else "cpu")
    task = select_task(task, args)
    check_result_format(args, task)
    check_result_paths(args)
    if args.lambdas is not None:
        result = interpolation_curve(args, models, task)
    else:
        task.checkpoint_path = args.path[0]  # the weights evaluated are that file's
        result = evaluate(args, models, task, args.results_dir, args.report)
    if ranks()[0] == 0:
        print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
