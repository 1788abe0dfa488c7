"""Statements about several images (NLVR2-style): uniq-id, image-id, statement, label (true / false), images.

The images are a JSON list in the image cell; the statement may name them by ``<image_k>`` markers,
and images no marker names come first. Outputs are constrained to "true" and "false"; metric: accuracy.
"""
from fairseq.tasks import register_task

from tasks.closed_set import ClosedSetConfig, LabelTask

LABELS = ("true", "false")


@register_task("nlvr", dataclass=ClosedSetConfig)
class NlvrTask(LabelTask):
    columns = ("uniq_id", "image", "statement", "label")
    prompt = ' is the statement " {} " true?'
    primary_metric = "accuracy"
    default_cols = "0,4,2,3"
    uniground_tokens = True  # <image_k> tokens, which OFA's vocabulary gets appended

    def choice_texts(self):
        return list(LABELS)

    def build_sample(self, row, train):
        statement = self.statement(row)
        label = self.label(row) if row.labelled else None
        sample = {
            "source": self.encode_source(self.prompt.format(statement), row, "statement"),
            **self.media.read(row, train),
            "meta": {"uniq_id": row["uniq_id"], "statement": statement, "label": label},
        }
        if label is not None:
            sample["target"] = self.encode_target(self.vocab.encode_output(label), row, "label")
        return sample

    def row_lengths(self, row):
        prompt = self.prompt.format(self.statement(row))
        return len(self.source_ids(prompt)), len(self.vocab.encode_output(self.label(row)))

    def statement(self, row):
        statement = " ".join(row["statement"].lower().split())
        if not statement:
            raise row.error("statement", "empty statement")
        return statement

    def label(self, row):
        label = row["label"].strip().lower()
        if label not in LABELS:
            raise row.error("label", f"unknown label {row['label']!r}: expected true or false")
        return label

    def decode_prediction(self, tokens, meta):
        choice = self.choice_of(tokens)
        return {"uniq_id": meta["uniq_id"], "statement": meta["statement"],
                "prediction": None if choice is None else self.choices[choice], "label": meta["label"]}
