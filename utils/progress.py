"""Progress of long loops (evaluation, averaging, conversion of large files) as periodic log lines.

A line ``what: 450/1000 rows [00:10<00:12, 45.0 rows/s]`` (done/total, elapsed < time left, rate;
tqdm formats it) is logged every ``interval`` seconds and once at the end. Log lines, unlike a
terminal bar, read the same in a batch job's log file and stay out of the way in tests.
"""
import logging
import time

from tqdm import tqdm

logger = logging.getLogger(__name__)

INTERVAL_SECONDS = 10.0
TRAINING_INTERVAL_SECONDS = 5.0


class Progress:
    """``initial`` units were done before (a resumed run's updates): the rate and the time left count
    only those done since ``started`` (a ``time.monotonic()``, now by default)."""

    def __init__(self, what, total=None, unit="it", interval=INTERVAL_SECONDS, log=logger, initial=0, started=None):
        self.what, self.total, self.unit, self.interval, self.log = what, total, unit, interval, log
        self.initial = self.done = initial
        self.start = self.last = time.monotonic() if started is None else started

    def update(self, count=1):
        self.update_to(self.done + count)

    def update_to(self, done):
        self.done = done
        if time.monotonic() - self.last >= self.interval:
            self.report()

    def report(self):
        self.last = time.monotonic()
        self.log.info("%s", self.line(self.last))

    def line(self, now):
        meter = tqdm.format_meter(self.done, self.total, now - self.start, unit=f" {self.unit}", initial=self.initial,
                                  bar_format="{n_fmt}/{total_fmt}{unit} [{elapsed}<{remaining}, {rate_noinv_fmt}]"
                                  if self.total else "{n_fmt}{unit} [{elapsed}, {rate_noinv_fmt}]")
        return f"{self.what}: {meter}"


def track(items, what, total=None, unit="it", size=None, **options):
    """Yield ``items``, logging progress; ``size(item)`` counts an item as that many units
    (rows of a batch, say)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    progress = Progress(what, total, unit, **options)
    for item in items:
        yield item
        progress.update(size(item) if size else 1)
    progress.report()


class TrainingProgress:
    """Training's progress lines: one after the first update, then one every few seconds, counted
    against --max-update (``train: 37/4000 updates [00:12<21:20, 3.1 updates/s]``) or, without one,
    against the epoch (``epoch 2: 37/120 updates [...]``). fairseq's own lines, with the losses, come
    only every --log-interval updates."""

    def __init__(self, interval=TRAINING_INTERVAL_SECONDS, log=logger):
        self.interval, self.log, self.progress = interval, log, None

    def updated(self, what, done, total, started):
        """After an update that began at ``started``: ``done`` of ``total`` updates of ``what``."""
        if self.progress is None or self.progress.what != what:
            self.progress = Progress(what, total, "updates", self.interval, self.log, initial=done - 1, started=started)
            self.progress.done = done
            self.progress.report()  # at once: until now nothing said that training runs
        else:
            self.progress.update_to(done)
