import base64
import collections
import io
import json
import re

import av
import numpy as np
import pytest

from preprocess import make_demo_data
from preprocess.demo_world.audio import SAMPLE_RATE, SOUND_BANDS
from preprocess.demo_world.scenes import COLOURS, SHAPES

TRAIN_CLIPS, VALID_CLIPS, VIDEO_SIZE, FPS = 6, 3, 64, 8
SPLITS = ("train", "valid")
FILES = [f"{kind}_{split}.tsv" for split in SPLITS
         for kind in ("video_caption", "video_qa", "audio_caption", "temporal")]
COLUMNS = {"video_caption": 5, "video_qa": 6, "audio_caption": 5, "temporal": 6}
QUESTIONS_PER_CLIP = 4
MOVES = re.compile(rf"a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) moves (left|right|up|down)")


def generate(out_dir, seed=4, *extra):
    make_demo_data.main(["--out", str(out_dir), "--seed", str(seed), "--train-images", "0", "--valid-images", "0",
                         "--train-videos", str(TRAIN_CLIPS), "--valid-videos", str(VALID_CLIPS),
                         "--train-audio", str(TRAIN_CLIPS), "--valid-audio", str(VALID_CLIPS), "--train-ie", "0",
                         "--valid-ie", "0", *extra])
    return out_dir


def read_rows(path):
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n").split("\t") for line in handle]


def av_files(folder):
    """Names of the files of the video and audio worlds (other worlds write theirs beside them)."""
    return {p.name for p in folder.iterdir() if p.name.startswith(("video_", "audio_", "temporal_"))}


def clip_id(uniq_id):
    return uniq_id.rsplit("-", 1)[0]


def decode_video(cell):
    """(declared duration in s, frame rate, [(time in s, RGB float array)])."""
    with av.open(io.BytesIO(base64.b64decode(cell))) as container:
        stream = container.streams.video[0]
        frames = [(float(frame.time), frame.to_ndarray(format="rgb24").astype(float))
                  for frame in container.decode(stream)]
        return float(stream.duration * stream.time_base), float(stream.average_rate), frames


def decode_audio(cell):
    """(sample rate, channels, float samples)."""
    with av.open(io.BytesIO(base64.b64decode(cell))) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        return stream.sample_rate, stream.channels, np.concatenate(chunks).astype(float) / 32768


def colour_mask(frame, colour):
    """Pixels whose nearest palette colour is ``colour``, and near it."""
    palette = np.array(list(COLOURS.values()), dtype=float)
    distances = np.linalg.norm(frame[..., None, :] - palette, axis=-1)
    return (distances.argmin(axis=-1) == list(COLOURS).index(colour)) & (distances.min(axis=-1) < 60)


def named(text, vocabulary):
    found = [word for word in re.findall(r"[a-z]+", text) if word in vocabulary]
    assert len(found) == 1, text
    return found[0]


def sound_named(text):
    found = [name for name in SOUND_BANDS if name in text]
    assert len(found) == 1, text
    return found[0]


def temporal_clips(demo, cell):
    """{clip id: [(query, span, duration, media cell)]} of the video (cell 2) or audio (cell 3) rows."""
    clips = collections.defaultdict(list)
    for split in SPLITS:
        for row in read_rows(demo / f"temporal_{split}.tsv"):
            if row[cell]:
                annotation = json.loads(row[5])
                clips[clip_id(row[0])].append((row[4], annotation["spans"][0], annotation["duration"], row[cell]))
    return clips


def first_captions(demo, kind):
    """{clip id: the first caption} over both splits (the first reference of a valid row)."""
    captions = {}
    for split in SPLITS:
        for row in read_rows(demo / f"{kind}_{split}.tsv"):
            captions.setdefault(row[1], row[2].split("&&")[0])
    return captions


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("demo_av"))


def test_same_seed_gives_identical_bytes_and_another_seed_differs(demo, tmp_path):
    again = generate(tmp_path / "again")
    other = generate(tmp_path / "other", 5)
    for name in FILES:
        assert (again / name).read_bytes() == (demo / name).read_bytes(), name
        assert (other / name).read_bytes() != (demo / name).read_bytes(), name


def test_files_have_the_expected_columns_and_row_counts(demo, capsys):
    names = {p.name for p in demo.iterdir()}
    assert set(FILES) <= names and not [name for name in names if name.startswith(".")]  # no temporary files
    assert av_files(demo) == set(FILES)
    for name in FILES:
        rows = read_rows(demo / name)
        assert rows and all(len(row) == COLUMNS[name.rsplit("_", 1)[0]] for row in rows), name
    for split, clips in (("train", TRAIN_CLIPS), ("valid", VALID_CLIPS)):
        captions_per_clip = 3 if split == "train" else 1
        assert len(read_rows(demo / f"video_caption_{split}.tsv")) == captions_per_clip * clips
        assert len(read_rows(demo / f"audio_caption_{split}.tsv")) == captions_per_clip * clips
        assert len(read_rows(demo / f"video_qa_{split}.tsv")) == QUESTIONS_PER_CLIP * clips
    generate(demo.parent / "summary")
    (summary,) = capsys.readouterr().out.strip().splitlines()
    assert f"video_caption_train.tsv {3 * TRAIN_CLIPS}" in summary
    assert f"audio_caption_valid.tsv {VALID_CLIPS}" in summary
    assert f"video_qa_valid.tsv {QUESTIONS_PER_CLIP * VALID_CLIPS}" in summary
    assert f"temporal_train.tsv {len(read_rows(demo / 'temporal_train.tsv'))}" in summary


def test_caption_rows_follow_the_unival_layout(demo):
    for kind, prefix in (("video_caption", "demo-video"), ("audio_caption", "demo-audio")):
        train = read_rows(demo / f"{kind}_train.tsv")
        assert [row[0] for row in train[:3]] == [f"{prefix}-train-000000-{k}" for k in range(3)]
        assert all(row[1] == clip_id(row[0]) and row[3] == "" for row in train)
        assert all(row[2] == row[2].lower() and "&&" not in row[2] for row in train)
        for row in read_rows(demo / f"{kind}_valid.tsv"):
            assert row[0] == row[1] and row[0].startswith(f"{prefix}-valid-") and row[3] == ""
            references = row[2].split("&&")
            assert len(references) == 3 and all(references)
    for row in read_rows(demo / "video_caption_train.tsv"):
        assert base64.b64decode(row[4])[4:8] == b"ftyp"  # an MP4
    for row in read_rows(demo / "audio_caption_train.tsv"):
        assert base64.b64decode(row[4])[:4] == b"fLaC"


def test_temporal_rows_hold_one_clip_and_a_span_in_seconds(demo):
    for split in SPLITS:
        rows = read_rows(demo / f"temporal_{split}.tsv")
        # Interleaved clip by clip: video clip 0's rows, audio clip 0's rows, video clip 1's rows, ...
        order = list(dict.fromkeys(clip_id(row[0]) for row in rows))
        assert order[:4] == [f"demo-{world}-{split}-{index:06d}" for index in (0, 1) for world in ("video", "audio")]
        for row in rows:
            assert row[1] == "" and bool(row[2]) != bool(row[3]), row[0]
            assert row[0].startswith("demo-video" if row[2] else "demo-audio")
            annotation = json.loads(row[5])
            assert set(annotation) == {"spans", "duration"}
            (start, end), = annotation["spans"]
            assert 0 <= start < end <= annotation["duration"], row[0]
            if row[2]:
                assert 4 <= annotation["duration"] <= 6 and end - start >= 1.2
            else:
                assert 2 <= annotation["duration"] <= 5 and 0.4 - 1e-9 <= end - start <= 1.5 + 1e-9


def test_videos_decode_to_their_duration_and_show_each_shape_only_inside_its_span(demo):
    clips = temporal_clips(demo, 2)
    assert len(clips) == TRAIN_CLIPS + VALID_CLIPS
    checked_outside = 0
    for queries in clips.values():
        duration, rate, frames = decode_video(queries[0][3])
        assert duration == queries[0][2] and rate == FPS
        assert len(frames) == round(duration * FPS)
        assert [time for time, _ in frames] == pytest.approx([k / FPS for k in range(len(frames))])
        assert frames[0][1].shape == (VIDEO_SIZE, VIDEO_SIZE, 3)
        for query, (start, end), _, _ in queries:
            colour = named(query, COLOURS)
            for time, frame in frames:
                pixels = colour_mask(frame, colour).sum()
                if start <= time and time + 1 / FPS <= end:  # the frame is shown wholly inside the span
                    assert pixels >= 40, (query, start, end, time, pixels)
                elif time + 1 / FPS <= start - 0.25 or time >= end + 0.25:
                    assert pixels == 0, (query, start, end, time, pixels)
                    checked_outside += 1
    assert checked_outside > 0


def test_shapes_move_the_way_the_captions_say_in_order_of_appearance(demo):
    captions = first_captions(demo, "video_caption")
    for clip, queries in temporal_clips(demo, 2).items():
        moves = MOVES.findall(captions[clip])
        assert [(named(q, COLOURS), named(q, SHAPES)) for q, *_ in queries] == [m[:2] for m in moves]
        _, _, frames = decode_video(queries[0][3])
        appearances = []
        for colour, _, direction in moves:
            masks = [(time, colour_mask(frame, colour)) for time, frame in frames]
            shown = [(time, mask) for time, mask in masks if mask.sum() >= 40]
            appearances.append(shown[0][0])
            (y0, x0), (y1, x1) = (np.argwhere(mask).mean(axis=0) for _, mask in (shown[0], shown[-1]))
            dx, dy = x1 - x0, y1 - y0
            expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]
            along, across = (dx, dy) if expected[0] else (dy, dx)
            assert along * sum(expected) >= 5 and abs(across) <= 1.5, (clip, colour, direction, dx, dy)
        assert appearances == sorted(appearances) and len(set(appearances)) == len(appearances)


def test_video_answers_parse_and_agree_with_the_clip(demo):
    captions = first_captions(demo, "video_caption")
    counts = {clip: len(queries) for clip, queries in temporal_clips(demo, 2).items()}
    for split in SPLITS:
        for question_id, clip, question, answers, objects, _ in read_rows(demo / f"video_qa_{split}.tsv"):
            assert clip_id(question_id) == clip and objects == "" and question.endswith("?")
            parsed = [answer.split("|!+") for answer in answers.split("&&")]
            assert all(len(p) == 2 and 0 < float(p[0]) <= 1 and p[1] for p in parsed), answers
            answer = max(parsed, key=lambda p: float(p[0]))[1]
            shapes = [(colour, kind) for colour, kind, _ in MOVES.findall(captions[clip])]
            directions = {(colour, kind): direction for colour, kind, direction in MOVES.findall(captions[clip])}
            if question == "how many shapes appear?":
                assert answer == str(counts[clip]) == str(len(shapes))
            elif question.startswith("which way"):
                assert answer == directions[(named(question, COLOURS), named(question, SHAPES))]
            elif question.startswith("what shape is"):
                assert (named(question, COLOURS), answer) in shapes
            elif question.startswith("what colour is"):
                assert [colour for colour, kind in shapes if kind == named(question, SHAPES)] == [answer]
            elif question.startswith("is there"):
                present = (named(question, COLOURS), named(question, SHAPES)) in shapes
                assert answer == ("yes" if present else "no")
            else:
                first_or_last = shapes[0] if "first" in question else shapes[-1]
                assert question.startswith("which shape appears") and answer == " ".join(first_or_last)


def test_audio_decodes_at_16khz_with_each_event_in_its_band_only_inside_its_span(demo):
    window, hop = 512, 256
    frequencies = np.fft.rfftfreq(window, 1 / SAMPLE_RATE)
    captions = first_captions(demo, "audio_caption")
    clips = temporal_clips(demo, 3)
    assert len(clips) == TRAIN_CLIPS + VALID_CLIPS
    for clip, queries in clips.items():
        rate, channels, samples = decode_audio(queries[0][3])
        assert (rate, channels) == (SAMPLE_RATE, 1)
        assert len(samples) == round(queries[0][2] * SAMPLE_RATE)
        events = [(sound_named(query), *span) for query, span, *_ in queries]
        assert captions[clip] == " then ".join(f"a {name}" for name, *_ in events)
        starts = np.arange(0, len(samples) - window + 1, hop)
        power = np.abs(np.fft.rfft(np.stack([samples[k:k + window] for k in starts]) * np.hanning(window))) ** 2
        begins, ends = starts / SAMPLE_RATE, (starts + window) / SAMPLE_RATE
        for name, start, end in events:
            low, high = SOUND_BANDS[name]
            energy = power[:, (frequencies >= low) & (frequencies <= high)].sum(axis=1)
            inside = (begins >= start + 0.02) & (ends <= end - 0.02)
            # Away from every event in the same band (the two chirps share one), with a small margin.
            near = np.zeros(len(starts), dtype=bool)
            for other, other_start, other_end in events:
                if SOUND_BANDS[other] == SOUND_BANDS[name]:
                    near |= (ends > other_start - 0.02) & (begins < other_end + 0.02)
            assert inside.any() and (~near).any()
            assert energy[inside].min() > 1000 * energy[~near].max(), (clip, name)
            if "chirp" in name:
                peaks = frequencies[power[inside].argmax(axis=1)]
                assert (peaks[-1] > peaks[0] + 1000) == (name == "rising chirp"), (clip, name, peaks)


def test_video_flags_and_disabled_worlds(tmp_path):
    make_demo_data.main(["--out", str(tmp_path), "--train-images", "0", "--valid-images", "0",
                         "--train-videos", "2", "--valid-videos", "0", "--train-audio", "0", "--valid-audio", "0",
                         "--video-size", "32", "--video-fps", "4", "--train-ie", "0", "--valid-ie", "0"])
    assert av_files(tmp_path) == {"temporal_train.tsv", "video_caption_train.tsv", "video_qa_train.tsv"}
    rows = read_rows(tmp_path / "temporal_train.tsv")
    assert rows and all(row[2] and not row[3] for row in rows)
    duration, rate, frames = decode_video(rows[0][2])
    assert rate == 4 and len(frames) == round(duration * 4) and frames[0][1].shape == (32, 32, 3)
    with pytest.raises(SystemExit):
        make_demo_data.parse_args(["--video-size", "33"])
