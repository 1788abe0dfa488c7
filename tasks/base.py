"""The machinery every UniGround task shares.

A task file declares only what is special to it: its columns, how a row
becomes a prompt and a target, its output constraint, how generated tokens
become a prediction, and its metric. Everything else lives here: the
vocabulary, TSV datasets and collation, bad-row accounting, constrained
generation and validation scoring for best-checkpoint selection; with the
length limits (``tasks.lengths``) and the guards against steps that teach
nothing (``tasks.guarded_training``) mixed in.
"""
import copy
import json
import logging
from argparse import Namespace
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from fairseq import metrics
from fairseq.data import data_utils
from fairseq.dataclass import FairseqDataclass
from fairseq.sequence_generator import EnsembleModel
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY, FairseqTask
from omegaconf import II, OmegaConf

from data.bad_rows import BadRows
from data.dataset import TsvDataset
from data.interleave import check_markers, image_cells, split_markers
from data.media import MAX_MEDIA_BYTES
from data.ofa_vocab import OFAVocabulary
from data.row_media import RowMedia, collate_media
from data.tsv import TsvFile
from data.vocab import Vocabulary
from decoding.constraints import ConstrainedEnsemble, DecoderPrompted, LengthLimit
from geometry.codec import MAX_IMAGES, LocationCodec
from tasks.guarded_training import GuardedTraining
from tasks.lengths import LENGTH_LIMITS, LengthLimits
from tasks.ofa_checkpoint import check_ofa_vocabulary, ofa_task_options
from tasks.options import check_task_options
from tasks.validation_metrics import ROWS, log_validation_metrics, logged_counts
from utils.checkpoint import IDENTITY, CheckpointMismatchError, check_identity

logger = logging.getLogger(__name__)


@dataclass
class UniGroundConfig(FairseqDataclass):
    data: str = field(default="", metadata={
        "help": "comma-separated TSV files: training files first (one per epoch, in turn), the validation file last"})
    selected_cols: Optional[str] = field(default=None, metadata={
        "help": "comma-separated 0-based TSV columns, in the order the task reads them (UnIVAL's --selected-cols)"})
    vocab_dir: str = field(default="", metadata={"help": "folder with spm.model and dict.txt (preprocess/build_vocab.py)"})
    bpe_dir: Optional[str] = field(default=None, metadata={
        "help": "folder with OFA's dict.txt, encoder.json and vocab.bpe: use OFA's vocabulary instead of --vocab-dir"})
    media_dir: Optional[str] = field(default=None, metadata={"help": "root folder for media cells given as paths"})
    max_media_bytes: int = field(default=MAX_MEDIA_BYTES, metadata={
        "help": "refuse a media file or base64 cell larger than this, before reading it"})
    exif_transpose: bool = field(default=False, metadata={
        "help": "turn images as their EXIF orientation says, for boxes and polygons drawn on the displayed "
                "photo; by default images keep their stored frame, as COCO, OFA and UnIVAL annotations assume"})
    loader_timeout: float = field(default=600.0, metadata={
        "help": "seconds a DataLoader worker may take to deliver a batch before the run stops with an error "
                "(0: wait forever); with --num-workers > 0"})
    ofa_preprocessing: bool = field(default=False, metadata={
        "help": "preprocess as OFA, as OFA's checkpoints were trained: images decoded whole and resized by PIL's "
                "bicubic filter, texts cleaned as OFA cleans them (tasks/ofa_checkpoint.py); set for an OFA checkpoint"})
    num_bins: int = field(default=1000, metadata={"help": "location bins per image axis"})
    num_time_bins: int = field(default=100, metadata={"help": "time bins per clip"})
    max_poly_vertices: int = field(default=32, metadata={"help": "vertex budget per polygon"})
    max_src_length: Optional[int] = field(default=None, metadata={
        "help": "longest prompt in tokens, EOS included; unset: the longest prompt among the --data rows. "
                "A row that does not fit is refused at load, with the count of such rows; none is cut"})
    max_tgt_length: Optional[int] = field(default=None, metadata={
        "help": "longest target in tokens, EOS included; unset: the longest target among the --data rows. "
                "A row that does not fit is refused at load, with the count of such rows; none is cut"})
    patch_image_size: int = field(default=384, metadata={"help": "side of the square image fed to the model"})
    max_image_pixels: int = field(default=89_478_485, metadata={"help": "refuse images declaring more pixels"})
    max_images: int = field(default=MAX_IMAGES, metadata={
        "help": f"refuse a row whose image cell lists more images (at most {MAX_IMAGES})"})
    max_row_pixels: int = field(default=4 * 89_478_485, metadata={
        "help": "refuse a row whose images declare more pixels in all"})
    num_frames: int = field(default=8, metadata={"help": "video frames sampled per clip"})
    video_frame_size: int = field(default=224, metadata={"help": "side of the square video frames"})
    frame_sampling: str = field(default="random", metadata={
        "help": "training: 'random' (one random instant per segment) or 'uniform' (segment centres, as at eval)"})
    max_video_seconds: float = field(default=3600.0, metadata={"help": "refuse longer videos"})
    max_audio_seconds: float = field(default=30.0, metadata={
        "help": "audio window: longer clips are cropped (random in training, centred at eval)"})
    max_input_audio_seconds: float = field(default=3600.0, metadata={"help": "refuse longer audio files"})
    num_mel_bins: int = field(default=64, metadata={"help": "log-mel features per 10 ms audio frame"})
    unival_inputs: bool = field(default=False, metadata={
        "help": "read media and prompts as UnIVAL's datasets do, for UnIVAL checkpoints: video frames decoded at "
                "their own size and centre-cropped to --video-frame-size; audio as its raw waveform at "
                "--waveform-sample-rate, quantised to 16 bits, --max-audio-seconds long (cropped, or repeated "
                "and zero-padded); audio captions prompted with UnIVAL's video question"})
    waveform_sample_rate: int = field(default=48000, metadata={"help": "with --unival-inputs: audio sample rate"})
    crop_prob: float = field(default=0.0, metadata={"help": "training: probability of a random crop keeping targets"})
    hflip_prob: float = field(default=0.0, metadata={"help": "training: probability of a horizontal flip"})
    skip_bad_rows: int = field(default=0, metadata={
        "help": "tolerate up to N bad rows (each logged with file and line, and listed in --bad-rows-file); "
                "0 = stop at the first"})
    bad_rows_file: Optional[str] = field(default=None, metadata={
        "help": "JSONL file to which training appends each distinct bad row as it is met (file, line, column, "
                "reason); train.py makes it <save-dir>/bad_rows.jsonl"})
    max_nonfinite_steps: int = field(default=3, metadata={
        "help": "skip a batch whose loss is NaN or Inf, but stop when more than N such batches come in a row"})
    eval_metrics: bool = field(default=False, metadata={
        "help": "score validation by generation with the task metric (for --best-checkpoint-metric)"})
    eval_args: str = field(default='{"beam": 5, "max_len_b": 32}', metadata={
        "help": "generation arguments for validation scoring, as JSON"})
    unconstrained: bool = field(default=False, metadata={"help": "generate without the task's output constraint"})
    decoder_prompt: bool = field(default=False, metadata={
        "help": "the decoder reads the prompt before its output, which alone is the target and is generated "
                "(OFA's prompt_type=prev_output, which its VQA and SNLI-VE checkpoints were fine-tuned with)"})
    seed: int = II("common.seed")


class UniGroundTask(GuardedTraining, LengthLimits, FairseqTask):
    columns = ()          # names of the selected columns, in the order of --selected-cols
    prompt = ""           # UnIVAL's instruction for the task; "{}" marks where the row's text goes
    unival_prompt = None  # UnIVAL's own, where UniGround's differs: used with --unival-inputs
    primary_metric = ""   # the metric that ranks checkpoints
    metric_prefix = ""    # "<task>/" when validation metrics are reported beside other tasks'
    reads_rows = True     # False for a task whose data belong to other tasks (multitask)
    default_cols = ""     # the UnIVAL/OFA column choice for this task's TSV layout
    optional_media = False  # generic layout: any media cell may be empty
    uniground_tokens = False  # needs time bins, <poly> or IE tokens, which OFA's vocabulary gets appended
    generation_defaults = {}  # beam search settings evaluate.py starts from (an OFA checkpoint's: OFA's)
    checkpoint_path = None  # the evaluated checkpoint (evaluate.py), beside which a task may keep derived files

    def __init__(self, cfg, vocab):
        super().__init__(cfg)
        self.vocab = vocab
        if cfg.unival_inputs and self.unival_prompt is not None:
            self.prompt = self.unival_prompt
        self.codec = LocationCodec(cfg.num_bins, cfg.num_time_bins, cfg.max_poly_vertices)
        self.media = RowMedia(cfg, self.columns, self.optional_media)
        self.fit_lengths()
        self._constraint = None  # built at first use (``constraint``)
        self.bad_rows = BadRows(cfg.skip_bad_rows, cfg.bad_rows_file)
        self.sequence_generator = None
        self.layout = None  # the training TSV's first_row_layout, recorded in checkpoints
        self.expected_layout = None  # a loaded checkpoint's, which evaluated data must have

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        return cls(cfg, cls.task_vocabulary(cfg))

    @classmethod
    def task_vocabulary(cls, cfg):
        """OFA's vocabulary with --bpe-dir, else UniGround's from --vocab-dir."""
        if getattr(cfg, "bpe_dir", None):
            return OFAVocabulary(cfg.bpe_dir, cfg.num_bins,
                                 num_time_bins=cfg.num_time_bins if cls.uniground_tokens else None)
        if not cfg.vocab_dir:
            raise ValueError("--vocab-dir is required (build one with preprocess/build_vocab.py)")
        return Vocabulary(cfg.vocab_dir, cfg.num_bins, cfg.num_time_bins)

    @property
    def source_dictionary(self):
        return self.vocab.dictionary

    @property
    def target_dictionary(self):
        return self.vocab.dictionary

    # ---- what a task declares -------------------------------------------------------------

    def build_sample(self, row, train):
        """A row -> {"source", "target", optional "image", "meta"}; raise ``row.error(...)`` on bad cells."""
        raise NotImplementedError

    def build_constraint(self):
        """The output rule for generation and training masks, or None for free text."""
        return None

    @property
    def constraint(self):
        """``build_constraint``'s rule, built at first use: once the task is set up, and after a
        checkpoint's task state has brought what it depends on."""
        if self._constraint is None:
            self._constraint = self.build_constraint()
        return self._constraint

    def forget_constraint(self):
        """Build the constraint again at its next use: what it depends on has changed."""
        self._constraint = None

    def row_lengths(self, row):
        """(source, target) token counts of a row, EOS left out, as ``build_sample`` makes them but
        without decoding media (an upper bound where the count depends on the pixels: polygons);
        raise ``row.error(...)`` where ``build_sample`` would."""
        raise NotImplementedError

    def least_target_length(self):
        """The fewest target tokens (EOS included) the task needs whatever its rows: its longest
        candidate output, for a task that generates from a fixed set."""
        return 1

    def decode_prediction(self, tokens, meta):
        """Generated token ids (no EOS) -> a JSON-ready prediction record."""
        raise NotImplementedError

    def score(self, predictions, full=False):
        """Prediction records -> {metric name: value}; ``full`` asks for every metric of the final
        evaluation, otherwise the quick ones used to select checkpoints."""
        raise NotImplementedError

    def sample_scores(self, predictions, full=False):
        """Each prediction's own metrics, in order (for the evaluation report): by default ``score`` of
        the prediction alone, exact where the metric is a mean over samples (accuracy, IoU, R@1, VQA
        score) or a per-sample F1; a task whose metric uses corpus statistics overrides this."""
        return [self.score([p]) for p in predictions]

    def report_view(self, prediction, row):
        """How the evaluation report shows a prediction of ``row``: a ``evaluation.report.SampleView``."""
        raise NotImplementedError

    def result(self, prediction):
        """A prediction record as the predictor returns it: a ``tasks.results.Result``."""
        raise NotImplementedError

    # ---- helpers for task files ---------------------------------------------------------------

    def encode_source(self, text, row, column):
        """The source of a prompt; ``<image_k>`` markers in it must name distinct images of the row."""
        pieces = split_markers(text)
        if any(isinstance(piece, int) for piece in pieces):
            cell = row.cells.get("image")
            count = len(image_cells(cell, row.where("image"), self.cfg.max_images)) if cell else 0
            check_markers(pieces, count, row.where(column))
        return self.source_tensor(self.source_ids(text), row, column)

    def source_ids(self, text):
        """Token ids of a prompt, each ``<image_k>`` marker one image token (the model puts image k there)."""
        pieces = split_markers(text)
        if not any(isinstance(piece, int) for piece in pieces):
            return self.vocab.encode_text(text)
        return [i for piece in pieces
                for i in ([self.vocab.image_id(piece)] if isinstance(piece, int) else self.vocab.encode_text(piece))]

    def source_tensor(self, ids, row, column):
        """The vocabulary's source prefix (OFA's ``<s>``), the prompt ``ids`` and EOS; ``column`` is the
        cell they come from, named if they do not fit."""
        return self.within_limit(list(self.vocab.source_prefix) + list(ids), 0, row, column)

    def decoder_inputs(self, targets):
        """Padded decoder inputs of EOS-ended targets: the vocabulary's start token, then each target less its end."""
        start = self.vocab.decoder_start
        return data_utils.collate_tokens([torch.cat([t.new_tensor([start]), t[:-1]]) for t in targets],
                                         self.vocab.dictionary.pad())

    def encode_target(self, ids, row, column):
        """The target ``ids`` and EOS; ``column`` is the cell they come from, named if they do not fit."""
        return self.within_limit(ids, 1, row, column)

    # ---- data ---------------------------------------------------------------------------------

    def data_paths(self):
        return [p for p in self.cfg.data.split(",") if p]

    def tsv_file(self, path):
        cols = self.cfg.selected_cols or self.default_cols
        return TsvFile(path, selected_cols=[int(c) for c in cols.split(",")])

    def split_path(self, split, epoch):
        paths = self.data_paths()
        if not paths:
            raise ValueError("--data names no TSV file")
        if split == "train" and len(paths) > 1:
            return paths[(epoch - 1) % (len(paths) - 1)]
        return paths[-1]

    def has_sharded_data(self, split):
        return split == "train" and len(self.cfg.data.split(",")) > 2

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        """The split's rows, refused with a count if some do not fit the length limits; each row's
        measured source and target length is its size for ``--max-tokens`` batching."""
        tsv = self.tsv_file(self.split_path(split, epoch))
        train = split == "train"
        if train:
            self.layout = tsv.first_row_layout()
        elif self.expected_layout is not None:
            self.check_layout(tsv)
        lengths = self.measured_lengths(tsv)
        self.check_lengths(tsv.path, lengths)
        self.datasets[split] = TsvDataset(
            tsv, self.columns, lambda row: self.build_sample(row, train), self.collate,
            tolerate_bad_rows=self.cfg.skip_bad_rows > 0, shuffle=train, seed=self.cfg.seed,
            sizes=np.maximum(lengths.sum(1, dtype=np.int32), 1))
        logger.info("%s: %d rows from %s", split, len(tsv), tsv.path)
        self.constraint  # noqa: B018  built now, before DataLoader workers start, not once in each

    def get_batch_iterator(self, dataset, **kwargs):
        """fairseq's batch iterator, except that:

        - rows that are not for training come in batches of any size: fairseq's
          --required-batch-size-multiple (8) would leave out the rows past the last multiple, or every row
          of a smaller set;
        - each pass's DataLoader workers end as its last batch is fetched. Every pass gets a fresh iterator
          (``TsvDataset.can_reuse_epoch_itr_across_epochs``), whose persistent workers a reference cycle
          in fairseq's iterator would keep alive until Python's cycle collector happens to run: one more
          process per epoch. Without persistence, workers end when their DataLoader iterator is freed,
          which the buffer's thread (``data_buffer_size`` >= 1) does as soon as it has the last batch;
        - a batch that takes more than --loader-timeout seconds ends the run with an error.
        """
        if dataset is not self.datasets.get("train"):
            kwargs["required_batch_size_multiple"] = 1
        kwargs["data_buffer_size"] = max(kwargs.get("data_buffer_size", 0), 1)
        iterator = super().get_batch_iterator(dataset, **kwargs)
        iterator.persistent_workers = False
        if iterator.num_workers > 0:
            iterator.timeout = self.cfg.loader_timeout
        return iterator

    # ---- what checkpoints record ----------------------------------------------------------------

    def identity(self):
        """What decoding depends on, recorded in checkpoints: vocabulary, bin counts, the training data's layout."""
        return {"vocab": self.vocab.fingerprint, "vocab_dir": self.cfg.vocab_dir, "num_bins": self.cfg.num_bins,
                "num_time_bins": self.cfg.num_time_bins, "layout": self.layout}

    def state_dict(self):
        """fairseq's task state, which checkpoints keep, with the length limits in force (a task set up
        from the checkpoint takes them, ``utils.checkpoint.load_models_and_task``, rather than sizing
        them to the data it evaluates) and the task's ``identity``."""
        limits = {option: getattr(self.cfg, option) for option, _, _ in LENGTH_LIMITS}
        return {**super().state_dict(), **{k: v for k, v in limits.items() if v is not None},
                IDENTITY: self.identity()}

    def load_state_dict(self, state_dict):
        """A checkpoint's task state: its vocabulary and bins must be this task's (``check_identity``)."""
        recorded = state_dict.get(IDENTITY)
        check_identity(self.identity(), recorded, None)
        self.expected_layout = (recorded or {}).get("layout")
        super().load_state_dict({key: value for key, value in state_dict.items() if key != IDENTITY})

    def check_restored(self, state, path):
        """A checkpoint being restored into this task (resume, --restore-file) must have its vocabulary
        and bins; an OFA checkpoint, which records none, must match OFA's vocabulary."""
        recorded = (state.get("task_state") or {}).get(IDENTITY)
        ofa_task = ofa_task_options(state)
        if recorded is None and ofa_task is not None:
            check_ofa_vocabulary(self, ofa_task, path)
        else:
            check_identity(self.identity(), recorded, path)

    def check_layout(self, tsv):
        """A TSV laid out for another task (a refcoco file for a caption checkpoint: a box where the
        training rows had none) would be scored as if it were this task's: refused."""
        layout = tsv.first_row_layout()
        differ = [k + 1 for k, (a, b) in enumerate(zip(layout, self.expected_layout)) if a != b]
        if differ:
            raise CheckpointMismatchError(
                f"{tsv.path}: its rows are laid out for another task: column {differ[0]} holds "
                f"{layout[differ[0] - 1]!r} where this checkpoint's training rows held {self.expected_layout[differ[0] - 1]!r} "
                f"(line 1 {layout}, training {self.expected_layout}); evaluate this file with a checkpoint of its "
                "task, or name that task with --task")

    def collate(self, samples):
        """A batch of samples; the target, decoder inputs and constraint masks only when every sample has a
        target (rows that are not ``labelled`` have none: they are only generated from)."""
        pad, eos = self.vocab.dictionary.pad(), self.vocab.dictionary.eos()
        sources = [s["source"] for s in samples]
        metas = [s["meta"] for s in samples]
        prompts = None
        if self.cfg.decoder_prompt:
            prompts = [source[len(self.vocab.source_prefix):-1] for source in sources]
            metas = [dict(meta, decoder_prompt_length=len(prompt)) for meta, prompt in zip(metas, prompts)]
        net_input = {
            "src_tokens": data_utils.collate_tokens(sources, pad, eos),
            "src_lengths": torch.tensor([len(s) for s in sources]),
        }
        net_input.update(collate_media(samples))
        batch = {"id": torch.tensor([s["id"] for s in samples]), "nsentences": len(samples), "net_input": net_input,
                 "meta": metas}
        if any("region" in s for s in samples):  # NaN: no region (criterions.constrained_cross_entropy)
            batch["regions"] = torch.from_numpy(np.stack([s.get("region", np.full(4, np.nan, np.float32))
                                                          for s in samples]))
        if prompts is not None:
            batch["decoder_prompts"] = data_utils.collate_tokens(prompts, pad)
        if any("target" not in s for s in samples):
            return batch
        entries = self.target_entries([s["target"] for s in samples], metas, prompts)
        net_input["prev_output_tokens"] = entries.pop("prev_output_tokens")
        batch.update(entries)
        return batch

    def target_entries(self, targets, metas, prompts=None):
        """Batch entries of EOS-ended ``targets`` for teacher forcing: padded ``target``, its
        ``prev_output_tokens``, ``ntokens``, ``meta`` and, under a constraint, the ``constraint_masks``
        that confine the loss to the outputs generation allows. With decoder ``prompts`` the decoder reads
        each prompt before its target, and the prompt is padding in ``target``: read, not learnt."""
        pad, eos = self.vocab.dictionary.pad(), self.vocab.dictionary.eos()
        if prompts is not None:
            targets = [torch.cat([prompt, t]) for prompt, t in zip(prompts, targets)]
        prev_output_tokens = self.decoder_inputs(targets)
        if prompts is not None:
            targets = [t.index_fill(0, torch.arange(len(prompt)), pad) for prompt, t in zip(prompts, targets)]
        target = data_utils.collate_tokens(targets, pad, eos)
        entries = {"target": target, "prev_output_tokens": prev_output_tokens, "ntokens": int(target.ne(pad).sum()),
                   "meta": metas}
        constraint = self.output_constraint()
        if constraint is not None:
            entries["constraint_masks"] = constraint.for_batch(metas).training_masks(target)
        return entries

    def output_constraint(self):
        """The task's constraint, placed after the decoder prompt when there is one."""
        if self.constraint is None or not self.cfg.decoder_prompt:
            return self.constraint
        return DecoderPrompted(self.constraint)

    # ---- generation and validation ------------------------------------------------------------

    def scored_tasks(self):
        """The tasks that generate and score validation rows: this one, or a mixture's sub-tasks."""
        return [self]

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        for task in self.scored_tasks():
            task.check_positions(model)
        if self.cfg.eval_metrics:
            args = Namespace(**json.loads(self.cfg.eval_args))
            for task in self.scored_tasks():
                task.sequence_generator = task.build_generator([model], args)
        return model

    def prepare_generation(self, models):
        """Work before generating that every rank does at the same moment (its collectives would wait
        for a rank with no rows to generate): none by default."""

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        for task in self.scored_tasks():
            if task.sequence_generator is not None:
                task.prepare_generation([model])

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                        prefix_allowed_tokens_fn=None):
        self.warn_of_short_generation(args)
        constraint = self.generation_constraint(args)
        if constraint is not None and not isinstance(models, EnsembleModel):
            models = ConstrainedEnsemble(models, constraint)
        return super().build_generator(models, self.limit_after_decoder_prompt(args), seq_gen_cls,
                                       extra_gen_cls_kwargs, prefix_allowed_tokens_fn)

    def generation_constraint(self, args):
        """The output constraint (none under --unconstrained), ending outputs within a fixed ``max_len_b``
        (fairseq asserts at its limit). With a decoder prompt, free outputs get that limit alone, counted
        after each sample's own prompt (``limit_after_decoder_prompt`` says why fairseq's cannot)."""
        fixed_limit = getattr(args, "max_len_a", 0) == 0 and getattr(args, "max_len_b", None)
        constraint = None if self.cfg.unconstrained else self.output_constraint()
        if constraint is None and self.cfg.decoder_prompt and fixed_limit:
            dictionary = self.vocab.dictionary
            constraint = DecoderPrompted(LengthLimit(dictionary.eos(), len(dictionary)))
        if constraint is None or not fixed_limit:
            return constraint
        return constraint.with_max_length(min(int(args.max_len_b), self.cfg.max_tgt_length - 1))

    def limit_after_decoder_prompt(self, args):
        """``args`` for fairseq's generator, whose length limit counts the forced decoder prompt too: a fixed
        ``max_len_b`` counts output tokens, so with a decoder prompt the generator gets it plus the longest
        prompt (without, a limit below the prompt's length ended every hypothesis inside its prompt, with
        no output at all). The caller's ``args`` stay as they are."""
        if not self.cfg.decoder_prompt or getattr(args, "max_len_a", 0) != 0 or not getattr(args, "max_len_b", None):
            return args
        args = copy.copy(args)
        args.max_len_b = int(args.max_len_b) + self.cfg.max_src_length
        return args

    def warn_of_short_generation(self, args):
        """Warn when the generator's length limit is below the longest target of the generated file."""
        if getattr(args, "max_len_a", 0) != 0 or not getattr(args, "max_len_b", 0) or not self.reads_rows:
            return
        paths = self.data_paths()
        if not paths:
            return
        longest = int(self.measured_lengths(self.tsv_file(paths[-1]))[:, 1].max(initial=1)) - 1  # less EOS
        if args.max_len_b < longest:
            logger.warning("generation stops after max_len_b %d tokens, fewer than the %d of the longest target "
                           "in %s: longer outputs end early", args.max_len_b, longest, paths[-1])

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """fairseq's, with the output constraint bound to this batch's samples first, starting from the
        vocabulary's decoder start, then the decoder prompts (if any) forced."""
        if isinstance(getattr(generator, "model", None), ConstrainedEnsemble):
            generator.model.bind(sample["meta"])
        if prefix_tokens is None:
            prefix_tokens = sample.get("decoder_prompts")
        with torch.no_grad():
            return generator.generate(models, sample, prefix_tokens=prefix_tokens, constraints=constraints,
                                      bos_token=self.vocab.decoder_start)

    def predict(self, generator, models, sample):
        """Prediction records of the best hypotheses, each with its ``score``: the mean log-probability
        per token (EOS included) the model gives it; a decoder prompt is neither output nor scored."""
        hypotheses = self.inference_step(generator, models, sample)
        eos = self.vocab.dictionary.eos()
        predictions = []
        for hyps, meta in zip(hypotheses, sample["meta"]):
            start = meta.get("decoder_prompt_length", 0)
            tokens = [t for t in hyps[0]["tokens"][start:].tolist() if t != eos]
            predictions.append(self.scored_prediction(tokens, meta, hyps[0]["positional_scores"][start:].mean()))
        return predictions

    def scored_prediction(self, tokens, meta, score):
        return {**self.decode_prediction(tokens, meta), "score": round(float(score), 6)}

    def valid_step(self, sample, model, criterion):
        bad = self.bad_rows.count(sample, listed=True)
        if "net_input" not in sample:
            with torch.no_grad():
                return self.empty_step(model, bad)
        loss, size, log = super().valid_step(sample, model, criterion)
        log["bad_rows"] = bad
        log["exif_rotated"] = self.bad_rows.count_exif_rotated(sample)
        if self.sequence_generator is not None:
            predictions = self.predict(self.sequence_generator, [model], sample)
            log.update(logged_counts(self.metric_prefix, self.validation_counts(predictions)))
        return loss, size, log

    def validation_counts(self, predictions):
        """Additive counts of a validation batch, summed over batches and ranks into the whole set's, from
        which ``validation_metrics`` computes the metrics (tasks/validation_metrics.py). By default each
        score times the batch's rows, and the rows: right where ``score`` gives means over rows."""
        counts = {name: value * len(predictions) for name, value in self.score(predictions).items()}
        counts[ROWS] = len(predictions)
        return counts

    def validation_metrics(self, counts):
        """The validation metrics from ``validation_counts`` summed over the set: by default their means."""
        rows = counts.get(ROWS, 0)
        return {name: value / rows for name, value in counts.items() if name != ROWS} if rows else {}

    def task_of_metric_group(self, group):
        """The task whose ``validation_metrics`` reads the counts logged under metric prefix ``group``."""
        return self

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        for name in ("bad_rows", "nonfinite", "exif_rotated"):
            count = sum(log.get(name, 0) for log in logging_outputs)
            if count:
                metrics.log_scalar_sum(name, count)
        log_validation_metrics(logging_outputs, self.task_of_metric_group)


def sibling_task(name, cfg, vocab, **options):
    """The registered UniGround task ``name`` sharing ``cfg``'s common options (vocabulary, image
    size, bins, ...) and ``vocab``, with ``options`` (its own data, columns) on top."""
    task_class = TASK_REGISTRY.get(name)
    if task_class is None or not issubclass(task_class, UniGroundTask) or not task_class.reads_rows:
        raise ValueError(f"{name!r} is not a UniGround task with data of its own")
    own = OmegaConf.structured(TASK_DATACLASS_REGISTRY[name])
    check_task_options(name, own, options)
    for key in own:
        if key in cfg and key != "_name":
            own[key] = cfg[key]
    for key, value in options.items():
        own[key] = value
    return task_class(own, vocab)
