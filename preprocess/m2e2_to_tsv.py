"""Convert M2E2 multimedia event annotations to generic-layout TSV: events, image arguments as boxes.

Input, as released with M2E2 (Li et al., ACL 2020; m2e2_annotations: text_only_event.json,
text_multimedia_event.json, image_only_event.json, image_multimedia_event.json,
crossmedia_coref.txt; images in m2e2_rawdata/image/image):

- text event files: a JSON list of sentences, each with ``sentence_id``, ``words`` (tokens) and/or
  ``sentence``, and ``golden-event-mentions``: ``{"event_type": "Conflict:Attack", "trigger":
  {"text", "start", "end"}, "arguments": [{"role", "text", "start", "end"}, ...]}`` with
  ``start``/``end`` word indices (end exclusive);
- image event files: a JSON object keyed by image id (the file name without ``.jpg``), each
  ``{"event_type": ..., "role": {"Attacker": [[id, x0, y0, x1, y1], ...], ...}}`` (a box may also
  come without its leading id), pixels of the original image;
- crossmedia_coref.txt: ``sentence_id<TAB>image file<TAB>event_type`` lines pairing a sentence and
  an image that show the same event.

The published text files are two halves of one annotation: a sentence id found in both (38 in
text_only_event.json and text_multimedia_event.json) is one sentence whose events are united (an
event of the same type and trigger words in both is one event with the union of its arguments);
its words must agree. Such merges (also of an id repeated in one file) are counted.

Output rows, in this order:

- T+I ``<sentence id>|<image file>``, one per usable coreference line: the sentence's text events,
  the image's arguments added to the sentence's first event of the coreferred type;
- T ``<sentence id>``, every sentence in no usable coreference line;
- I ``<image file>``, every annotated image in no usable coreference line.

A coreference line is unusable, and counted, when the image is annotated with another event type,
when the sentence has no text event of its type (its image event would need a trigger the text
does not hold), or, with --text-only-missing, when the image file is missing (the row would repeat
the sentence's T row): its sentence and image then stand on their own rows. A coreferred image
without image annotation gives a T+I row of the text events alone.

The text is ``words`` joined by single spaces (else ``sentence``); a text mention is its words
``start:end`` (its ``text`` when there are no words; a ``text`` that differs from its words is
counted). Mentions on the image have no text of their own, while a record needs one: an image
argument is named by its role in lower case ("attacker") and grounded by its box, and the trigger of
an image-only event is the event subtype in lower case ("attack" for Conflict:Attack, "arrest jail"
for Justice:Arrest-Jail) without ground, on an I row only, which has no text to copy a trigger
from. M2E2 scores image events by type and image arguments by
(type, role, box IoU > 0.5), which these names turn into exactly our trigger and grounded argument
matches. The schema is the event types and roles found, sorted, unless --schema is given.

Bad input is a BadInputError: in a JSON file at the line and character of the syntax error or of
the offending record's id; in the coreference file at its line and tab-separated field.
"""
import json
import os
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.errors import BadInputError  # noqa: E402
from ie.records import Argument, Event, Ground, Mention  # noqa: E402
from preprocess.ie_convert_common import (CHARACTER, FIELD, Sample, Where, add_output_args,  # noqa: E402
                                          conversion_from_args, dataset_schema, load_json_file, locate, new_parser,
                                          read_text, run, schema_from_records, value_positions)

DATASET = "m2e2"


@dataclass
class TextSentence:
    sentence_id: str
    text: str
    events: list
    where: Where
    words: list = field(default_factory=list)
    differing_texts: int = 0


@dataclass
class ImageEvent:
    image_id: str
    event_type: str
    arguments: list  # [Argument] grounded by boxes
    where: Where = None


@dataclass
class Coref:
    sentence_id: str
    image_file: str
    event_type: str
    where: Where = None


@dataclass
class M2E2:
    sentences: dict = field(default_factory=dict)  # sentence_id -> TextSentence
    images: dict = field(default_factory=dict)  # image_id -> ImageEvent
    corefs: list = field(default_factory=list)


def subtype_name(event_type):
    """'Justice:Arrest-Jail' -> 'arrest jail': the trigger text of an image-only event."""
    return " ".join(event_type.split(":")[-1].replace("-", " ").replace("_", " ").split()).lower()


def _label(value, what, where):
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"{what} must be a non-empty string, got {value!r}")
    return value.strip()


def _mention_text(item, words, what, where, sentence):
    """A text mention: words[start:end] when the sentence has words, else its 'text'."""
    if not isinstance(item, dict):
        raise where.error(f"{what} must be an object with text, start and end")
    text = item.get("text")
    if words:
        start, end = item.get("start"), item.get("end")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(words)):
            raise where.error(f"{what} start/end must be word indices within 0..{len(words)}, got {start!r}, {end!r}")
        span = " ".join(words[start:end])
        if isinstance(text, str) and " ".join(text.split()) != span:
            sentence.differing_texts += 1
        return span
    return " ".join(_label(text, f"{what} text", where).split())


def parse_sentence(record, path, file_text, id_positions):
    if not isinstance(record, dict):
        raise Where(path, 1, 1, CHARACTER).error(f"a sentence must be an object, got {record!r:.60}")
    sentence_id = record.get("sentence_id")
    if not isinstance(sentence_id, str) or not sentence_id.strip():
        raise Where(path, *locate(file_text, '"sentence_id"'), CHARACTER).error(
            f"every sentence needs a non-empty sentence_id, got {sentence_id!r}")
    where = Where(path, *id_positions.get(sentence_id, (1, 1)), CHARACTER)
    words = record.get("words")
    if words is not None and (not isinstance(words, list) or not all(isinstance(w, str) for w in words)):
        raise where.error("words must be a list of strings")
    words = [" ".join(w.split()) for w in words] if words else []
    text = " ".join(words) if words else " ".join(_label(record.get("sentence"), "sentence", where).split())
    sentence = TextSentence(sentence_id, text, [], where, words)
    mentions = record.get("golden-event-mentions", [])
    if not isinstance(mentions, list):
        raise where.error("golden-event-mentions must be a list")
    for i, mention in enumerate(mentions):
        what = f"{sentence_id} event {i}"
        if not isinstance(mention, dict):
            raise where.error(f"{what} must be an object")
        event_type = _label(mention.get("event_type"), f"{what} event_type", where)
        trigger = _mention_text(mention.get("trigger"), words, f"{what} trigger", where, sentence)
        arguments = mention.get("arguments", [])
        if not isinstance(arguments, list):
            raise where.error(f"{what} arguments must be a list")
        sentence.events.append(Event(event_type, Mention(trigger), tuple(
            Argument(_label(a.get("role") if isinstance(a, dict) else None, f"{what} argument {j} role", where),
                     Mention(_mention_text(a, words, f"{what} argument {j}", where, sentence)))
            for j, a in enumerate(arguments))))
    return sentence


def unite(first, second):
    """Add the events of ``second``, the same sentence found again, to ``first``."""
    if (first.words, first.text) != (second.words, second.text):
        raise second.where.error(f"sentence_id {second.sentence_id} appears twice with different words "
                                 f"(first at {first.where})")
    events, matched = list(first.events), set()
    for event in second.events:
        same = next((i for i, known in enumerate(events) if i not in matched
                     and (known.type, known.trigger) == (event.type, event.trigger)), None)
        if same is None:
            events.append(event)
            continue
        matched.add(same)
        arguments = tuple(dict.fromkeys(events[same].arguments + event.arguments))
        events[same] = Event(event.type, event.trigger, arguments)
    first.events = events


def _box(raw, where, what):
    if isinstance(raw, list) and len(raw) == 5:
        raw = raw[1:]  # [id, x0, y0, x1, y1]
    if (not isinstance(raw, list) or len(raw) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)):
        raise where.error(f"{what}: a box is [id, x0, y0, x1, y1] or [x0, y0, x1, y1], got {raw!r}")
    x0, y0, x1, y1 = (float(v) for v in raw)
    if not (0 <= x0 < x1 and 0 <= y0 < y1):
        raise where.error(f"{what}: empty or negative box {raw}: need 0 <= x0 < x1 and 0 <= y0 < y1")
    return (x0, y0, x1, y1)


def parse_image_event(image_id, value, path, file_text):
    where = Where(path, *locate(file_text, json.dumps(image_id)), CHARACTER)
    if not isinstance(value, dict):
        raise where.error(f"image {image_id}: expected an object with event_type and role")
    event_type = _label(value.get("event_type"), f"image {image_id} event_type", where)
    roles = value.get("role", {})
    if not isinstance(roles, dict):
        raise where.error(f"image {image_id}: role must be an object {{role: [box, ...]}}")
    arguments = []
    for role, boxes in roles.items():
        role = _label(role, f"image {image_id} role", where)
        if not isinstance(boxes, list):
            raise where.error(f"image {image_id} role {role}: expected a list of boxes")
        for box in boxes:
            ground = Ground("box", _box(box, where, f"image {image_id} role {role}"))
            arguments.append(Argument(role, Mention(role.lower(), ground)))
    return ImageEvent(image_id, event_type, arguments, where)


def parse_coref_line(path, number, line):
    fields = line.split("\t")
    if len(fields) < 3:
        raise Where(path, number, len(fields) + 1, FIELD).error(
            f"expected sentence_id<TAB>image file<TAB>event_type, got {line[:80]!r}")
    sentence_id, image_file, event_type = (f.strip() for f in fields[:3])
    for column, (value, what) in enumerate(((sentence_id, "sentence_id"), (image_file, "image file"),
                                            (event_type, "event_type")), start=1):
        if not value:
            raise Where(path, number, column, FIELD).error(f"empty {what}")
    if os.path.basename(image_file) != image_file or image_file in (".", ".."):
        raise Where(path, number, 2, FIELD).error(f"image file must be a file name, got {image_file!r}")
    return Coref(sentence_id, image_file, event_type, Where(path, number, 1, FIELD))


def read_m2e2(text_files, image_files, coref_file, conversion):
    data = M2E2()
    for path in text_files:
        records, file_text = load_json_file(path)
        if not isinstance(records, list):
            raise Where(path, 1, 1, CHARACTER).error("a text event file is a JSON list of sentences")
        id_positions = value_positions(file_text, "sentence_id")
        for sentence in conversion.gather(records, lambda r: parse_sentence(r, path, file_text, id_positions)):
            conversion.counts["text mentions whose 'text' differs from their words"] += sentence.differing_texts
            first = data.sentences.get(sentence.sentence_id)
            if first is None:
                data.sentences[sentence.sentence_id] = sentence
                continue
            try:
                unite(first, sentence)
                conversion.counts["sentence ids found again (events united)"] += 1
            except BadInputError as error:
                conversion.bad(error)
    for path in image_files:
        images, file_text = load_json_file(path)
        if not isinstance(images, dict):
            raise Where(path, 1, 1, CHARACTER).error("an image event file is a JSON object keyed by image id")
        for event in conversion.gather(images.items(), lambda kv: parse_image_event(kv[0], kv[1], path, file_text)):
            if event.image_id in data.images:
                conversion.bad(event.where.error(f"image {event.image_id} appears twice "
                                                 f"(first at {data.images[event.image_id].where})"))
                continue
            data.images[event.image_id] = event
    if coref_file:
        lines = [(n, line.rstrip("\r")) for n, line in enumerate(read_text(coref_file).split("\n"), start=1)
                 if line.strip()]
        for coref in conversion.gather(lines, lambda item: parse_coref_line(coref_file, *item)):
            if coref.sentence_id not in data.sentences:
                conversion.bad(coref.where.error(f"sentence_id {coref.sentence_id} is in no text event file"))
                continue
            data.corefs.append(coref)
    return data


def image_only_event(image):
    return Event(image.event_type, Mention(subtype_name(image.event_type)), tuple(image.arguments))


def unusable(coref, sentence, image, image_path, conversion):
    """Why a coreference line cannot make a T+I row (see the module doc), or None."""
    if image is not None and image.event_type != coref.event_type:
        return "coreferred images annotated with another event type"
    if not any(event.type == coref.event_type for event in sentence.events):
        return "coreferences without a text event of their type"
    if conversion.text_only_missing and not os.path.isfile(image_path):
        return "coreferences whose image file is missing"
    return None


def multimedia_records(sentence, image, coref):
    """The records of a usable T+I row with its image: the image's arguments join the sentence's
    first event of the coreferred type."""
    events = list(sentence.events)
    if image is None:
        return events
    first = next(i for i, event in enumerate(events) if event.type == coref.event_type)
    events[first] = Event(events[first].type, events[first].trigger, events[first].arguments + tuple(image.arguments))
    return events


def samples_from(data, images_dir, conversion):
    samples, used_sentences, used_images = [], set(), set()
    for coref in data.corefs:
        sentence = data.sentences[coref.sentence_id]
        image_id = os.path.splitext(coref.image_file)[0]
        image, path = data.images.get(image_id), os.path.join(images_dir, coref.image_file)
        reason = unusable(coref, sentence, image, path, conversion)
        if reason:
            conversion.counts[f"{reason} (sentence and image on their own rows)"] += 1
            continue
        merged = multimedia_records(sentence, image, coref)
        sample = Sample(f"{coref.sentence_id}|{coref.image_file}", sentence.text, coref.where,
                        lambda available, merged=merged, text=sentence.events: merged if available else text,
                        image=path)
        sample.notes["coreferred images without image annotation"] = image is None
        samples.append(sample)
        used_sentences.add(coref.sentence_id)
        used_images.add(image_id)
    for sentence in data.sentences.values():
        if sentence.sentence_id not in used_sentences:
            samples.append(Sample(sentence.sentence_id, sentence.text, sentence.where,
                                  lambda available, events=sentence.events: events))
    for image in data.images.values():
        if image.image_id not in used_images:
            event = image_only_event(image)
            samples.append(Sample(f"{image.image_id}.jpg", "", image.where,
                                  lambda available, event=event: [event] if available else [],
                                  image=os.path.join(images_dir, f"{image.image_id}.jpg")))
    return samples


def convert(args):
    conversion = conversion_from_args(args, DATASET, default_media_dir=args.images)
    data = read_m2e2(args.text_events, args.image_events, args.coref, conversion)
    samples = samples_from(data, args.images, conversion)
    schema = dataset_schema(args, lambda: schema_from_records([r for sample in samples for r in sample.records(True)]))
    conversion.write(samples, schema, ["events"])
    return conversion


def parse_args(argv):
    parser = new_parser(__doc__)
    parser.add_argument("--text-events", nargs="*", default=[], metavar="JSON",
                        help="text_only_event.json, text_multimedia_event.json")
    parser.add_argument("--image-events", nargs="*", default=[], metavar="JSON",
                        help="image_only_event.json, image_multimedia_event.json")
    parser.add_argument("--coref", help="crossmedia_coref.txt (without it no T+I rows are made)")
    parser.add_argument("--images", required=True, help="folder holding <image id>.jpg (m2e2_rawdata/image/image)")
    args = add_output_args(parser, default_dataset=DATASET).parse_args(argv)
    if not args.text_events and not args.image_events:
        parser.error("give --text-events, --image-events or both")
    return args


def main(argv=None):
    return run(convert, parse_args(argv))


if __name__ == "__main__":
    main()
