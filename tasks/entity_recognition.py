"""Visual entity recognition (AutoVER's job): name the catalogue entity a sample shows.

Rows use the generic layout: uniq-id, image, video, audio, text, annotation-json, where
text is an optional question (" which entity is this?" when empty) and the annotation is
``{"entity_id": "...", "seen": true|false}`` (``seen`` optional). The catalogue
(``--catalogue``, data/catalogue.py) gives each entity a name and aliases. The model is
trained to write the canonical name; decoding is constrained to the trie of every name
and alias, and the generated text maps back to its entity (a text two entities share goes
to the entity whose canonical name it is, else to the first in catalogue order). Metrics:
accuracy, and when rows say ``seen``, seen and unseen accuracy and their harmonic mean.
"""
import logging
from dataclasses import dataclass, field

import numpy as np
from fairseq.tasks import register_task

from data.catalogue import read_catalogue
from evaluation.metrics import seen_unseen_accuracy
from evaluation.report import SampleView
from tasks.closed_set import ClosedSetConfig, ClosedSetTask
from tasks.results import Answer

logger = logging.getLogger(__name__)


@dataclass
class EntityRecognitionConfig(ClosedSetConfig):
    catalogue: str = field(default="", metadata={
        "help": "entity catalogue: TSV (id, name, description, alias&&alias) or JSONL (id, name, description, "
                "aliases)"})


@register_task("entity_recognition", dataclass=EntityRecognitionConfig)
class EntityRecognitionTask(ClosedSetTask):
    columns = ("uniq_id", "image", "video", "audio", "text", "annotation")
    prompt = " which entity is this?"
    primary_metric = "accuracy"
    default_cols = "0,1,2,3,4,5"
    optional_media = True

    def choice_texts(self):
        """Every canonical name (in catalogue order, so choice i < len(catalogue) is entity i's name),
        then every alias that differs from its entity's name and earlier aliases."""
        if not self.cfg.catalogue:
            raise ValueError("entity_recognition needs --catalogue (TSV or JSONL of id, name, description, aliases)")
        self.catalogue = read_catalogue(self.cfg.catalogue)
        texts, owners = list(self.catalogue.names), list(range(len(self.catalogue)))
        for position, (name, aliases) in enumerate(zip(self.catalogue.names, self.catalogue.aliases)):
            kept = {name}
            for alias in aliases:
                if alias not in kept:
                    kept.add(alias)
                    texts.append(alias)
                    owners.append(position)
        self.choice_entity = np.array(owners, dtype=np.int64)
        logger.info("catalogue %s: %d entities, %d names and aliases", self.catalogue.path, len(self.catalogue),
                    len(texts))
        return texts

    def build_sample(self, row, train):
        entity_id, seen = self.reference(row) if row.labelled else (None, None)
        media = self.media.read(row, train)
        if not row["text"].strip() and not any(row[name] for name in ("image", "video", "audio")):
            raise row.error("text", "the row has neither media nor text")
        sample = {
            "source": self.encode_source(self.prompt_text(row), row, "text"),
            **media,
            "meta": {"uniq_id": row["uniq_id"], "entity_id": entity_id, "seen": seen},
        }
        if entity_id is not None:
            sample["target"] = self.choice_target(self.catalogue.position[entity_id])
        return sample

    def reference(self, row):
        """(entity id, seen or None) of the row's annotation, the id checked against the catalogue."""
        annotation = row.json_object()
        entity_id = annotation.get("entity_id")
        if isinstance(entity_id, int) and not isinstance(entity_id, bool):
            entity_id = str(entity_id)
        if not isinstance(entity_id, str) or not entity_id.strip():
            raise row.error("annotation", f"annotation needs an \"entity_id\" string, got {entity_id!r}")
        entity_id = " ".join(entity_id.split())
        if entity_id not in self.catalogue:
            raise row.error("annotation", f"entity_id {entity_id!r} is not in the catalogue {self.catalogue.path}")
        seen = annotation.get("seen")
        if seen is not None and not isinstance(seen, bool):
            raise row.error("annotation", f"\"seen\" must be true or false, got {seen!r}")
        return entity_id, seen

    def row_lengths(self, row):
        """The prompt; the target is a catalogue name, which ``least_target_length`` covers."""
        return len(self.vocab.encode_text(self.prompt_text(row))), 0

    def prompt_text(self, row):
        """The row's question, else the task's prompt."""
        question = " ".join(row["text"].split())
        return f" {question}" if question else self.prompt

    def decode_prediction(self, tokens, meta):
        choice = self.choice_of(tokens)
        if choice is None:
            entity_id, name = None, self.vocab.decode_text(tokens)
        else:
            position = int(self.choice_entity[choice])
            entity_id, name = self.catalogue.ids[position], self.choices[choice]
        return {"uniq_id": meta["uniq_id"], "entity_id": entity_id, "name": name,
                "reference": meta["entity_id"], "seen": meta["seen"]}

    def score(self, predictions, full=False):
        return seen_unseen_accuracy([p["entity_id"] == p["reference"] for p in predictions],
                                    [p["seen"] for p in predictions])

    def report_view(self, prediction, row):
        reference = prediction["reference"]
        name = self.catalogue.names[self.catalogue.position[reference]] if reference is not None else None
        return SampleView(f"{prediction['name']} ({prediction['entity_id']})", f"{name} ({reference})")

    def result(self, prediction):
        return Answer(prediction["score"], prediction["name"], prediction["entity_id"])
