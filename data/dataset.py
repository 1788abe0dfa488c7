"""A fairseq dataset over TSV rows: the task turns each row into a sample.

Bad rows raise ``BadInputError`` with file, line and column. When the task
tolerates bad rows, the error travels inside the batch (``bad_rows``) to the
main process, which counts it against the budget and logs it: nothing is
dropped unseen, even with DataLoader workers. Rows whose image was read in its
stored frame despite an EXIF orientation travel the same way (``exif_rotated``).
"""
import json
from dataclasses import dataclass

import numpy as np
import torch
from fairseq.data import FairseqDataset
from fairseq.utils import apply_to_sample

from data.errors import BadInputError


@dataclass
class Row:
    """One TSV row's selected cells by name, able to point at any of its cells. ``tsv`` is where the row
    came from: a ``TsvFile``, or anything with its ``path``, ``line_number`` and ``column_number``
    (``InputPlace``). A row that is not ``labelled`` (a predictor's input) has empty reference cells:
    its sample has no target, and its prediction no reference."""

    tsv: object
    index: int
    cells: dict
    exif_orientation: int = 1  # set by the reader of an image kept in its stored frame despite its EXIF orientation
    labelled: bool = True

    def __getitem__(self, name):
        return self.cells[name]

    def where(self, name):
        """(file, line, column, column name) of a cell, as ``data.media`` takes it."""
        k = list(self.cells).index(name)
        return self.tsv.path, self.tsv.line_number(self.index), self.tsv.column_number(k), name

    def error(self, name, message):
        path, line, column, _ = self.where(name)
        return BadInputError(path, line, column, message, column_name=name)

    def json_object(self, name="annotation"):
        """A cell holding a JSON object: the generic layout's annotation (DESIGN.md section 4)."""
        try:
            value = json.loads(self[name])
        except json.JSONDecodeError as error:
            raise self.error(name, f"{name} is not valid JSON: {error}") from None
        if not isinstance(value, dict):
            raise self.error(name, f"{name} must be a JSON object, got {type(value).__name__}")
        return value


@dataclass
class InputPlace:
    """Where a row that is not a TSV line came from (a predictor's input), for error messages: a file
    and its line (a JSONL input), or a name and line 1 (a path, an upload)."""

    path: str
    line: int = 1

    def line_number(self, index):
        return self.line

    def column_number(self, k):
        return k + 1


def shared_in_worker(batch):
    """In a DataLoader worker, the batch with its tensors moved to shared memory here, as torch's
    default_collate does: a failure (no room left in /dev/shm) is then the worker's error, which the
    DataLoader raises in the main process. Left to the queue that sends the batch, it would only be
    printed by the queue's feeder thread, and the main process would wait for the batch forever."""
    if torch.utils.data.get_worker_info() is None:
        return batch
    return apply_to_sample(torch.Tensor.share_memory_, batch)


class TsvDataset(FairseqDataset):
    def __init__(self, tsv, column_names, build_sample, collate, tolerate_bad_rows=False,
                 shuffle=True, seed=1, sizes=None):
        """``build_sample(row) -> dict`` and ``collate(samples) -> batch`` come from the task;
        ``sizes`` holds each row's token count for ``--max-tokens`` batching (1 each if not given)."""
        self.tsv, self.column_names = tsv, column_names
        self.build_sample, self.collate = build_sample, collate
        self.tolerate_bad_rows, self.shuffle, self.seed = tolerate_bad_rows, shuffle, seed
        self._sizes = np.ones(len(tsv), dtype=np.int32) if sizes is None else np.asarray(sizes)
        if len(self._sizes) != len(tsv):
            raise ValueError(f"{len(self._sizes)} sizes for the {len(tsv)} rows of {tsv.path}")
        self.epoch = 1

    def __len__(self):
        return len(self.tsv)

    def row(self, index):
        return Row(self.tsv, index, dict(zip(self.column_names, self.tsv.fields(index))))

    def __getitem__(self, index):
        try:
            row = self.row(index)
            sample = self.build_sample(row)
        except BadInputError as error:
            if not self.tolerate_bad_rows:
                raise
            return {"id": index, "bad_row": str(error)}
        sample["id"] = index
        if row.exif_orientation != 1:
            sample["exif_rotated"] = (self.tsv.path, self.tsv.line_number(index), row.exif_orientation)
        return sample

    def collater(self, samples):
        if not samples:
            return {}  # fairseq's padding batches for uneven shards
        good = [s for s in samples if "bad_row" not in s]
        batch = self.collate(good) if good else {}
        batch["bad_rows"] = [s["bad_row"] for s in samples if "bad_row" in s]
        rotated = [s["exif_rotated"] for s in good if "exif_rotated" in s]
        if rotated:
            batch["exif_rotated"] = rotated
        return shared_in_worker(batch)

    def num_tokens(self, index):
        return int(self._sizes[index])

    def num_tokens_vec(self, indices):
        return self._sizes[indices]

    def size(self, index):
        return int(self._sizes[index])

    @property
    def sizes(self):
        return self._sizes

    def set_epoch(self, epoch):
        self.epoch = epoch

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False  # a fresh row order every epoch

    def ordered_indices(self):
        """Training: shuffled, then stably sorted by size, so that ``--max-tokens`` batches hold rows of
        similar lengths in a fresh mix each epoch (fairseq's iterator then shuffles the batches).
        Seeded by epoch, identical on every rank, so each rank's shard is disjoint."""
        if not self.shuffle:
            return np.arange(len(self), dtype=np.int64)
        order = np.random.RandomState(self.seed + self.epoch).permutation(len(self)).astype(np.int64)
        return order[np.argsort(self._sizes[order], kind="stable")]
