"""Temporal grounding: spans in seconds <-> two ordered time tokens, and every bad row located."""
import base64
import io
import json
import wave

import numpy as np
import pytest
import torch

from data.errors import BadInputError
from helpers import build_model, build_task, set_cell, write_tsv
from test_bad_input import assert_located, with_bad_row

# 1-based columns of the generic layout: uniq_id 1, image 2, video 3, audio 4, text 5, annotation 6
VIDEO, AUDIO, TEXT, ANNOTATION = 3, 4, 5, 6
BAD_LINE = 3


def rows(demo_dir, kind, count=4):
    with open(demo_dir / "temporal_valid.tsv", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    column = VIDEO if kind == "video" else AUDIO
    return [line for line in lines if line.split("\t")[column - 1]][:count]


def with_span(row, span, duration=None):
    annotation = {"spans": [span]} if duration is None else {"spans": [span], "duration": duration}
    return set_cell(row, ANNOTATION, json.dumps(annotation))


def wav_bytes(seconds, rate=16000):
    """A mono 16-bit WAV of a tone; zero seconds gives a valid header over an empty stream."""
    samples = (np.sin(np.arange(int(seconds * rate)) * 0.05) * 3000).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())
    return buffer.getvalue()


def base64_of(data):
    return base64.b64encode(data).decode("ascii")


BAD_CASES = {  # name: (row -> bad row, column reported, words of the reason)
    "span_after_the_clip": (lambda r: with_span(r, [1.0, 60.0]), ANNOTATION, "ends after"),
    "start_after_end": (lambda r: with_span(r, [2.0, 1.0]), ANNOTATION, "starts at or after its end"),
    "negative_start": (lambda r: with_span(r, [-1.0, 1.0]), ANNOTATION, "start at 0 s or later"),
    "nan_span": (lambda r: set_cell(r, ANNOTATION, '{"spans": [[NaN, 1.0]]}'), ANNOTATION, "finite"),
    "two_spans": (lambda r: with_span(r, [0.5, 1.0]).replace("]]", "], [1.0, 2.0]]"), ANNOTATION, "one span"),
    "not_json": (lambda r: set_cell(r, ANNOTATION, "{spans: 1"), ANNOTATION, "not valid JSON"),
    "no_clip": (lambda r: set_cell(set_cell(r, VIDEO, ""), AUDIO, ""), VIDEO, "exactly one clip"),
    "truncated_video": (lambda r: set_cell(r, VIDEO, base64_of(base64.b64decode(r.split("\t")[VIDEO - 1])[:900])),
                        VIDEO, ""),
    "empty_query": (lambda r: set_cell(r, TEXT, "  "), TEXT, "empty query"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_temporal_row_names_file_line_and_column(case, demo_dir, vocab_dir, tmp_path):
    make_bad, column, reason = BAD_CASES[case]
    good = rows(demo_dir, "video")
    path = write_tsv(tmp_path / "rows.tsv", with_bad_row(good, make_bad(good[0])))
    task = build_task("temporal_grounding", path, vocab_dir)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    for i in range(len(dataset)):
        if i != BAD_LINE - 1:
            assert dataset[i]["target"].numel() == 3  # the good rows around it still load
    with pytest.raises(BadInputError) as info:
        dataset[BAD_LINE - 1]
    assert_located(info.value, path, BAD_LINE, column)
    assert reason in info.value.reason


def test_empty_audio_stream_is_located(demo_dir, vocab_dir, tmp_path):
    good = rows(demo_dir, "audio")
    bad = set_cell(good[0], AUDIO, base64_of(wav_bytes(0.0)))
    path = write_tsv(tmp_path / "rows.tsv", with_bad_row(good, bad))
    task = build_task("temporal_grounding", path, vocab_dir)
    task.load_dataset("valid")
    with pytest.raises(BadInputError) as info:
        task.dataset("valid")[BAD_LINE - 1]
    assert_located(info.value, path, BAD_LINE, AUDIO)


def test_skip_bad_rows_drops_and_counts_a_bad_span(demo_dir, vocab_dir, tmp_path):
    good = rows(demo_dir, "audio")
    path = write_tsv(tmp_path / "rows.tsv", with_bad_row(good, with_span(good[0], [3.0, 2.0])))
    task = build_task("temporal_grounding", path, vocab_dir, skip_bad_rows=1)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[i] for i in range(len(dataset))])
    assert batch["net_input"]["src_tokens"].size(0) == len(good)
    assert len(batch["bad_rows"]) == 1 and f"rows.tsv:{BAD_LINE}: column {ANNOTATION}" in batch["bad_rows"][0]


def test_target_is_the_span_in_time_tokens_and_predictions_return_seconds(demo_dir, vocab_dir, tmp_path):
    good = rows(demo_dir, "audio", count=1)
    row = with_span(set_cell(good[0], AUDIO, base64_of(wav_bytes(4.0))), [1.0, 3.0])
    path = write_tsv(tmp_path / "rows.tsv", [row])
    task = build_task("temporal_grounding", path, vocab_dir, num_time_bins=100)
    task.load_dataset("valid")
    sample = task.dataset("valid")[0]
    bins = [task.vocab.to_time_bin(t) for t in sample["target"][:2].tolist()]
    assert bins == [round(1.0 / 4.0 * 99), round(3.0 / 4.0 * 99)]
    prediction = task.decode_prediction(sample["target"][:2].tolist(), sample["meta"])
    assert prediction["span"] == pytest.approx([1.0, 3.0], abs=4.0 / 99 / 2)
    assert prediction["reference"] == [1.0, 3.0]


def test_long_audio_window_keeps_the_span_in_training_and_maps_back_at_eval(demo_dir, vocab_dir, tmp_path):
    """A 12 s clip seen through a 4 s window: training crops around the span; evaluation sees the centre
    and the predicted tokens map back to seconds of the whole clip."""
    good = rows(demo_dir, "audio", count=1)
    row = with_span(set_cell(good[0], AUDIO, base64_of(wav_bytes(12.0))), [5.0, 6.5])
    path = write_tsv(tmp_path / "rows.tsv", [row])
    task = build_task("temporal_grounding", path, vocab_dir, max_audio_seconds=4.0)
    task.load_dataset("train")
    torch.manual_seed(0)
    for _ in range(5):
        sample = task.dataset("train")[0]
        start, length = sample["meta"]["window"]
        assert length == pytest.approx(4.0) and start <= 5.0 and start + length >= 6.5
        span = task.decode_prediction(sample["target"][:2].tolist(), sample["meta"])["span"]
        assert span == pytest.approx([5.0, 6.5], abs=4.0 / 99)
    task.load_dataset("valid")
    sample = task.dataset("valid")[0]
    assert sample["meta"]["window"] == pytest.approx((4.0, 4.0))


def test_constrained_generation_gives_two_ordered_time_tokens(demo_dir, vocab_dir):
    task = build_task("temporal_grounding", f"{demo_dir}/temporal_valid.tsv", vocab_dir)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[i] for i in range(6)])
    assert {"video", "audio"} <= set(batch["net_input"])  # one batch mixes video and audio clips
    torch.manual_seed(0)
    model = build_model(task).eval()
    generator = task.build_generator([model], type("Args", (), {"beam": 4, "max_len_b": 4})())
    for prediction, meta in zip(task.predict(generator, [model], batch), batch["meta"]):
        start, end = prediction["span"]
        assert 0.0 <= start <= end <= meta["duration"] + 1e-6
