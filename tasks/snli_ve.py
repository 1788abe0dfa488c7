"""Visual entailment on UnIVAL/OFA SNLI-VE TSVs: uniq-id, image-id, image, hypothesis, premise, label.

As in OFA, the labels are answered as "yes" (entailment), "maybe" (neutral) and "no"
(contradiction) to the question ' does the image describe " hypothesis "?' (with
``--add-premise``, OFA's add_caption prompt naming the text premise too); outputs are
constrained to the three answers by the answer trie. Metric: accuracy.
"""
from dataclasses import dataclass, field

from fairseq.tasks import register_task

from data.ofa_text import clean_text
from tasks.closed_set import ClosedSetConfig, LabelTask

ANSWERS = {"entailment": "yes", "neutral": "maybe", "contradiction": "no"}
LABELS = {answer: label for label, answer in ANSWERS.items()}


@dataclass
class SnliVeConfig(ClosedSetConfig):
    add_premise: bool = field(default=False, metadata={
        "help": "also give the text premise: ' can image and text1 \" premise \" imply text2 \" hypothesis \"?'"})


@register_task("snli_ve", dataclass=SnliVeConfig)
class SnliVeTask(LabelTask):
    columns = ("uniq_id", "image", "hypothesis", "premise", "label")
    prompt = ' does the image describe " {} "?'
    premise_prompt = ' can image and text1 " {} " imply text2 " {} "?'
    primary_metric = "accuracy"
    default_cols = "0,2,3,4,5"

    def choice_texts(self):
        return list(ANSWERS.values())

    def build_sample(self, row, train):
        label = self.label(row) if row.labelled else None
        prompt, hypothesis = self.prompt_of(row)
        sample = {
            "source": self.encode_source(prompt, row, "hypothesis"),
            **self.media.read(row, train),
            "meta": {"uniq_id": row["uniq_id"], "hypothesis": hypothesis, "label": label},
        }
        if label is not None:
            sample["target"] = self.encode_target(self.vocab.encode_output(ANSWERS[label]), row, "label")
        return sample

    def row_lengths(self, row):
        return (len(self.vocab.encode_text(self.prompt_of(row)[0])),
                len(self.vocab.encode_output(ANSWERS[self.label(row)])))

    def label(self, row):
        label = row["label"].strip()
        if label not in ANSWERS:
            raise row.error("label", f"unknown label {row['label']!r}: expected one of {', '.join(ANSWERS)}")
        return label

    def prompt_of(self, row):
        """(the prompt, the normalised hypothesis) of a row."""
        hypothesis = clean_text(row["hypothesis"])
        if not hypothesis:
            raise row.error("hypothesis", "empty hypothesis")
        if not self.cfg.add_premise:
            return self.prompt.format(hypothesis), hypothesis
        premise = clean_text(row["premise"])
        if not premise:
            raise row.error("premise", "empty premise (needed by --add-premise)")
        return self.premise_prompt.format(premise, hypothesis), hypothesis

    def decode_prediction(self, tokens, meta):
        choice = self.choice_of(tokens)
        label = LABELS[self.choices[choice]] if choice is not None else None
        return {"uniq_id": meta["uniq_id"], "hypothesis": meta["hypothesis"], "prediction": label,
                "label": meta["label"]}
