"""A weighted mixture of task datasets whose batches each come from one task.

Every epoch draws ``round(ratio * size)`` rows from each task (cycling through
fresh permutations of its rows, so a small task repeats rather than starves),
where ``size`` is the total number of rows. Batches never mix tasks: each
task keeps its own collation, constraint masks and metric.
"""
import numpy as np
from fairseq.data import FairseqDataset


class MixtureDataset(FairseqDataset):
    def __init__(self, datasets, ratios, seed=1, sample=True):
        """``datasets`` and ``ratios``: dicts by task name; ``sample=False`` keeps every row once
        (validation)."""
        self.names = list(datasets)
        self.datasets = [datasets[n] for n in self.names]
        self.ratios = np.array([ratios[n] for n in self.names], dtype=np.float64)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])
        self.seed, self.sample, self.epoch = seed, sample, 1

    def __len__(self):
        return int(self.offsets[-1])

    def locate(self, index):
        """Global index -> (task number, row index in that task's dataset)."""
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return k, index - int(self.offsets[k])

    def __getitem__(self, index):
        k, row = self.locate(index)
        sample = self.datasets[k][row]
        sample["task"] = k
        return sample

    def collater(self, samples):
        if not samples:
            return {}
        k = samples[0]["task"]
        batch = self.datasets[k].collater(samples)
        batch["task"] = self.names[k]
        return batch

    def num_tokens(self, index):
        k, row = self.locate(index)
        return self.datasets[k].num_tokens(row)

    def size(self, index):
        k, row = self.locate(index)
        return self.datasets[k].size(row)

    @property
    def sizes(self):
        return np.concatenate([d.sizes for d in self.datasets])

    def set_epoch(self, epoch):
        self.epoch = epoch
        for dataset in self.datasets:
            dataset.set_epoch(epoch)

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False

    def ordered_indices(self):
        if not self.sample:
            return np.arange(len(self), dtype=np.int64)
        rng = np.random.RandomState(self.seed + self.epoch)
        counts = np.round(self.ratios / self.ratios.sum() * len(self)).astype(np.int64)
        drawn = [self.offsets[k] + cycled_permutation(rng, len(d), counts[k])
                 for k, d in enumerate(self.datasets)]
        return np.concatenate(drawn).astype(np.int64)

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        """One task per batch; fairseq's iterator then shuffles the batches."""
        tasks = np.searchsorted(self.offsets, indices, side="right") - 1
        batches = []
        for k in range(len(self.datasets)):
            mine = indices[tasks == k]
            batches += super().batch_by_size(mine, max_tokens, max_sentences, required_batch_size_multiple)
        return batches


def cycled_permutation(rng, n, count):
    """``count`` row indices in [0, n): whole permutations back to back, each row used evenly."""
    rounds = -(-count // n) if n else 0
    return np.concatenate([rng.permutation(n) for _ in range(rounds)] or [np.zeros(0, np.int64)])[:count]
