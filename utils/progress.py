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


class Progress:
    def __init__(self, what, total=None, unit="it", interval=INTERVAL_SECONDS, log=logger):
        self.what, self.total, self.unit, self.interval, self.log = what, total, unit, interval, log
        self.done, self.start = 0, time.monotonic()
        self.last = self.start

    def update(self, count=1):
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.log.info("%s", self.line(now))

    def close(self):
        self.log.info("%s", self.line(time.monotonic()))

    def line(self, now):
        meter = tqdm.format_meter(self.done, self.total, now - self.start, unit=f" {self.unit}",
                                  bar_format="{n_fmt}/{total_fmt}{unit} [{elapsed}<{remaining}, {rate_fmt}]"
                                  if self.total else "{n_fmt}{unit} [{elapsed}, {rate_fmt}]")
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
    progress.close()
