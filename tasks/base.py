"""The machinery every UniGround task shares.

A task file declares only what is special to it: its columns, how a row
becomes a prompt and a target, its output constraint, how generated tokens
become a prediction, and its metric. Everything else lives here: the
vocabulary, TSV datasets and collation, bad-row accounting, constrained
generation and validation scoring for best-checkpoint selection.
"""
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
from data.dataset import Row, TsvDataset
from data.errors import BadInputError
from data.interleave import check_markers, image_cells, split_markers
from data.media import MAX_MEDIA_BYTES
from data.mixture import MixtureDataset
from data.ofa_vocab import OFAVocabulary
from data.row_media import RowMedia, collate_media
from data.tsv import TsvFile, settings_digest
from data.vocab import Vocabulary
from decoding.constraints import ConstrainedEnsemble, DecoderPrompted
from geometry.codec import MAX_IMAGES, LocationCodec
from tasks.ofa_checkpoint import check_ofa_vocabulary, ofa_task_options
from utils.checkpoint import IDENTITY, CheckpointMismatchError, check_identity
from utils.progress import track

logger = logging.getLogger(__name__)
# The length limits, what they bound, and the model option that caps each.
LENGTH_LIMITS = (("max_src_length", "source", "--max-source-positions"),
                 ("max_tgt_length", "target", "--max-target-positions"))
MEASURED_MAX = np.iinfo(np.uint16).max  # token counts are cached as uint16
# Task options that cannot change a row's token counts: the cache of measured lengths ignores them.
# Options that leave every row's token counts as they are: changing one reuses the cached counts.
# (The vocabulary's own fingerprint stands for vocab_dir and bpe_dir.)
NOT_LENGTH_OPTIONS = {"_name", "data", "max_src_length", "max_tgt_length", "seed", "eval_metrics", "eval_args",
                      "skip_bad_rows", "bad_rows_file", "max_nonfinite_steps", "unconstrained", "decoder_prompt",
                      "media_dir", "vocab_dir", "bpe_dir", "max_media_bytes", "exif_transpose", "loader_timeout",
                      "max_image_pixels", "max_images", "max_row_pixels", "max_video_seconds",
                      "max_input_audio_seconds", "waveform_sample_rate"}


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


class UniGroundTask(FairseqTask):
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
        self.nonfinite_in_a_row = 0
        self.update_learns = {}  # update number -> whether one of its batches had a usable loss
        self.sequence_generator = None
        self.layout = None  # the training TSV's first_row_layout, recorded in checkpoints
        self.expected_layout = None  # a loaded checkpoint's, which evaluated data must have

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        if getattr(cfg, "bpe_dir", None):
            return cls(cfg, OFAVocabulary(cfg.bpe_dir, cfg.num_bins,
                                          num_time_bins=cfg.num_time_bins if cls.uniground_tokens else None))
        if not cfg.vocab_dir:
            raise ValueError("--vocab-dir is required (build one with preprocess/build_vocab.py)")
        return cls(cfg, Vocabulary(cfg.vocab_dir, cfg.num_bins, cfg.num_time_bins))

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

    def within_limit(self, ids, k, row, column):
        """``ids`` and EOS as a tensor, or a bad row if they exceed limit ``k`` of ``LENGTH_LIMITS`` (never a
        cut). Rows of the loaded files were measured to fit; this guards any other."""
        ids = list(ids) + [self.vocab.dictionary.eos()]
        option, part, _ = LENGTH_LIMITS[k]
        limit = getattr(self.cfg, option)
        if len(ids) > limit:
            flag = "--" + option.replace("_", "-")
            raise row.error(column, f"the {part} takes {len(ids)} tokens, more than {flag} {limit}; raise {flag}")
        return torch.tensor(ids, dtype=torch.long)

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

    # ---- lengths ------------------------------------------------------------------------------

    def fit_lengths(self):
        """Set each unset length limit to the longest source or target among the rows of every --data
        file (the task's least target length at least), so no row is cut or refused; explicit limits
        stay, and ``load_dataset`` refuses rows that exceed them."""
        unset = [option for option, _, _ in LENGTH_LIMITS if getattr(self.cfg, option) is None]
        if not unset or not self.reads_rows:
            return
        if not self.cfg.data:
            raise ValueError(f"{', '.join('--' + o.replace('_', '-') for o in unset)} unset and no --data to size "
                             "them from")
        longest = np.array([2, self.least_target_length()])
        for path in self.data_paths():
            lengths = self.measured_lengths(self.tsv_file(path))
            if len(lengths):
                longest = np.maximum(longest, lengths.max(0))
        for k, (option, part, _) in enumerate(LENGTH_LIMITS):
            if option in unset:
                setattr(self.cfg, option, int(longest[k]))
                logger.info("--%s %d: the longest %s among the rows of %s", option.replace("_", "-"),
                            longest[k], part, self.cfg.data)

    def check_lengths(self, path, lengths):
        """Refuse a file some of whose rows need more tokens than a limit, naming their count and the option."""
        for k, (option, part, _) in enumerate(LENGTH_LIMITS):
            limit = getattr(self.cfg, option)
            over = int((lengths[:, k] > limit).sum())
            if over:
                flag = "--" + option.replace("_", "-")
                raise ValueError(f"{path}: {over} of {len(lengths)} rows need more than {flag} {limit} {part} tokens "
                                 f"(the longest needs {int(lengths[:, k].max())}); raise {flag}, or leave it unset "
                                 f"to size it to the data. No row is cut.")

    def measured_lengths(self, tsv):
        """Per row of ``tsv``, its (source, target) token counts with EOS (and the source prefix), from one pass over the rows
        (``row_lengths``, no media decoded), cached beside the file's index as
        ``<file>.tokens-<digest of length_settings>.index`` (4 bytes a row) and rebuilt when the file
        changes. A row that ``row_lengths`` refuses counts 0: the dataset reports it when its turn comes."""
        digest = settings_digest(self.length_settings())

        ends = (len(self.vocab.source_prefix) + 1, 1)  # the source prefix and EOS; the target's EOS

        def measure():
            lengths = np.zeros((len(tsv), 2), dtype=np.uint16)
            for i in track(range(len(tsv)), f"measured the token lengths of {tsv.path}", unit="rows", log=logger):
                try:
                    counts = self.row_lengths(Row(tsv, i, dict(zip(self.columns, tsv.fields(i)))))
                except BadInputError:
                    continue
                lengths[i] = np.minimum(np.add(counts, ends), MEASURED_MAX)
            return lengths.ravel()

        return tsv.cached_array(f"tokens-{digest}", measure).reshape(-1, 2)

    def length_settings(self):
        """Everything besides the file that ``row_lengths`` may depend on: the task, its prompt, the
        vocabulary and the task options; each value has its own cache."""
        return {"task": type(self).__name__, "prompt": self.prompt, "vocab": self.vocab.fingerprint,
                "options": {k: v for k, v in OmegaConf.to_container(self.cfg).items() if k not in NOT_LENGTH_OPTIONS}}

    def check_positions(self, model):
        """The length limits must fit the model's position embeddings; the refusal counts the rows that
        need more."""
        for k, ((option, part, model_option), positions) in enumerate(zip(LENGTH_LIMITS, model.max_positions())):
            limit = getattr(self.cfg, option)
            if limit > positions:
                over = [f"{int((self.measured_lengths(self.tsv_file(path))[:, k] > positions).sum())} rows of {path}"
                        for path in self.data_paths()]
                raise ValueError(f"--{option.replace('_', '-')} {limit} (the longest {part} of the data unless set) "
                                 f"is more than the model's {model_option} {positions}; {', '.join(over)} need more "
                                 f"{part} tokens than that: raise {model_option}, or shorten or leave out those rows")

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

    # ---- training steps that can teach nothing ------------------------------------------------

    def empty_step(self, model, bad):
        """A step whose rows were all bad: zero loss that still touches every parameter."""
        loss = sum(p.sum() for p in model.parameters()) * 0.0
        return loss, 0, {"bad_rows": bad, "ntokens": 0, "nsentences": 0, "sample_size": 0}

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """fairseq's forward and backward, except for a batch that can teach nothing: one whose rows
        were all bad, or whose loss is NaN or Inf. That one backpropagates ``empty_step``'s zero, so
        every parameter still gets a gradient (ranks all-reduce the same set), and an update none of
        whose batches taught anything makes no optimizer step (``optimizer_step``)."""
        self.update_learns = {update_num: self.update_learns.get(update_num, False)}
        bad = self.bad_rows.count(sample, listed=True)
        if "net_input" not in sample:
            loss, size, log = self.empty_step(model, bad)
            optimizer.backward(loss)
            return loss, size, log

        def finite_criterion(model, sample):
            loss, size, log = criterion(model, sample)
            if torch.isfinite(loss):
                self.nonfinite_in_a_row = 0
                self.update_learns[update_num] = True
                return loss, size, log
            self.skip_nonfinite(loss, sample, update_num)
            loss, size, log = self.empty_step(model, bad)
            return loss, size, dict(log, nonfinite=1)

        loss, size, log = super().train_step(sample, model, finite_criterion, optimizer, update_num, ignore_grad)
        log["bad_rows"] = bad
        log["exif_rotated"] = self.bad_rows.count_exif_rotated(sample)
        return loss, size, log

    def skip_nonfinite(self, loss, sample, update_num):
        """Log a batch whose loss is NaN or Inf; stop once more than --max-nonfinite-steps come in a row."""
        self.nonfinite_in_a_row += 1
        where = self.rows_of(sample)
        if self.nonfinite_in_a_row > self.cfg.max_nonfinite_steps:
            raise FloatingPointError(
                f"update {update_num + 1}: loss {loss.item()} on {where}; that is {self.nonfinite_in_a_row} "
                f"batches in a row with a NaN or Inf loss, more than --max-nonfinite-steps "
                f"{self.cfg.max_nonfinite_steps}. Lower the learning rate, clip gradients, or check these rows.")
        logger.warning("update %d: loss %s on %s; batch skipped (%d in a row, --max-nonfinite-steps %d)",
                       update_num + 1, loss.item(), where, self.nonfinite_in_a_row, self.cfg.max_nonfinite_steps)

    def rows_of(self, sample):
        """Where a training batch's rows are: the 1-based lines of its TSV file."""
        dataset = self.datasets.get("train")
        if isinstance(dataset, MixtureDataset) and "task" in sample:
            dataset = dataset.datasets[dataset.names.index(sample["task"])]
        tsv = getattr(dataset, "tsv", None)
        if tsv is None:
            return f"the batch of rows {sample['id'].tolist()}"
        return f"the batch of lines {[tsv.line_number(i) for i in sample['id'].tolist()]} of {tsv.path}"

    def optimizer_step(self, optimizer, model, update_num):
        """The optimizer step, skipped when no batch of this update taught anything and no other rank's
        did either (every gradient is zero after the all-reduce): Adam would move the weights on its
        momentum alone and count a step that never happened."""
        if not self.update_learns.get(update_num, True) and not any(
                p.grad is not None and p.grad.any() for p in model.parameters()):
            logger.warning("update %d: no batch had a usable loss; weights and optimizer state left as they were",
                           update_num + 1)
            return
        super().optimizer_step(optimizer, model, update_num)

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

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                        prefix_allowed_tokens_fn=None):
        if getattr(args, "max_len_a", 0) == 0 and 0 < getattr(args, "max_len_b", 0) < self.cfg.max_tgt_length - 1:
            logger.warning("generation stops after max_len_b %d tokens, fewer than the longest target's %d "
                           "(--max-tgt-length %d): longer outputs end early", args.max_len_b,
                           self.cfg.max_tgt_length - 1, self.cfg.max_tgt_length)
        if self.constraint is not None and not self.cfg.unconstrained and not isinstance(models, EnsembleModel):
            constraint = self.output_constraint()
            if getattr(args, "max_len_a", 0) == 0 and getattr(args, "max_len_b", None):
                # outputs must end within the generator's limit too (fairseq asserts at it)
                constraint = constraint.with_max_length(min(int(args.max_len_b), self.cfg.max_tgt_length - 1))
            models = ConstrainedEnsemble(models, constraint)
        return super().build_generator(models, args, seq_gen_cls, extra_gen_cls_kwargs, prefix_allowed_tokens_fn)

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
            group = self.metric_prefix
            log[f"_eval_count:{group}"] = len(predictions)
            for name, value in self.score(predictions).items():
                log[f"_eval:{group}{name}"] = value * len(predictions)
        return loss, size, log

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        for name in ("bad_rows", "nonfinite", "exif_rotated"):
            count = sum(log.get(name, 0) for log in logging_outputs)
            if count:
                metrics.log_scalar_sum(name, count)
        keys = {k for log in logging_outputs for k in log if k.startswith("_eval:")}
        groups = {k[len("_eval_count:"):] for log in logging_outputs for k in log if k.startswith("_eval_count:")}
        for key in sorted(keys):
            name = key[len("_eval:"):]
            # Metric names may hold '/' themselves (IE's entity/f1), so the group is the longest
            # metric prefix that was counted, not the text before the first '/'.
            group = max((g for g in groups if name.startswith(g)), key=len)
            count = sum(log.get(f"_eval_count:{group}", 0) for log in logging_outputs)
            total = sum(log.get(key, 0) for log in logging_outputs)
            metrics.log_scalar(name, total / count, weight=count, round=4)


def sibling_task(name, cfg, vocab, **options):
    """The registered UniGround task ``name`` sharing ``cfg``'s common options (vocabulary, image
    size, bins, ...) and ``vocab``, with ``options`` (its own data, columns) on top."""
    task_class = TASK_REGISTRY.get(name)
    if task_class is None or not issubclass(task_class, UniGroundTask) or not task_class.reads_rows:
        raise ValueError(f"{name!r} is not a UniGround task with data of its own")
    own = OmegaConf.structured(TASK_DATACLASS_REGISTRY[name])
    for key in own:
        if key in cfg and key != "_name":
            own[key] = cfg[key]
    for key, value in options.items():
        own[key] = value
    return task_class(own, vocab)
