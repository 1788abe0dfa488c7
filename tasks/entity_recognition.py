"""Visual entity recognition (AutoVER's job): name the catalogue entity a sample shows.

Rows use the generic layout: uniq-id, image, video, audio, text, annotation-json, where
text is an optional question (" which entity is this?" when empty) and the annotation is
``{"entity_id": "...", "seen": true|false}`` (``seen`` optional). The catalogue
(``--catalogue``, data/catalogue.py) gives each entity a name and aliases. The model is
trained to write the canonical name; decoding is constrained to the trie of every name
and alias, and the generated text maps back to its entity (a text two entities share goes
to the entity whose canonical name it is, else to the first in catalogue order). Metrics:
accuracy, and when rows say ``seen``, seen and unseen accuracy and their harmonic mean.

With ``--retrieval on`` (AutoVER's inference), beam search is constrained per sample to the names and
aliases of the ``--retrieval-k`` entities nearest the sample's query embedding (``retrieval/``), and
the scores add the retrieval recall@k; train with ``--criterion retrieval_cross_entropy`` so that the
embeddings learn to retrieve.
"""
import functools
import logging
from dataclasses import dataclass, field

import numpy as np
from fairseq.tasks import register_task

from data.catalogue import read_catalogue
from retrieval.candidates import RetrievedCandidates
from retrieval.embedding import EntityTexts
from retrieval.retriever import Retriever
from tasks.closed_set import ClosedSetConfig, ClosedSetTask
from tasks.results import EntityAnswer
from tasks.validation_metrics import ROWS
from decoding.constraints import DecoderPrompted
from evaluation.metrics import accuracies_of_counts, recall_at_k, seen_unseen_accuracy, seen_unseen_counts
from evaluation.report import SampleView

logger = logging.getLogger(__name__)
RETRIEVAL_MODES = ("off", "on")


@dataclass
class EntityRecognitionConfig(ClosedSetConfig):
    catalogue: str = field(default="", metadata={
        "help": "entity catalogue: TSV (id, name, description, alias&&alias) or JSONL (id, name, description, "
                "aliases)"})
    retrieval: str = field(default="off", metadata={
        "help": "'on': beam search over the names of each sample's --retrieval-k retrieved entities only; "
                "'off': over the trie of every name"})
    retrieval_k: int = field(default=10, metadata={"help": "entities retrieved per sample"})
    retrieval_index: str = field(default="", metadata={
        "help": "file of the catalogue's entity embeddings: loaded when it exists (refused if built from another "
                "catalogue or other weights), else built and saved there; unset: <checkpoint>.entities.npz "
                "under evaluate.py, in memory otherwise (training's validation rebuilds it as the weights change)"})
    retrieval_text_tokens: int = field(default=64, metadata={
        "help": "tokens of an entity's text (name; aliases; description) its embedding reads, EOS included"})
    retrieval_chunk_size: int = field(default=4096, metadata={
        "help": "entities per chunk of the index build (the unit of sharding across ranks and of resuming)"})
    retrieval_batch_size: int = field(default=256, metadata={"help": "entities per encoder pass of the index build"})


@register_task("entity_recognition", dataclass=EntityRecognitionConfig)
class EntityRecognitionTask(ClosedSetTask):
    columns = ("uniq_id", "image", "video", "audio", "text", "annotation")
    prompt = " which entity is this?"
    primary_metric = "accuracy"
    default_cols = "0,1,2,3,4,5"
    optional_media = True

    def __init__(self, cfg, vocab):
        if cfg.retrieval not in RETRIEVAL_MODES:
            raise ValueError(f"--retrieval must be one of {', '.join(RETRIEVAL_MODES)}, got {cfg.retrieval!r}")
        if cfg.retrieval == "on" and cfg.eval_mode != "beam":
            raise ValueError("--retrieval on constrains beam search: it needs --eval-mode beam")
        if cfg.retrieval_k < 1:
            raise ValueError(f"--retrieval-k must be at least 1, got {cfg.retrieval_k}")
        super().__init__(cfg, vocab)

    def choice_texts(self):
        """Every canonical name (in catalogue order, so choice i < len(catalogue) is entity i's name),
        then every alias that differs from its entity's name and earlier aliases."""
        if not self.cfg.catalogue:
            raise ValueError("entity_recognition needs --catalogue (TSV or JSONL of id, name, description, aliases)")
        self.catalogue = read_catalogue(self.cfg.catalogue)
        self.entity_texts = EntityTexts(self.catalogue, self.vocab, self.cfg.retrieval_text_tokens)
        texts, owners = list(self.catalogue.names), list(range(len(self.catalogue)))
        self.entity_choices = [[position] for position in range(len(self.catalogue))]
        for position, (name, aliases) in enumerate(zip(self.catalogue.names, self.catalogue.aliases)):
            kept = {name}
            for alias in aliases:
                if alias not in kept:
                    kept.add(alias)
                    self.entity_choices[position].append(len(texts))
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
            position = self.retriever.entity_of(tokens, meta.get("candidates"), int(self.choice_entity[choice]))
            entity_id, name = self.catalogue.ids[position], self.choices[choice]
        prediction = {"uniq_id": meta["uniq_id"], "entity_id": entity_id, "name": name,
                      "reference": meta["entity_id"], "seen": meta["seen"]}
        if "candidates" in meta:
            prediction["retrieval_rank"] = meta["retrieval_rank"]
        return prediction

    def score(self, predictions, full=False):
        return {**seen_unseen_accuracy(*self.correct_and_seen(predictions)), **self.retrieval_recalls(predictions)}

    def correct_and_seen(self, predictions):
        return [p["entity_id"] == p["reference"] for p in predictions], [p["seen"] for p in predictions]

    def retrieval_recalls(self, predictions):
        """recall@k of the gold entity among the retrieved candidates, when every prediction was retrieved."""
        if not predictions or not all("retrieval_rank" in p for p in predictions):
            return {}
        ks = sorted({k for k in (1, 5, 10) if k < self.cfg.retrieval_k} | {self.cfg.retrieval_k})
        return recall_at_k([p["retrieval_rank"] for p in predictions], ks)

    def validation_counts(self, predictions):
        """Correct answers and rows, overall and among seen and among unseen rows (each accuracy is a mean
        over its own rows), and the recall@k hits."""
        counts = {name: value * len(predictions) for name, value in self.retrieval_recalls(predictions).items()}
        counts[ROWS] = len(predictions)
        return {**counts, **seen_unseen_counts(*self.correct_and_seen(predictions))}

    def validation_metrics(self, counts):
        accuracy = {name: value for name, value in counts.items() if "accuracy" in name}
        recalls = super().validation_metrics({name: value for name, value in counts.items() if name not in accuracy})
        return {**accuracies_of_counts(accuracy), **recalls}

    # ---- retrieval ------------------------------------------------------------------------------

    @functools.cached_property
    def retriever(self):
        return Retriever(self.catalogue, self.entity_texts, self.choice_tokens, self.entity_choices, self.cfg)

    def index_path(self):
        """Where the index is kept: --retrieval-index, else beside the evaluated checkpoint; None (in memory)
        for training's validation, whose weights change."""
        if self.cfg.eval_metrics:
            return None
        if self.cfg.retrieval_index:
            return self.cfg.retrieval_index
        return f"{self.checkpoint_path}.entities.npz" if self.checkpoint_path else None

    def output_constraint(self):
        """Under retrieval, the name trie bound to each batch's retrieved candidates."""
        if self.cfg.retrieval == "off" or self.constraint is None:
            return super().output_constraint()
        constraint = RetrievedCandidates(self.trie, self.choice_tokens, self.entity_choices)
        return DecoderPrompted(constraint) if self.cfg.decoder_prompt else constraint

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                        prefix_allowed_tokens_fn=None):
        if self.cfg.retrieval == "on" and getattr(args, "beam", 5) > self.cfg.retrieval_k:
            logger.warning("beam %d is more than --retrieval-k %d: using beam %d", args.beam, self.cfg.retrieval_k,
                           self.cfg.retrieval_k)
            args.beam = self.cfg.retrieval_k
        return super().build_generator(models, args, seq_gen_cls, extra_gen_cls_kwargs, prefix_allowed_tokens_fn)

    def retrieves(self):
        return self.cfg.retrieval == "on" and not self.cfg.unconstrained

    def prepare_generation(self, models):
        """The index, built (its ranks share the work) or loaded before any rank needs it."""
        if self.retrieves():
            self.retriever.entity_index(models[0], self.index_path())

    def predict(self, generator, models, sample):
        if self.retrieves():
            sample = self.retriever.with_candidates(models[0], sample, generator.beam_size, self.index_path())
        return super().predict(generator, models, sample)

    def report_view(self, prediction, row):
        reference = prediction["reference"]
        name = self.catalogue.names[self.catalogue.position[reference]] if reference is not None else None
        return SampleView(f"{prediction['name']} ({prediction['entity_id']})", f"{name} ({reference})")

    def result(self, prediction):
        return EntityAnswer(prediction["score"], prediction["name"], prediction["entity_id"])
