"""Grounded multimodal information extraction (MUIE): the machinery of the ner, re and ee tasks.

Rows are on the generic layout ``uniq-id, image, video, audio, text, annotation-json``, any
media cell possibly empty, so one task covers every modality mix (I, V, A, T, T+I, T+V, T+A,
I+A, T+I+A, V+A). The annotation holds the records in pixels and seconds (ie/records.py) and the
schema the prompt offers (or ``--schema-file`` gives one for the dataset). The prompt names the
subtask, offers the schema and quotes the text; the target is the records in the grammar of
DESIGN.md section 5 (ie/tokens.py), each mention grounded where it lives: box or mask on
the image, a time span on the clip (the video's timeline, else the audio's), nothing in the
text. Generation is constrained by that grammar (ie/grammar.py): labels from the offered
schema, mentions copied from the text, grounds only where the sample has the medium. Scores are
MUIE's (ie/scoring.py), with malformed outputs counted.
"""
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from geometry.codec import ends_after_clip
from ie.grammar import IEGrammar, grammar_context
from ie.records import (AnnotationError, Ground, ground_outside_image, in_order, map_grounds, mentions_of,
                        moved_grounds, parse_records, parse_schema, read_schema_file, record_labels, schema_json,
                        to_annotation)
from ie.report import records_view
from ie.scoring import IESample, annotation_records, ie_scores, modality_mix, rates_of_counts, summed_counts
from ie.tokens import Frame, IETargetError, parse, serialise, target_length
from tasks.base import UniGroundConfig, UniGroundTask
from tasks.results import Records


@dataclass
class IEConfig(UniGroundConfig):
    schema_file: Optional[str] = field(default=None, metadata={
        "help": "JSON schema {entity, relation, event, role: [labels]} offered to rows without their own"})


class IETask(UniGroundTask):
    columns = ("uniq_id", "image", "video", "audio", "text", "annotation")
    uniground_tokens = True
    default_cols = "0,1,2,3,4,5"
    optional_media = True
    subtask = ""          # "ner", "re" or "ee" (ie.records.SUBTASK_KEYS)
    offered = ()          # the schema kinds the prompt offers, e.g. ("event", "role")
    instruction = ""      # the prompt's first words, e.g. " extract entities:"

    def __init__(self, cfg, vocab):
        # before the base set-up, which measures the rows with it
        self.dataset_schema = read_schema_file(cfg.schema_file) if cfg.schema_file else None
        super().__init__(cfg, vocab)

    def build_constraint(self):
        return IEGrammar(self.vocab, max_length=self.cfg.max_tgt_length - 1, max_vertices=self.cfg.max_poly_vertices)

    # ---- rows -> samples ------------------------------------------------------------------------

    def build_sample(self, row, train):
        text, annotation, records, schema = self.read_records(row)
        media, frame, window, size = self.read_media_and_grounds(row, train, records, text)
        head, body = self.prompt_ids(schema, text)
        view = media.pop("image_view", None)
        moved = moved_grounds(records, view.boxes if view else None, view.polygons if view else None,
                              window[0] if window else 0.0)
        try:
            target = serialise(in_order(moved, text), self.vocab, self.codec, frame, source_ids=body)
        except IETargetError as error:
            raise row.error("annotation", str(error)) from None
        mix = modality_mix(text=bool(text), image=bool(row["image"]), video=bool(row["video"]),
                           audio=bool(row["audio"]))
        context = grammar_context(self.vocab, {kind: getattr(schema, kind) for kind in self.offered},
                                  source_ids=body or None, has_image="image" in media,
                                  has_clip=window is not None)
        return {
            "source": self.source_tensor(head + body, row, "text" if text else "annotation"),
            "target": self.encode_target(target, row, "annotation"),
            **media,
            "meta": {"uniq_id": row["uniq_id"], "text": text, "mix": mix, "dataset": self.dataset_name(row, annotation),
                     "size": size, "window": window, "reference": to_annotation(records),
                     "schema": schema_json(schema), "ie_context": context},
        }

    def dataset_name(self, row, annotation):
        """The row's source dataset for the per-dataset scores: the annotation's ``"dataset"``, else the
        name of its TSV file without the extension."""
        name = annotation.get("dataset", os.path.splitext(os.path.basename(row.tsv.path))[0])
        if not isinstance(name, str) or not name.strip() or "/" in name:
            raise row.error("annotation", f'"dataset" must be a non-empty name without \'/\', got {name!r:.80}')
        return name

    def row_lengths(self, row):
        text, _, records, schema = self.read_records(row)
        head, body = self.prompt_ids(schema, text)
        try:
            target = target_length(in_order(records, text), self.vocab, self.cfg.max_poly_vertices, source_ids=body)
        except IETargetError as error:
            raise row.error("annotation", str(error)) from None
        return len(head) + len(body), target

    def length_settings(self):
        schema = schema_json(self.dataset_schema) if self.dataset_schema else None
        return {**super().length_settings(), "instruction": self.instruction, "offered": self.offered,
                "schema": schema}

    def read_records(self, row):
        """(single-spaced text, annotation, records, schema) of a row, labels checked against the schema."""
        text = " ".join(row["text"].split())
        annotation = row.json_object()
        try:
            records = parse_records(annotation, self.subtask)
            schema = parse_schema(annotation["schema"]) if "schema" in annotation else self.dataset_schema
        except AnnotationError as error:
            raise row.error("annotation", str(error)) from None
        if schema is None:
            raise row.error("annotation", "no schema: give the row a \"schema\" or the task --schema-file")
        self.check_labels(row, records, schema)
        return text, annotation, records, schema

    def prompt_ids(self, schema, text):
        """(instruction and schema ids, text ids): mentions are copied from the second part."""
        offer = "; ".join(f"{kind}s: {', '.join(getattr(schema, kind))}" if i else ", ".join(getattr(schema, kind))
                          for i, kind in enumerate(self.offered))
        head = self.vocab.encode_text(f"{self.instruction} {offer}." + (" text:" if text else ""))
        body = self.vocab.encode_text(f" {text}") if text else []
        return head, body

    def check_labels(self, row, records, schema):
        for record in records:
            for kind, value in record_labels(record):
                if value not in getattr(schema, kind):
                    raise row.error("annotation", f"{kind} {value!r} is not in the offered schema "
                                                  f"({', '.join(getattr(schema, kind)) or 'none'})")

    def read_media_and_grounds(self, row, train, records, text):
        """The sample's media entries (the image kept as its transformed view), its ``Frame``, the clip
        window (start, length) or None, and the original image size or None; every ground is checked
        against its medium and every text-only mention against the text."""
        grounds = [m.ground for r in records for m in mentions_of(r) if m.ground is not None]
        for record in records:
            for mention in mentions_of(record):
                if mention.ground is None and text and mention.text not in text:
                    raise row.error("annotation", f"mention {mention.text!r} is not found in the text")
        media, size, window = {}, None, None
        if row["image"]:
            image = self.media.image(row, "image")
            size = image.size
            outside = ground_outside_image(grounds, size)
            if outside is not None:
                raise row.error("annotation", f"{outside.kind} {list(outside.value)} lies outside the "
                                              f"{size[0]}x{size[1]} image")
            boxes = [g.value for g in grounds if g.kind == "box"]
            polygons = [list(map(list, g.value)) for g in grounds if g.kind == "polygons"]
            view = self.media.transform(image, train, boxes=np.array(boxes) if boxes else None,
                                        polygons=polygons or None)
            media.update(image=view.pixels, image_view=view)
        elif any(g.kind != "span" for g in grounds):
            raise row.error("annotation", "a box or mask ground needs an image")
        spans = [g.value for g in grounds if g.kind == "span"]
        if row["video"]:
            media.update(self.media.video(row, train))
        if row["audio"]:
            keep = (min(s for s, _ in spans), max(e for _, e in spans)) if spans else None
            audio = self.media.audio(row, train, keep)
            media["audio"] = audio["audio"]
            media.setdefault("window", audio["window"])
        if "window" in media:
            start, length, duration = media.pop("window")
            window = (start, length)
            for s, e in spans:
                if ends_after_clip(e, duration):
                    raise row.error("annotation", f"span {[s, e]} ends after the {duration:.3f} s clip")
        elif spans:
            raise row.error("annotation", "a span ground needs a video or an audio clip")
        frame = Frame(image_size=media["image_view"].size if "image_view" in media else None,
                      clip_length=window[1] if window else None)
        return media, frame, window, size

    # ---- outputs -> scores -----------------------------------------------------------------------

    def decode_prediction(self, tokens, meta):
        window = meta["window"]
        frame = Frame(image_size=meta["size"], clip_length=window[1] if window else None)
        records, malformed = parse(tokens, self.vocab, self.codec, frame)
        if window:
            records = map_grounds(records, lambda g: Ground(g.kind, tuple(t + window[0] for t in g.value))
                                  if g.kind == "span" else g)
        return {"uniq_id": meta["uniq_id"], "text": meta["text"], "mix": meta["mix"], "dataset": meta["dataset"],
                "size": list(meta["size"]) if meta["size"] else None, "malformed": malformed,
                "prediction": to_annotation(records), "reference": meta["reference"]}

    def score(self, predictions, full=False):
        """MUIE's P/R/F1 (and grounded F1, mean IoU, malformed count); ``full`` adds the breakdowns per
        modality mix and per source dataset, and the counts behind every rate."""
        scores = self.muie_scores(predictions)
        if full:
            return scores
        return {k: v for k, v in scores.items()
                if k == "malformed" or k.endswith("f1") and not k.startswith(("mix/", "dataset/"))}

    def muie_scores(self, predictions):
        return ie_scores([IESample(annotation_records(p["prediction"]), annotation_records(p["reference"]),
                                   p["mix"], tuple(p["size"]) if p["size"] else None, p["malformed"], p["dataset"])
                          for p in predictions])

    def validation_counts(self, predictions):
        """Units predicted, gold and matched per kind, and malformed outputs: the F1s of their sums are the
        set's (a mean of batch F1s is not)."""
        return summed_counts(self.muie_scores(predictions))

    def validation_metrics(self, counts):
        """``score``'s quick metrics (the F1s and the malformed count) of the whole validation set."""
        f1s = {name: value for name, value in rates_of_counts(counts).items() if name.endswith("f1")}
        return {**f1s, "malformed": counts["malformed"]}

    def report_view(self, prediction, row):
        return records_view(prediction)

    def result(self, prediction):
        return Records(prediction["score"], prediction["prediction"], prediction["malformed"])
