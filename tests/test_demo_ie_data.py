import base64
import collections
import io
import json
import re

import av
import numpy as np
import pytest
from PIL import Image

from ie.records import SUBTASK_KEYS, in_order, mentions_of, parse_records, parse_schema
from preprocess import make_demo_data
from preprocess.demo_world import ie as demo_ie
from preprocess.demo_world.audio import SAMPLE_RATE, SOUND_BANDS
from preprocess.demo_world.images import CATALOGUE_FILE
from preprocess.demo_world.scenes import COLOURS, SHAPES
from preprocess.demo_world.video import DIRECTIONS

TRAIN, VALID, IMAGE_SIZE, VIDEO_SIZE, FPS = 20, 10, 64, 64, 8
SPLITS = ("train", "valid")
SUBTASKS = ("ner", "re", "ee")
FILES = [f"{subtask}_{split}.tsv" for split in SPLITS for subtask in SUBTASKS]
MIXES = {"I", "V", "A", "T", "T+I", "T+V", "T+A", "I+A", "T+I+A", "V+A"}
CELLS = {"I": 1, "V": 2, "A": 3, "T": 4}
ROLES = {"appear": ["object"], "move": ["object", "direction"], "sound": ["source"]}
VERBS = {"low tone": "beeps", "middle tone": "beeps", "high tone": "beeps", "rising chirp": "chirps",
         "falling chirp": "chirps", "burst of noise": "hisses"}
SHAPE_NAME = re.compile(rf"^({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})$")


def generate(out_dir, seed=6, *extra):
    make_demo_data.main(["--out", str(out_dir), "--seed", str(seed), "--train-images", "0", "--valid-images", "0",
                         "--train-videos", "0", "--valid-videos", "0", "--train-audio", "0", "--valid-audio", "0",
                         "--image-size", str(IMAGE_SIZE), "--video-size", str(VIDEO_SIZE), "--video-fps", str(FPS),
                         "--train-ie", str(TRAIN), "--valid-ie", str(VALID), *extra])
    return out_dir


def read_rows(path):
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n").split("\t") for line in handle]


def samples(demo, subtasks=SUBTASKS):
    """(subtask, row, annotation, parsed records) of every row of the given subtasks' files."""
    for split in SPLITS:
        for subtask in subtasks:
            for row in read_rows(demo / f"{subtask}_{split}.tsv"):
                annotation = json.loads(row[5])
                yield subtask, row, annotation, parse_records(annotation, subtask)


def decode_image(cell):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(cell))).convert("RGB"), dtype=float)


def decode_video(cell):
    """(declared duration in s, [(time in s, RGB float array)])."""
    with av.open(io.BytesIO(base64.b64decode(cell))) as container:
        stream = container.streams.video[0]
        frames = [(float(frame.time), frame.to_ndarray(format="rgb24").astype(float))
                  for frame in container.decode(stream)]
        return float(stream.duration * stream.time_base), frames


def decode_audio(cell):
    """(sample rate, float samples)."""
    with av.open(io.BytesIO(base64.b64decode(cell))) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        return stream.sample_rate, np.concatenate(chunks).astype(float) / 32768


def nearest_colours(pixels):
    """Index into COLOURS of each pixel's nearest palette colour, or -1 when no palette colour is near."""
    palette = np.array(list(COLOURS.values()), dtype=float)
    distances = np.linalg.norm(pixels[..., None, :] - palette, axis=-1)
    return np.where(distances.min(axis=-1) < 60, distances.argmin(axis=-1), -1)


def grounds(records):
    return [(m.text, m.ground) for record in records for m in mentions_of(record) if m.ground is not None]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("demo_ie"))


def test_same_seed_gives_identical_bytes_and_another_seed_differs(demo, tmp_path):
    again = generate(tmp_path / "again")
    other = generate(tmp_path / "other", 7)
    for name in FILES:
        assert (again / name).read_bytes() == (demo / name).read_bytes(), name
        assert (other / name).read_bytes() != (demo / name).read_bytes(), name


def test_ie_rows_leave_the_other_demo_files_unchanged(tmp_path):
    flags = ["--train-images", "3", "--valid-images", "2", "--train-videos", "2", "--valid-videos", "1",
             "--train-audio", "2", "--valid-audio", "1", "--image-size", "32"]
    without = tmp_path / "without"
    with_ie = tmp_path / "with"
    make_demo_data.main(["--out", str(without), *flags, "--train-ie", "0", "--valid-ie", "0"])
    make_demo_data.main(["--out", str(with_ie), *flags, "--train-ie", "4", "--valid-ie", "2"])
    others = sorted(p.name for p in without.iterdir())
    assert others and not set(others) & set(FILES)
    assert sorted(p.name for p in with_ie.iterdir()) == sorted(others + FILES)
    for name in others:
        assert (with_ie / name).read_bytes() == (without / name).read_bytes(), name


def test_files_have_six_columns_the_expected_row_counts_and_ids(demo, capsys):
    assert sorted(p.name for p in demo.iterdir()) == sorted(FILES + [CATALOGUE_FILE])
    for split, count in (("train", TRAIN), ("valid", VALID)):
        for subtask in SUBTASKS:
            rows = read_rows(demo / f"{subtask}_{split}.tsv")
            assert [row[0] for row in rows] == [f"demo-{subtask}-{split}-{k:06d}" for k in range(count)]
            assert all(len(row) == 6 for row in rows)
    generate(demo.parent / "summary")
    (summary,) = capsys.readouterr().out.strip().splitlines()
    for subtask in SUBTASKS:
        assert f"{subtask}_train.tsv {TRAIN}," in summary and f"{subtask}_valid.tsv {VALID}," in summary


def test_every_mix_has_an_equal_share_and_fills_exactly_its_cells(demo):
    for split, count in (("train", TRAIN), ("valid", VALID)):
        for subtask in SUBTASKS:
            rows = read_rows(demo / f"{subtask}_{split}.tsv")
            mixes = collections.Counter(json.loads(row[5])["mix"] for row in rows)
            assert set(mixes) == MIXES, (subtask, split)
            assert max(mixes.values()) - min(mixes.values()) <= 1 and sum(mixes.values()) == count
            for row in rows:
                mix = json.loads(row[5])["mix"]
                filled = {medium for medium, cell in CELLS.items() if row[cell]}
                assert filled == set(mix.split("+")), (row[0], mix)
                assert bool(row[2] or row[3]) == ("duration" in json.loads(row[5])), row[0]
    image, video, audio = (base64.b64decode(read_rows(demo / "ner_train.tsv")[k][cell])
                           for k, cell in ((0, 1), (1, 2), (2, 3)))
    assert image[:2] == b"\xff\xd8" and video[4:8] == b"ftyp" and audio[:4] == b"fLaC"


def test_annotations_parse_in_contract_order_and_schemas_offer_gold_labels_and_two_distractors(demo):
    for subtask, row, annotation, records in samples(demo):
        others = set(SUBTASK_KEYS.values()) - {SUBTASK_KEYS[subtask]}
        assert records and not others & set(annotation), row[0]
        assert records == in_order(records, row[4]), row[0]
        schema = parse_schema(annotation["schema"])
        if subtask == "ner":
            offered = {"entity": schema.entity}
            gold = {"entity": {r.type for r in records}}
        elif subtask == "re":
            offered = {"relation": schema.relation}
            gold = {"relation": {r.label for r in records}}
        else:
            offered = {"event": schema.event, "role": schema.role}
            gold = {"event": {r.type for r in records}, "role": {a.role for r in records for a in r.arguments}}
        assert set(annotation["schema"]) == set(offered), row[0]
        for kind, labels in offered.items():
            assert gold[kind] <= set(labels) and gold[kind] <= set(demo_ie.LABELS[kind]), (row[0], kind)
            distractors = set(labels) - gold[kind]
            assert len(distractors) == 2, (row[0], kind, labels)
            assert distractors <= set(demo_ie.LABELS[kind] + demo_ie.DISTRACTOR_LABELS[kind])


def test_text_mentions_occur_verbatim_and_only_medium_mentions_are_grounded(demo):
    texts = 0
    for subtask, row, annotation, records in samples(demo):
        text, mix = row[4], annotation["mix"]
        media = set(mix.split("+"))
        if text:
            texts += 1
            assert text == " ".join(text.lower().split()), row[0]
        for record in records:
            for m in mentions_of(record):
                if text:
                    first = re.search(rf"(?<![a-z]){re.escape(m.text)}(?![a-z])", text)
                    assert first and first.start() == text.find(m.text), (row[0], m.text, text)
                if m.ground is None:
                    # Names and places live in the text; a direction is a word, seen or not.
                    assert "T" in media or m.text in DIRECTIONS, (row[0], m.text)
                    assert not SHAPE_NAME.match(m.text) and m.text not in SOUND_BANDS, (row[0], m.text)
                elif m.ground.kind == "span":
                    assert media & {"V", "A"}, row[0]
                else:
                    assert "I" in media, row[0]
                    assert (m.ground.kind == "polygons") == (subtask == "ner" and mix == "I"), row[0]
    assert texts == 3 * 5 * (TRAIN + VALID) // 10  # five of the ten mixes have text


def test_no_mention_word_hides_inside_another_word_of_the_language(demo):
    """A mention is found in its text by its first occurrence (ie.records.appearance_key), so no one-word
    mention may be part of a longer word, which any sentence could hold before it ("rome" inside a
    "chrome" would misplace a record). (Longer mentions are checked where they occur, in the test below.)"""
    single = {m.text for _, _, _, records in samples(demo) for record in records
              for m in mentions_of(record) if " " not in m.text}
    assert {"alice", "paris", "meets", "appears", "moves", "beeps", "left"} & single
    single |= set(demo_ie.PEOPLE + demo_ie.PLACES) | set(DIRECTIONS)
    single |= set(demo_ie.SOUND_VERBS.values()) | {"meets", "appears", "moves"}
    words = {word for _, row, _, _ in samples(demo) for word in row[4].split()}
    words |= set(COLOURS) | set(SHAPES) | {word for name in SOUND_BANDS for word in name.split()}
    assert len(words) > 40
    for word in single:
        assert not [other for other in words if word in other and word != other], word


def test_texts_state_exactly_the_records(demo):
    for subtask, row, annotation, records in samples(demo):
        text, mix = row[4], annotation["mix"]
        if not text:
            continue
        if subtask == "re" and mix != "T":
            verbs = {"before": "comes before", "left of": "is left of", "above": "is above"}
            clauses = {f"the {r.head.text} {verbs[r.label]} the {r.tail.text}" for r in records}
            assert set(text.split(" and ")) == clauses, row[0]
        elif subtask == "re":
            lives = {f"{r.head.text} lives in {r.tail.text}" for r in records}
            assert {c for c in text.split(" and ") if " lives in " in c} == lives and records, row[0]
        elif subtask == "ee" and mix == "T":
            meets = {"{} meets {} in {}".format(*(a.mention.text for a in r.arguments)) for r in records}
            assert [a.role for r in records for a in r.arguments] == ["person", "person", "place"] * len(records)
            assert {c for c in text.split(" and ") if " meets " in c} == meets and records, row[0]
        elif subtask == "ner":
            mentions = [r.mention.text for r in records]
            if mix == "T":
                assert [r.type for r in records] == [("place" if m in demo_ie.PLACES else "person") for m in mentions]
                assert " ".join(w for w in text.split() if w in demo_ie.PEOPLE + demo_ie.PLACES) == " ".join(mentions)
            else:
                assert records[0].type == "person" and text.startswith(records[0].mention.text + " ")
                assert sorted(re.findall(r"\ba (burst of noise|[a-z]+ [a-z]+)\b", text)) == sorted(mentions[1:])


def test_boxes_lie_inside_their_image_on_the_named_colour(demo):
    checked = 0
    for subtask, row, annotation, records in samples(demo):
        if not row[1]:
            continue
        image = decode_image(row[1])
        assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        colours = nearest_colours(image)
        for text, ground in grounds(records):
            if ground.kind == "span":
                continue
            if ground.kind == "box":
                x0, y0, x1, y1 = ground.value
            else:
                (polygon,) = ground.value
                x0, y0, x1, y1 = min(polygon[0::2]), min(polygon[1::2]), max(polygon[0::2]), max(polygon[1::2])
            assert 0 <= x0 < x1 <= IMAGE_SIZE and 0 <= y0 < y1 <= IMAGE_SIZE, (row[0], text, ground)
            if text == "meets":
                continue  # checked against its arguments in test_relations_and_events_agree_with_their_grounds
            colour = SHAPE_NAME.match(text).group(1)
            inside = colours[round(y0):round(y1), round(x0):round(x1)].reshape(-1)
            counts = np.bincount(inside[inside >= 0], minlength=len(COLOURS))
            assert counts.argmax() == list(COLOURS).index(colour), (row[0], text, counts)
            assert counts.max() >= 0.3 * inside.size, (row[0], text, counts, inside.size)
            checked += 1
    assert checked >= 40


def test_spans_lie_inside_their_clip_and_audio_shares_the_video_timeline(demo):
    clips = 0
    for subtask, row, annotation, records in samples(demo):
        if not (row[2] or row[3]):
            assert not [g for _, g in grounds(records) if g.kind == "span"], row[0]
            continue
        durations = []
        if row[2]:
            duration, frames = decode_video(row[2])
            assert len(frames) == round(duration * FPS) and frames[0][1].shape == (VIDEO_SIZE, VIDEO_SIZE, 3)
            durations.append(duration)
        if row[3]:
            rate, samples_ = decode_audio(row[3])
            assert rate == SAMPLE_RATE
            durations.append(len(samples_) / rate)
        assert durations == pytest.approx([annotation["duration"]] * len(durations), abs=1e-6), row[0]
        for text, ground in grounds(records):
            if ground.kind == "span":
                start, end = ground.value
                assert 0 <= start < end <= annotation["duration"] + 1e-9, (row[0], text, ground.value)
        clips += 1
    assert clips == 3 * 7 * (TRAIN + VALID) // 10  # seven of the ten mixes have a clip


def test_each_shape_shows_and_each_sound_sounds_only_inside_its_span(demo):
    """NER rows name every shape and sound of their media, so absence can be checked too."""
    window, hop = 512, 256
    frequencies = np.fft.rfftfreq(window, 1 / SAMPLE_RATE)
    shown = heard = 0
    for _, row, _, records in samples(demo, ("ner",)):
        spans = [(text, ground.value) for text, ground in grounds(records) if ground.kind == "span"]
        if row[2]:
            _, frames = decode_video(row[2])
            for text, (start, end) in spans:
                if not SHAPE_NAME.match(text):
                    continue
                colour = list(COLOURS).index(SHAPE_NAME.match(text).group(1))
                for time, frame in frames:
                    pixels = (nearest_colours(frame) == colour).sum()
                    if start <= time and time + 1 / FPS <= end:
                        assert pixels >= 20, (row[0], text, time, pixels)
                    elif time + 1 / FPS <= start - 0.25 or time >= end + 0.25:
                        assert pixels == 0, (row[0], text, time, pixels)
                shown += 1
        if row[3]:
            rate, samples_ = decode_audio(row[3])
            starts = np.arange(0, len(samples_) - window + 1, hop)
            power = np.abs(np.fft.rfft(np.stack([samples_[k:k + window] for k in starts]) * np.hanning(window))) ** 2
            begins, ends = starts / rate, (starts + window) / rate
            sounds = [(text, span) for text, span in spans if text in SOUND_BANDS]
            quiet = np.ones(len(starts), dtype=bool)
            for _, (start, end) in sounds:
                quiet &= (ends <= start - 0.02) | (begins >= end + 0.02)
            assert quiet.any(), row[0]
            for text, (start, end) in sounds:
                low, high = SOUND_BANDS[text]
                energy = power[:, (frequencies >= low) & (frequencies <= high)].sum(axis=1)
                inside = (begins >= start + 0.02) & (ends <= end - 0.02)
                assert inside.any() and energy[inside].min() > 1000 * energy[quiet].max(), (row[0], text)
                heard += 1
    assert shown >= 5 and heard >= 5


def test_relations_and_events_agree_with_their_grounds(demo):
    labels = collections.Counter()
    for subtask, row, annotation, records in samples(demo, ("re", "ee")):
        for record in records:
            if subtask == "re":
                labels[record.label] += 1
                head, tail = record.head.ground, record.tail.ground
                if record.label == "left of":
                    assert head.kind == tail.kind == "box" and head.value[2] <= tail.value[0], row[0]
                elif record.label == "above":
                    assert head.kind == tail.kind == "box" and head.value[3] <= tail.value[1], row[0]
                elif record.label == "before":
                    assert head.kind == tail.kind == "span" and head.value[1] <= tail.value[0], row[0]
                else:
                    assert record.label == "lives in" and head is None and tail is None, row[0]
                    assert record.head.text in demo_ie.PEOPLE and record.tail.text in demo_ie.PLACES
                continue
            labels[record.type] += 1
            roles = [a.role for a in record.arguments]
            trigger = record.trigger.ground
            if record.type == "meet" and trigger is not None:
                (_, a), (_, b) = [(arg.role, arg.mention.ground.value) for arg in record.arguments]
                assert roles == ["object", "object"] and record.trigger.text == "meets"
                union = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                assert trigger.value == union and a[0] <= b[0], row[0]
                gap = max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])
                assert 0 < gap <= demo_ie.meet_gap(IMAGE_SIZE), (row[0], gap)
            elif record.type == "meet":
                assert roles == ["person", "person", "place"] and annotation["mix"] == "T"
            else:
                assert roles == ROLES[record.type], row[0]
                subject = record.arguments[0].mention
                if record.type == "appear":
                    start, end = subject.ground.value
                    assert record.trigger.text == "appears"
                    assert trigger.value == pytest.approx((start, min(start + 0.5, end))), row[0]
                elif record.type == "move":
                    assert record.trigger.text == "moves" and trigger == subject.ground, row[0]
                    assert record.arguments[1].mention.text in DIRECTIONS
                else:
                    assert record.trigger.text == VERBS[subject.text] and trigger == subject.ground, row[0]
    assert set(labels) == set(demo_ie.LABELS["relation"] + demo_ie.LABELS["event"]), labels


def test_ie_flags_default_disable_and_refuse_negative_counts(tmp_path):
    args = make_demo_data.parse_args([])
    assert (args.train_ie, args.valid_ie) == (500, 60)
    with pytest.raises(SystemExit):
        make_demo_data.parse_args(["--valid-ie", "-1"])
    generate(tmp_path, 6, "--train-ie", "3", "--valid-ie", "0")
    names = {p.name for p in tmp_path.iterdir()}
    assert {"ner_train.tsv", "re_train.tsv", "ee_train.tsv"} <= names and not names & {"ner_valid.tsv", "re_valid.tsv",
                                                                                          "ee_valid.tsv"}
