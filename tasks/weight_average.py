"""Evaluate along the weight-interpolation path between two checkpoints (model merging).

    python evaluate.py --path A.pt B.pt --lambdas 0 0.25 0.5 0.75 1 --data valid.tsv --results-dir out

For each lambda the merged model ``(1 - lambda) * A + lambda * B`` is built in memory (no file
written), the checkpoints' own task generates and scores on the data, and the curve of every metric
against lambda is written as ``curve.csv`` and ``curve.png`` (the Rewarded-soups picture).
"""
import csv
import os
from dataclasses import dataclass, field

from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task

from evaluation.drawing import new_figure, save_figure
from utils.averaging import average_checkpoints, check_compatible, check_lambdas
from utils.files import atomic_open


@dataclass
class WeightAverageConfig(FairseqDataclass):
    checkpoints: str = field(default="", metadata={"help": "the two checkpoints, comma-separated"})
    lambdas: str = field(default="0,0.25,0.5,0.75,1", metadata={"help": "comma-separated interpolation weights"})
    ema: bool = field(default=False, metadata={"help": "interpolate the EMA weights"})
    allow_extrapolation: bool = field(default=False, metadata={"help": "allow lambdas outside [0, 1]"})
    trust_pickle: bool = field(default=False, metadata={"help": "allow legacy pickled checkpoints (runs code)"})


@register_task("weight_average", dataclass=WeightAverageConfig)
class WeightAverageTask(FairseqTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.paths = [p for p in cfg.checkpoints.split(",") if p]
        if len(self.paths) != 2:
            raise ValueError(f"weight_average interpolates between two checkpoints, got {self.paths}")
        self.lambdas = check_lambdas([float(v) for v in cfg.lambdas.split(",")], cfg.allow_extrapolation)
        self.mismatched = check_compatible(self.paths, cfg.ema, "error", cfg.trust_pickle)

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        return cls(cfg)

    def merged_model(self, value):
        """The state dict of ``(1 - value) * A + value * B``."""
        return average_checkpoints(self.paths, [1 - value, value], self.cfg.ema, self.mismatched, "error",
                                   self.cfg.trust_pickle)["model"]

    def curve(self, evaluate_state):
        """``evaluate_state(value, state_dict) -> metrics`` at every lambda; rows of lambda and metrics."""
        return [{"lambda": value, **evaluate_state(value, self.merged_model(value))} for value in self.lambdas]


CURVE_FILES = ("curve.csv", "curve.png")


def write_curve(rows, results_dir):
    """curve.csv and curve.png: each numeric metric against lambda."""
    names = [k for k, v in rows[0].items() if k != "lambda" and isinstance(v, float)]
    table, picture = (os.path.join(results_dir, name) for name in CURVE_FILES)
    with atomic_open(table) as f:
        writer = csv.DictWriter(f, fieldnames=["lambda"] + names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    figure = new_figure(figsize=(3.2 * len(names), 3))
    axes = figure.subplots(1, len(names), squeeze=False)
    lambdas = [row["lambda"] for row in rows]
    for ax, name in zip(axes[0], names):
        ax.plot(lambdas, [row[name] for row in rows], marker="o")
        ax.set(xlabel="lambda", title=name)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, picture, dpi=100)
