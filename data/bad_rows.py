"""The bad rows a run has met: logged, held to the --skip-bad-rows budget (distinct rows: one met again
in a later epoch does not use it up twice) and listed in --bad-rows-file; and the rows whose image was
read in its stored frame despite an EXIF orientation."""
import json
import logging
import os

from data.errors import location_of

logger = logging.getLogger(__name__)


class BadRows:
    def __init__(self, budget, listing_file=None):
        self.budget, self.listing_file = budget, listing_file
        self.seen = set()  # messages of the distinct bad rows met so far
        self.listed = None  # messages already in the listing file, read when first needed
        self.exif_rotated = {}  # TSV file -> its lines whose image was read in its stored frame despite EXIF

    def count(self, sample, listed=False):
        """Log a batch's bad rows and hold them to the budget; the number in this batch. With ``listed``
        (in training), each distinct row is also appended to the listing file, before any error, so that
        no skipped row goes unlisted."""
        bad = sample.get("bad_rows", [])
        for message in bad:
            logger.warning("skipped bad row: %s", message)
        new = [message for message in dict.fromkeys(bad) if message not in self.seen]
        if listed and new and self.listing_file:
            self.list(new)
        self.add(bad)
        return len(bad)

    def add(self, bad):
        """Add the messages ``bad`` to the distinct bad rows seen, an error past the budget."""
        self.seen.update(bad)
        if len(self.seen) > self.budget:
            raise RuntimeError(f"{len(self.seen)} bad rows, more than --skip-bad-rows {self.budget}; "
                               f"the last: {bad[-1]}")

    def list(self, messages):
        """Append to the listing file the rows it does not list yet (a resumed run meets rows again), one
        JSON object each: file, line, column, column_name, reason, message. Written at once: a kill
        loses none."""
        if self.listed is None:
            self.listed = set()
            if os.path.exists(self.listing_file):
                with open(self.listing_file, encoding="utf-8") as f:
                    self.listed = {json.loads(line)["message"] for line in f if line.endswith("\n")}
        os.makedirs(os.path.dirname(self.listing_file) or ".", exist_ok=True)
        with open(self.listing_file, "a", encoding="utf-8") as f:
            for message in messages:
                if message not in self.listed:
                    f.write(json.dumps({**location_of(message), "message": message}, ensure_ascii=False) + "\n")
                    self.listed.add(message)

    def count_exif_rotated(self, sample):
        """Count a batch's rows whose image carries an EXIF orientation it was read without (the stored
        frame), warning once per TSV file; the number in this batch."""
        rotated = sample.get("exif_rotated", [])
        for path, line, orientation in rotated:
            if path not in self.exif_rotated:
                logger.warning(
                    "%s:%d: the image has EXIF orientation %d and is read in its stored frame, as COCO, OFA and "
                    "UnIVAL annotations assume; if this file's boxes and polygons were drawn on the photos as "
                    "displayed, pass --exif-transpose. Such rows are counted as exif_rotated", path, line, orientation)
            self.exif_rotated.setdefault(path, set()).add(line)
        return len(rotated)

    def clear(self):
        """Forget the rows met (a new evaluation pass); the listing file keeps its lines."""
        self.seen.clear()
        self.exif_rotated.clear()
