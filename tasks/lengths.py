"""Length limits of a task's sources and targets: sized to the data unless set, measured once per
file (cached beside its index), checked against the model's positions, and never met by cutting a
row: a row that does not fit is refused with its count and the option to raise."""
import logging

import numpy as np
import torch
from omegaconf import OmegaConf

from data.dataset import Row
from data.errors import BadInputError
from data.tsv import settings_digest
from utils.progress import track

logger = logging.getLogger(__name__)
# The length limits, what they bound, and the model option that caps each.
LENGTH_LIMITS = (("max_src_length", "source", "--max-source-positions"),
                 ("max_tgt_length", "target", "--max-target-positions"))
MEASURED_MAX = np.iinfo(np.uint16).max  # token counts are cached as uint16
# Task options that leave every row's token counts as they are: changing one reuses the cached counts.
# (The vocabulary's own fingerprint stands for vocab_dir and bpe_dir.)
NOT_LENGTH_OPTIONS = {"_name", "data", "max_src_length", "max_tgt_length", "seed", "eval_metrics", "eval_args",
                      "skip_bad_rows", "bad_rows_file", "max_nonfinite_steps", "unconstrained", "decoder_prompt",
                      "media_dir", "vocab_dir", "bpe_dir", "max_media_bytes", "exif_transpose", "loader_timeout",
                      "max_image_pixels", "max_images", "max_row_pixels", "max_video_seconds",
                      "max_input_audio_seconds", "waveform_sample_rate"}


class LengthLimits:
    """The task mixin for ``--max-src-length`` and ``--max-tgt-length``; the task provides ``row_lengths``,
    ``least_target_length``, ``data_paths``, ``tsv_file``, ``reads_rows``, ``columns``, ``prompt`` and ``vocab``."""

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
