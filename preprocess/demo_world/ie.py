"""The demo IE world: grounded NER, RE and EE samples over every modality mix of MUIE.

Each sample draws its own media with the other demo worlds' samplers and renderers: an image of 1 to 3
coloured shapes, a video of shapes that appear and move, a clip of tones, chirps and noise bursts,
and, for the text, either a sentence about those media or one about made-up people and places. The mix
of a row (I, V, A, T, T+I, T+V, T+A, I+A, T+I+A, V+A; ``MIXES``, assigned round-robin by sample index)
is the set of its filled cells, and is also named in the annotation's ``"mix"``.

Records follow ie/records.py. A mention is grounded where it lives: shapes of the image by their pixel box
(by their outline, ``"polygons"``, in the entities of image-only NER rows), shapes of the video and sound
events by their span in seconds. A sample with both a video and an audio clip has one timeline: its
audio is made as long as its video. Names of people and places, and motion directions, live only in
the text (or nowhere: a direction in a text-free row) and have no ground. When a row has text, every
mention occurs in it verbatim (lower case, single spaces, at a word boundary), and the records are the
ones the text states. Records are stored in the contract's order (``ie.records.appearance_key``).

Labels (``LABELS``; the schema of a row offers its gold labels and two others, in a random order):
  ner  entity  shape (image or video object, "red circle"), sound (audio event, "low tone"),
               person, place (text: "alice", "paris")
  re   relation  left of, above (image shapes, by their boxes), before (events on the timeline: the head
               ends no later than the tail starts), lives in (text)
  ee   event   appear (video: trigger "appears" on the first APPEAR_SECONDS of the shape's span, role
               object), move (video: trigger "moves" on the shape's span, roles object, direction),
               sound (audio: trigger "beeps", "chirps" or "hisses" on the event's span, role source),
               meet (image: two shapes whose boxes stand at most ``meet_gap`` apart, trigger "meets" on
               the union of their boxes, roles object, object; text: "alice meets bob in paris", roles
               person, person, place)

Every sample is drawn from its own random stream keyed by (seed, split, index, IE_STREAM, subtask), apart
from the other worlds' streams, so the same seed gives byte-identical files and adding IE rows leaves
the other demo files unchanged.

Rows (uniq-id ``demo-{subtask}-{split}-{index:06d}``), files ``ner_{split}.tsv``, ``re_{split}.tsv`` and
``ee_{split}.tsv`` on the generic layout: uniq-id, image (JPEG base64), video (MP4 base64), audio (FLAC
base64), text, ``{"entities"|"relations"|"events": [...], "schema": {...}, "mix": M, "duration": s}``
(``duration``: the clip's length in seconds, only when the row has a clip).
"""
import base64
import dataclasses
import json

import numpy as np

from data.tsv import format_row
from ie.records import SUBTASK_KEYS, appearance_key, parse_records
from preprocess.demo_world import audio as audio_world
from preprocess.demo_world import video as video_world
from preprocess.demo_world.scenes import (
    BOX_GAP, SPLIT_STREAMS, Scene, encode_jpeg_base64, join_with_and, render_image, sample_scene, write_rows)

IE_STREAM = 3  # appended to the image world's stream key (video 1, audio 2), then the subtask's number
SUBTASK_STREAMS = {"ner": 1, "re": 2, "ee": 3}  # never 0: numpy's SeedSequence ignores trailing zeros
MIXES = ("I", "V", "A", "T", "T+I", "T+V", "T+A", "I+A", "T+I+A", "V+A")
MAX_PER_MEDIUM_IN_PAIRS = 2  # objects or events per medium when a row has two media, to keep targets short
POLYGON_MIXES = {"I"}  # NER rows of these mixes ground their image entities by outline, not by box
APPEAR_SECONDS = 0.5  # an "appears" trigger spans the first half second of its shape's span
MEET_GAP = 0.06  # fraction of the image side (at least MIN_MEET_PIXELS): shapes whose boxes are this close meet
APART_GAP = 0.2  # ... and others stand at least this far apart (and twice the meeting gap), so "meets" is clear-cut
MIN_MEET_PIXELS = BOX_GAP + 2
AXIS_MARGIN = 0.06  # fraction of the image side: boxes overlapping on an axis overlap by at least this
TIME_MARGIN = 0.25  # seconds: events on the timeline either do not overlap or overlap by at least this
MAX_DRAWS = 1000
DISTRACTORS_PER_KIND = 2

PEOPLE = ("alice", "bob", "carol", "dave", "erin", "frank")
PLACES = ("paris", "rome", "oslo", "lima", "cairo", "tokyo")
SOUND_VERBS = {"tone": "beeps", "chirp": "chirps", "noise": "hisses"}  # by the audio world's synthesis
LABELS = {
    "entity": ("shape", "sound", "person", "place"),
    "relation": ("left of", "above", "before", "lives in"),
    "event": ("appear", "move", "sound", "meet"),
    "role": ("object", "direction", "source", "person", "place"),
}
DISTRACTOR_LABELS = {
    "entity": ("animal", "vehicle", "organization", "date"),
    "relation": ("works in", "part of", "near", "owns"),
    "event": ("vanish", "attack", "travel"),
    "role": ("time", "target", "instrument"),
}


@dataclasses.dataclass(frozen=True)
class World:
    """The media of one sample (None where the mix has no such medium) and the video's frame rate."""

    scene: Scene = None
    clip: video_world.Clip = None
    audio: audio_world.AudioClip = None
    fps: int = 1

    def duration(self):
        """Length of the sample's timeline in seconds: its video's, else its audio's, else None."""
        if self.clip is not None:
            return round(self.clip.num_frames / self.fps, 4)
        return self.audio.duration if self.audio is not None else None

    def shapes(self):
        return self.scene.shapes if self.scene is not None else []

    def timeline(self):
        """(mention text, span) of every shape of the video and sound of the audio, by start time."""
        items = [(shape_name(t), t.span(self.fps)) for t in (self.clip.tracks if self.clip else [])]
        items += [(e.name, e.span()) for e in (self.audio.events if self.audio else [])]
        return sorted(items, key=lambda item: item[1][0])


def shape_name(shape):
    return f"{shape.colour} {shape.kind}"


def mention(text, ground=None):
    return {"mention": text, **({"ground": ground} if ground is not None else {})}


def box_ground(box):
    return {"box": [int(v) if float(v).is_integer() else round(float(v), 2) for v in box]}


def span_ground(span):
    return {"span": [round(float(v), 4) for v in span]}


def box_gap(a, b):
    """Chebyshev distance between two boxes: positive when apart, in pixels."""
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


def axis_gap(a, b, axis):
    """Gap between two boxes along x (axis 0) or y (axis 1): negative when their extents overlap."""
    return max(b[axis] - a[axis + 2], a[axis] - b[axis + 2])


def spatial_relations(shapes):
    """(label, head, tail) for every pair of shapes: "left of" when the head's box ends where the tail's
    starts or before, "above" likewise vertically (both may hold)."""
    relations = []
    for a in shapes:
        for b in shapes:
            if a is not b and a.box[2] <= b.box[0]:
                relations.append(("left of", a, b))
            if a is not b and a.box[3] <= b.box[1]:
                relations.append(("above", a, b))
    return relations


def meet_gap(image_size):
    """Pixels two shapes' boxes are at most apart when the shapes meet."""
    return max(MEET_GAP * image_size, MIN_MEET_PIXELS)


def apart_gap(image_size):
    """Pixels two shapes' boxes are at least apart when the shapes do not meet."""
    return max(APART_GAP * image_size, 2 * meet_gap(image_size))


def meeting_pairs(shapes, image_size):
    """Pairs (left, right) of shapes whose boxes are at most ``meet_gap`` apart."""
    return [(a, b) for k, a in enumerate(shapes) for b in shapes[k + 1:]
            if box_gap(a.box, b.box) <= meet_gap(image_size)]


def temporal_relations(timeline):
    """(head, tail) pairs of timeline items where the head ends no later than the tail starts."""
    return [(a, b) for a in timeline for b in timeline if a is not b and a[1][1] <= b[1][0]]


# ---- drawing a sample's media under the constraints of its subtask ------------------------------------

def draw(sample, accept, what):
    """The first sample that ``accept`` takes (deterministic given the random stream)."""
    for _ in range(MAX_DRAWS):
        value = sample()
        if accept(value):
            return value
    raise RuntimeError(f"no {what} met the constraints in {MAX_DRAWS} draws")


def scene_fits(subtask, scene, image_size):
    shapes = scene.shapes
    pairs = [(a, b) for k, a in enumerate(shapes) for b in shapes[k + 1:]]
    if subtask == "re":
        # Every pair is either apart on an axis or clearly overlapping on it, so "left of" and "above" are clear.
        clear = all(not -AXIS_MARGIN * image_size < axis_gap(a.box, b.box, axis) < 0
                    for a, b in pairs for axis in (0, 1))
        return len(shapes) >= 2 and clear
    if subtask == "ee":
        gaps = [box_gap(a.box, b.box) for a, b in pairs]
        clear = all(g <= meet_gap(image_size) or g >= apart_gap(image_size) for g in gaps)
        return clear and bool(meeting_pairs(shapes, image_size))
    return bool(shapes)


def sample_capped_scene(rng, image_size, cap):
    scene = sample_scene(rng, image_size)
    if cap is None or len(scene.shapes) <= cap:
        return scene
    keep = sorted(int(k) for k in rng.choice(len(scene.shapes), size=cap, replace=False))
    return Scene(scene.background, [scene.shapes[k] for k in keep])


def sample_clips(rng, media, video_size, fps, cap):
    """(video clip or None, audio clip or None); an audio clip beside a video lasts as long as the video."""
    clip = audio = None
    if "V" in media:
        clip = video_world.sample_clip(rng, video_size, fps)
        clip = dataclasses.replace(clip, tracks=clip.tracks[:cap] if cap else clip.tracks)
    if "A" in media:
        limit = clip.num_frames / fps if clip is not None else None
        audio = draw(lambda: audio_world.sample_clip(rng), lambda a: limit is None or a.duration <= limit,
                     "audio clip short enough for its video")
        audio = audio_world.AudioClip(round(limit, 4) if limit is not None else audio.duration,
                                     audio.events[:cap] if cap else audio.events)
    return clip, audio


def timeline_fits(subtask, world):
    if subtask != "re":
        return True
    timeline = world.timeline()
    overlaps = [min(a[1][1], b[1][1]) - max(a[1][0], b[1][0]) for k, a in enumerate(timeline) for b in timeline[k + 1:]]
    clear = all(overlap <= 0 or overlap >= TIME_MARGIN for overlap in overlaps)
    enough_sounds = world.audio is None or len(world.audio.events) >= 2
    return clear and enough_sounds and bool(temporal_relations(timeline))


def sample_world(rng, subtask, media, image_size, video_size, fps):
    cap = MAX_PER_MEDIUM_IN_PAIRS if len(media - {"T"}) > 1 else None
    scene = None
    if "I" in media:
        scene = draw(lambda: sample_capped_scene(rng, image_size, cap),
                     lambda s: scene_fits(subtask, s, image_size), f"{subtask} image")
    if not media & {"V", "A"}:
        return World(scene=scene, fps=fps)
    return draw(lambda: World(scene, *sample_clips(rng, media, video_size, fps, cap), fps),
                lambda w: timeline_fits(subtask, w), f"{subtask} clip")


# ---- text about made-up people and places ------------------------------------------------------------

def people_clauses(rng, kinds):
    """Clauses "alice lives in paris", "bob visits rome", "carol meets dave in oslo" of the given kinds, with
    no name or place used twice; each is (kind, text, people, place)."""
    people = iter(str(p) for p in rng.permutation(PEOPLE))
    places = iter(str(p) for p in rng.permutation(PLACES))
    clauses = []
    for kind in kinds:
        place = next(places)
        if kind == "meets":
            first, second = next(people), next(people)
            clauses.append((kind, f"{first} meets {second} in {place}", (first, second), place))
        else:
            person = next(people)
            text = f"{person} lives in {place}" if kind == "lives" else f"{person} visits {place}"
            clauses.append((kind, text, (person,), place))
    return clauses


def clause_kinds(rng, required=None):
    """One or two clause kinds, holding ``required`` when given, in a random order."""
    kinds = [required] if required else []
    kinds += [("lives", "visits", "meets")[rng.integers(3)] for _ in range(int(rng.integers(1, 3)) - len(kinds))]
    return [kinds[k] for k in rng.permutation(len(kinds))]


# ---- records per subtask: (text, records) --------------------------------------------------------------

def ner_records(rng, world, mix, with_text, image_size):
    polygons = mix in POLYGON_MIXES
    shapes = [{"type": "shape", "mention": shape_name(s),
               "ground": {"polygons": [s.polygon()]} if polygons else box_ground(s.box)} for s in world.shapes()]
    tracks = [{"type": "shape", **mention(shape_name(t), span_ground(t.span(world.fps)))}
              for t in (world.clip.tracks if world.clip else [])]
    sounds = [{"type": "sound", **mention(e.name, span_ground(e.span()))}
              for e in (world.audio.events if world.audio else [])]
    if not with_text:
        return "", shapes + tracks + sounds
    if mix == "T":
        clauses = people_clauses(rng, clause_kinds(rng))
        entities = [entity for _, _, people, place in clauses for entity in
                    [{"type": "person", "mention": p} for p in people] + [{"type": "place", "mention": place}]]
        return " and ".join(text for _, text, _, _ in clauses), entities
    person = str(PEOPLE[rng.integers(len(PEOPLE))])
    parts = []
    if shapes:
        parts.append("sees " + join_with_and([f"a {e['mention']}" for e in shapes]))
    if tracks:
        parts.append("watches " + " then ".join(f"a {e['mention']}" for e in tracks))
    if sounds:
        parts.append("hears " + " then ".join(f"a {e['mention']}" for e in sounds))
    return f"{person} " + " and ".join(parts), [{"type": "person", "mention": person}] + shapes + tracks + sounds


def relation(label, head, tail):
    return {"label": label, "head": head, "tail": tail}


def re_records(rng, world, mix, with_text, image_size):
    spatial = [(relation(label, mention(shape_name(a), box_ground(a.box)), mention(shape_name(b), box_ground(b.box))),
                f"the {shape_name(a)} is {label} the {shape_name(b)}")
               for label, a, b in spatial_relations(world.shapes())]
    temporal = [(relation("before", mention(a[0], span_ground(a[1])), mention(b[0], span_ground(b[1]))),
                 f"the {a[0]} comes before the {b[0]}") for a, b in temporal_relations(world.timeline())]
    if not with_text:
        return "", [record for record, _ in spatial + temporal]
    if mix == "T":
        clauses = people_clauses(rng, clause_kinds(rng, "lives"))
        relations = [relation("lives in", mention(people[0]), mention(place))
                     for kind, _, people, place in clauses if kind == "lives"]
        return " and ".join(text for _, text, _, _ in clauses), relations
    # The text states one or two true relations of each medium; those are the records.
    stated = []
    for pool in (spatial, temporal):
        if pool:
            count = int(rng.integers(1, min(2, len(pool)) + 1))
            stated += [pool[k] for k in sorted(rng.choice(len(pool), size=count, replace=False))]
    return " and ".join(text for _, text in stated), [record for record, _ in stated]


def ee_records(rng, world, mix, with_text, image_size):
    meets = []
    for a, b in meeting_pairs(world.shapes(), image_size):
        union = (min(a.box[0], b.box[0]), min(a.box[1], b.box[1]), max(a.box[2], b.box[2]), max(a.box[3], b.box[3]))
        meets.append(({"type": "meet", "trigger": mention("meets", box_ground(union)), "arguments": [
            {"role": "object", **mention(shape_name(s), box_ground(s.box))} for s in (a, b)]},
            f"the {shape_name(a)} meets the {shape_name(b)}"))
    motions = []
    for t in (world.clip.tracks if world.clip else []):
        span = t.span(world.fps)
        shape = {"role": "object", **mention(shape_name(t), span_ground(span))}
        motions.append(([{"type": "appear", "trigger": mention("appears", span_ground(
                            [span[0], min(span[0] + APPEAR_SECONDS, span[1])])), "arguments": [shape]},
                         {"type": "move", "trigger": mention("moves", span_ground(span)),
                          "arguments": [shape, {"role": "direction", "mention": t.direction}]}],
                        f"the {shape_name(t)} appears and moves {t.direction}"))
    sounds = []
    for e in (world.audio.events if world.audio else []):
        verb = SOUND_VERBS[audio_world.SOUNDS[e.name][0]]
        sounds.append(({"type": "sound", "trigger": mention(verb, span_ground(e.span())),
                        "arguments": [{"role": "source", **mention(e.name, span_ground(e.span()))}]},
                       f"the {e.name} {verb}"))
    records = [r for r, _ in meets] + [r for pair, _ in motions for r in pair] + [r for r, _ in sounds]
    if not with_text:
        return "", records
    if mix == "T":
        clauses = people_clauses(rng, clause_kinds(rng, "meets"))
        events = [{"type": "meet", "trigger": mention("meets"), "arguments": [
                      {"role": "person", "mention": p} for p in people] + [{"role": "place", "mention": place}]}
                  for kind, _, people, place in clauses if kind == "meets"]
        return " and ".join(text for _, text, _, _ in clauses), events
    parts = [" and ".join(text for _, text in meets), " then ".join(text for _, text in motions),
             " then ".join(text for _, text in sounds)]
    return " and ".join(part for part in parts if part), records


RECORD_BUILDERS = {"ner": ner_records, "re": re_records, "ee": ee_records}


def gold_labels(subtask, records):
    """{schema kind: labels in order of first use} of a sample's records."""
    if subtask == "ner":
        labels = {"entity": [r["type"] for r in records]}
    elif subtask == "re":
        labels = {"relation": [r["label"] for r in records]}
    else:
        labels = {"event": [r["type"] for r in records], "role": [a["role"] for r in records for a in r["arguments"]]}
    return {kind: list(dict.fromkeys(values)) for kind, values in labels.items()}


def make_schema(rng, subtask, records):
    """The gold labels and DISTRACTORS_PER_KIND labels absent from the sample, shuffled, per schema kind."""
    schema = {}
    for kind, gold in gold_labels(subtask, records).items():
        others = [label for label in LABELS[kind] + DISTRACTOR_LABELS[kind] if label not in gold]
        picked = [others[k] for k in sorted(rng.choice(len(others), size=DISTRACTORS_PER_KIND, replace=False))]
        offered = gold + picked
        schema[kind] = [offered[k] for k in rng.permutation(len(offered))]
    return schema


def in_contract_order(subtask, records, text):
    """The records sorted as ie/records.py orders targets (first appearance; stable for ties)."""
    parsed = parse_records({SUBTASK_KEYS[subtask]: records}, subtask)
    order = sorted(range(len(records)), key=lambda k: appearance_key(parsed[k], text))
    return [records[k] for k in order]


def sample_row(subtask, split, index, image_size, video_size, fps, seed):
    """One TSV line of the subtask's file."""
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split], index, IE_STREAM, SUBTASK_STREAMS[subtask]])
    mix = MIXES[index % len(MIXES)]
    media = set(mix.split("+"))
    world = sample_world(rng, subtask, media, image_size, video_size, fps)
    text, records = RECORD_BUILDERS[subtask](rng, world, mix, "T" in media, image_size)
    annotation = {SUBTASK_KEYS[subtask]: in_contract_order(subtask, records, text),
                  "schema": make_schema(rng, subtask, records), "mix": mix}
    if world.duration() is not None:
        annotation["duration"] = world.duration()
    image = encode_jpeg_base64(render_image(rng, world.scene, image_size)) if world.scene else ""
    video = audio = ""
    if world.clip is not None:
        frames = video_world.render_frames(rng, world.clip, video_size)
        video = base64.b64encode(video_world.encode_mp4(frames, fps)).decode("ascii")
    if world.audio is not None:
        audio = base64.b64encode(audio_world.encode_flac(audio_world.render_waveform(rng, world.audio))).decode("ascii")
    return format_row([f"demo-{subtask}-{split}-{index:06d}", image, video, audio, text,
                       json.dumps(annotation, separators=(",", ":"))])


def write_ie_split(out_dir, split, num_samples, image_size, video_size, fps, seed):
    """Write ``ner_``, ``re_`` and ``ee_{split}.tsv`` with ``num_samples`` rows each; returns {file name: rows}."""
    return write_rows(out_dir, split, ({subtask: [sample_row(subtask, split, index, image_size, video_size, fps, seed)]
                                        for subtask in SUBTASK_KEYS} for index in range(num_samples)))
