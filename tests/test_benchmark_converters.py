"""Converters of the published benchmarks, on small files written in each dataset's documented format."""
import json
import os
import pickle

import pytest

from helpers import build_task
from preprocess import (audiocaps_to_tsv, karpathy_to_tsv, msrvtt_to_tsv, oven_to_tsv, refcoco_to_tsv, snli_ve_to_tsv,
                        vqav2_to_tsv)
from evaluation.metrics import vqa_soft_accuracy

from conftest import SHARED_DATA

COCO_PHOTOS = os.path.join(SHARED_DATA, "coco-mini/images")
needs_coco = pytest.mark.skipif(not os.path.isdir(COCO_PHOTOS), reason="coco-mini is not available")

RLE = {"size": [4, 6], "counts": [2, 3, 19]}  # uncompressed, as COCO stores crowds


def read_rows(path):
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n").split("\t") for line in handle]


def media(tmp_path, *names):
    folder = tmp_path / "media"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\xff\xd8")
    return folder


# ---- RefCOCO/+/g -------------------------------------------------------------------------------------


def sentence(sent_id, text):
    return {"tokens": text.split(), "raw": text.capitalize() + ".", "sent_id": sent_id, "sent": text}


def write_refcoco(tmp_path, refs=None):
    instances = {
        "images": [{"id": 11, "file_name": "COCO_train2014_000000000011.jpg", "height": 4, "width": 6},
                   {"id": 12, "file_name": "COCO_train2014_000000000012.jpg", "height": 4, "width": 6}],
        "annotations": [
            {"id": 101, "image_id": 11, "category_id": 1, "bbox": [1, 0.5, 2.25, 3],
             "segmentation": [[1, 0.5, 3.25, 0.5, 3.25, 3.5]], "iscrowd": 0},
            {"id": 102, "image_id": 12, "category_id": 2, "bbox": [0, 0, 6, 4], "segmentation": RLE, "iscrowd": 1},
            {"id": 103, "image_id": 12, "category_id": 2, "bbox": [2, 2, 0, 1], "segmentation": [], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]}
    if refs is None:
        refs = [{"ref_id": 0, "ann_id": 101, "image_id": 11, "split": "train", "category_id": 1,
                 "file_name": "COCO_train2014_000000000011_101.jpg", "sent_ids": [5, 6],
                 "sentences": [sentence(5, "man on the left"), sentence(6, "guy\tin red")]},
                {"ref_id": 1, "ann_id": 102, "image_id": 12, "split": "testA", "category_id": 2,
                 "file_name": "COCO_train2014_000000000012_102.jpg", "sent_ids": [7],
                 "sentences": [sentence(7, "dogs")]},
                {"ref_id": 2, "ann_id": 103, "image_id": 12, "split": "testA", "category_id": 2,
                 "file_name": "COCO_train2014_000000000012_103.jpg", "sent_ids": [8],
                 "sentences": [sentence(8, "thin line")]}]
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    (tmp_path / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    return ["--refs", str(tmp_path / "refs(unc).p"), "--instances", str(tmp_path / "instances.json"),
            "--out-dir", str(tmp_path / "out")]


def test_refcoco_rows_per_expression_split_by_the_refs(tmp_path, capsys):
    folder = media(tmp_path, "COCO_train2014_000000000011.jpg", "COCO_train2014_000000000012.jpg")
    refcoco_to_tsv.main(write_refcoco(tmp_path) + ["--media-dir", str(folder), "--prefix", "refcoco+"])
    out = tmp_path / "out"
    assert read_rows(out / "refcoco+_refcoco_train.tsv") == [
        ["5", "11", "man on the left", "1,0.5,3.25,3.5", "COCO_train2014_000000000011.jpg"],
        ["6", "11", "guy in red", "1,0.5,3.25,3.5", "COCO_train2014_000000000011.jpg"]]
    # the thin object's box is empty: no refcoco row, and no mask: no refseg row
    assert read_rows(out / "refcoco+_refcoco_testA.tsv") == [
        ["7", "12", "dogs", "0,0,6,4", "COCO_train2014_000000000012.jpg"]]
    seg_train = read_rows(out / "refcoco+_refseg_train.tsv")
    assert [r[:5] for r in seg_train] == [["5", "COCO_train2014_000000000011.jpg", "", "", "man on the left"],
                                         ["6", "COCO_train2014_000000000011.jpg", "", "", "guy in red"]]
    assert json.loads(seg_train[0][5]) == {"regions": [{"polygons": [[1, 0.5, 3.25, 0.5, 3.25, 3.5]]}]}
    (seg_test,) = read_rows(out / "refcoco+_refseg_testA.tsv")
    region = json.loads(seg_test[5])["regions"][0]["rle"]
    assert region["size"] == [4, 6] and isinstance(region["counts"], str)  # compressed
    summary = capsys.readouterr().out
    assert "refcoco+_refcoco_train.tsv (2 rows)" in summary
    assert "1 skipped: empty box (refcoco rows)" in summary
    assert "1 skipped: object without a segmentation (refseg rows)" in summary


@needs_coco
def test_refcoco_rows_can_be_read_by_the_tasks(tmp_path, vocab_dir):
    photos = COCO_PHOTOS
    name = sorted(os.listdir(photos))[0]
    refs_args = write_refcoco(tmp_path)
    instances = json.loads((tmp_path / "instances.json").read_text())
    for image in instances["images"]:
        image["file_name"] = name
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    refcoco_to_tsv.main(refs_args + ["--media-dir", photos])
    for task_name in ("refcoco", "refseg"):
        task = build_task(task_name, str(tmp_path / "out" / f"refcoco_{task_name}_train.tsv"), vocab_dir,
                          media_dir=photos)
        task.load_dataset("valid")
        assert len(task.dataset("valid")) == 2 and task.dataset("valid")[1]["target"].numel() > 4


def test_a_missing_image_stops_unless_allowed(tmp_path, capsys):
    folder = media(tmp_path, "COCO_train2014_000000000011.jpg")
    with pytest.raises(SystemExit, match=r"refs\(unc\).p: ref 2 \(ref_id 1\): media file not found: .*000000000012"):
        refcoco_to_tsv.main(write_refcoco(tmp_path) + ["--media-dir", str(folder)])
    assert not list((tmp_path / "out").iterdir())  # the first ref's rows are not left behind
    refcoco_to_tsv.main(write_refcoco(tmp_path) + ["--media-dir", str(folder), "--allow-missing"])
    assert "2 rows whose media file is missing" in capsys.readouterr().out
    assert read_rows(tmp_path / "out" / "refcoco_refcoco_testA.tsv")[0][4] == "COCO_train2014_000000000012.jpg"


def test_a_ref_naming_an_unknown_annotation_is_located(tmp_path):
    refs = [{"ref_id": 9, "ann_id": 999, "image_id": 11, "split": "val", "sentences": [sentence(1, "x")]}]
    folder = media(tmp_path)
    with pytest.raises(SystemExit, match=r"ref 1 \(ref_id 9\): its ann_id 999 is not in .*instances.json"):
        refcoco_to_tsv.main(write_refcoco(tmp_path, refs) + ["--media-dir", str(folder)])


class Gadget:
    def __reduce__(self):
        return (print, ("ran",))


def test_a_refs_pickle_naming_a_class_is_refused_unrun(tmp_path, capsys):
    args = write_refcoco(tmp_path)
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps([Gadget()]))
    with pytest.raises(SystemExit, match=r"refs\(unc\).p:1: column 1: not a readable pickle of plain data: "
                                         r"it names builtins.print"):
        refcoco_to_tsv.main(args + ["--media-dir", str(media(tmp_path))])
    assert "ran" not in capsys.readouterr().out


# ---- VQAv2 -------------------------------------------------------------------------------------------


def write_vqa(tmp_path, subtype, questions, annotations=None):
    (tmp_path / f"{subtype}_q.json").write_text(json.dumps(
        {"data_subtype": subtype, "task_type": "Open-Ended", "questions": questions}), encoding="utf-8")
    args = ["--questions", str(tmp_path / f"{subtype}_q.json")]
    if annotations is not None:
        (tmp_path / f"{subtype}_a.json").write_text(json.dumps({"annotations": annotations}), encoding="utf-8")
        args += ["--annotations", str(tmp_path / f"{subtype}_a.json")]
    return args


def vqa_annotation(question_id, image_id, humans, multiple_choice):
    return {"question_id": question_id, "image_id": image_id, "multiple_choice_answer": multiple_choice,
            "answer_type": "other", "question_type": "what",
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(humans)]}


VQA_QUESTIONS = [{"image_id": 9, "question": "How many dogs?", "question_id": 90},
                 {"image_id": 9, "question": "What color\tis it?", "question_id": 91}]
VQA_ANNOTATIONS = [vqa_annotation(90, 9, ["two", "2", "Two.", "3", "3", "three", "2", "2 ", "4", "two"], "2"),
                   vqa_annotation(91, 9, ["red"] * 10, "red")]


def test_vqa_rows_carry_the_official_accuracy_of_each_answer(tmp_path, capsys):
    folder = media(tmp_path, "train2014/COCO_train2014_000000000009.jpg")
    args = write_vqa(tmp_path, "train2014", VQA_QUESTIONS, VQA_ANNOTATIONS)
    vqav2_to_tsv.main(args + ["--media-dir", str(folder), "--out-dir", str(tmp_path / "out"),
                              "--answers-out", str(tmp_path / "out" / "answers.txt"), "--min-answer-count", "1"])
    image = "train2014/COCO_train2014_000000000009.jpg"
    # "2" six times (1.0), "3" three times (0.9), "4" once (0.3); unanimous "red" kept as given
    assert read_rows(tmp_path / "out" / "vqa_train2014.tsv") == [
        ["90", "9", "How many dogs?", "1|!+2&&0.9|!+3&&0.3|!+4", "", image],
        ["91", "9", "What color is it?", "1|!+red", "", image]]
    assert (tmp_path / "out" / "answers.txt").read_text() == "2\nred\n"
    assert "answers.txt (2 rows)" in capsys.readouterr().out


def test_vqa_rows_without_a_listed_answer_are_skipped(tmp_path, capsys):
    folder = media(tmp_path, "val2014/COCO_val2014_000000000009.jpg")
    (tmp_path / "answers.txt").write_text("red\nblue\n")
    args = write_vqa(tmp_path, "val2014", VQA_QUESTIONS, VQA_ANNOTATIONS)
    vqav2_to_tsv.main(args + ["--media-dir", str(folder), "--out-dir", str(tmp_path / "out"),
                              "--answers", str(tmp_path / "answers.txt")])
    assert [r[0] for r in read_rows(tmp_path / "out" / "vqa_val2014.tsv")] == ["91"]
    assert "1 skipped: no answer in --answers" in capsys.readouterr().out


def test_vqa_test_questions_get_the_placeholder_and_test_dev_images(tmp_path):
    folder = media(tmp_path, "test2015/COCO_test2015_000000000009.jpg")
    args = write_vqa(tmp_path, "test-dev2015", VQA_QUESTIONS[:1])
    vqav2_to_tsv.main(args + ["--media-dir", str(folder), "--out-dir", str(tmp_path / "out")])
    assert read_rows(tmp_path / "out" / "vqa_test-dev2015.tsv") == [
        ["90", "9", "How many dogs?", "0|!+unanswered", "", "test2015/COCO_test2015_000000000009.jpg"]]


def test_a_vqa_question_without_annotation_is_located(tmp_path):
    args = write_vqa(tmp_path, "val2014", VQA_QUESTIONS, VQA_ANNOTATIONS[:1])
    with pytest.raises(SystemExit, match=r"val2014_q.json: question 2 \(question_id 91\): has no annotation"):
        vqav2_to_tsv.main(args + ["--media-dir", str(tmp_path), "--out-dir", str(tmp_path / "out"), "--allow-missing"])


# ---- SNLI-VE ------------------------------------------------------------------------------------------


def snli_line(pair_id, label, hypothesis="A dog runs.", image="100.jpg"):
    return json.dumps({"Flikr30kID": image, "gold_label": label, "sentence1": "Two dogs run in a field.",
                       "sentence2": hypothesis, "pairID": pair_id, "captionID": "100.jpg#0",
                       "annotator_labels": [label]})


def test_snli_ve_rows_and_skipped_pairs(tmp_path, capsys):
    path = tmp_path / "snli_ve_dev.jsonl"
    path.write_text("\n".join([snli_line("100.jpg#0r1e", "entailment"), snli_line("100.jpg#0r1n", "-"),
                               snli_line("100.jpg#0r1c", "contradiction", "A cat\tsleeps.")]) + "\n")
    snli_ve_to_tsv.main(["--jsonl", str(path), "--media-dir", str(media(tmp_path, "100.jpg")),
                         "--out-dir", str(tmp_path / "out")])
    assert read_rows(tmp_path / "out" / "snli_ve_dev.tsv") == [
        ["100.jpg#0r1e", "100", "100.jpg", "A dog runs.", "Two dogs run in a field.", "entailment"],
        ["100.jpg#0r1c", "100", "100.jpg", "A cat sleeps.", "Two dogs run in a field.", "contradiction"]]
    assert "1 skipped: gold label '-'" in capsys.readouterr().out


def test_bad_snli_ve_json_is_located(tmp_path):
    path = tmp_path / "snli_ve_test.jsonl"
    path.write_text(snli_line("1", "neutral") + "\n{\"gold_label\": \n")
    with pytest.raises(SystemExit, match=r"snli_ve_test.jsonl:2: column 16 \(character\): invalid JSON"):
        snli_ve_to_tsv.main(["--jsonl", str(path), "--media-dir", str(tmp_path), "--out-dir", str(tmp_path / "o"),
                             "--allow-missing"])
    assert not list((tmp_path / "o").iterdir())  # the first line's row is not left behind


@pytest.mark.parametrize("module", [refcoco_to_tsv, vqav2_to_tsv, snli_ve_to_tsv, msrvtt_to_tsv, audiocaps_to_tsv,
                                    oven_to_tsv, karpathy_to_tsv])
def test_converters_explain_themselves(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--media-dir" in out and "--allow-missing" in out and "python preprocess/" in out


@needs_coco
def test_snli_ve_rows_can_be_read_by_the_task(tmp_path, vocab_dir):
    photo = sorted(os.listdir(COCO_PHOTOS))[0]
    path = tmp_path / "snli_ve_train.jsonl"
    path.write_text(snli_line("p1", "neutral", image=photo) + "\n" + snli_line("p2", "entailment", image=photo))
    snli_ve_to_tsv.main(["--jsonl", str(path), "--media-dir", COCO_PHOTOS, "--out-dir", str(tmp_path / "out")])
    task = build_task("snli_ve", str(tmp_path / "out" / "snli_ve_train.tsv"), vocab_dir, media_dir=COCO_PHOTOS)
    task.load_dataset("valid")
    samples = [task.dataset("valid")[i] for i in range(2)]
    assert [task.vocab.decode_text(s["target"].tolist()[:-1]) for s in samples] == ["maybe", "yes"]


# ---- MSR-VTT, MSRVTT-QA, AudioCaps ----------------------------------------------------------------------


def write_msrvtt(tmp_path):
    data = {"videos": [{"video_id": "video0", "split": "train", "id": 0},
                       {"video_id": "video7010", "split": "test", "id": 7010},
                       {"video_id": "video9", "split": "validate", "id": 9}],
            "sentences": [{"video_id": "video0", "sen_id": 1, "caption": "a man  sings"},
                          {"video_id": "video7010", "sen_id": 2, "caption": "a cat"},
                          {"video_id": "video0", "sen_id": 3, "caption": "someone sings"},
                          {"video_id": "video7010", "sen_id": 4, "caption": "a kitten plays"}]}
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps(data))
    (tmp_path / "test_qa.json").write_text(json.dumps([
        {"answer": "cat", "id": 5, "question": "what is playing?", "video_id": 7010}]))
    return ["--annotations", str(tmp_path / "MSRVTT_data.json"), "--qa", str(tmp_path / "test_qa.json"),
            "--out-dir", str(tmp_path / "out")]


def test_msrvtt_captions_by_split_and_questions(tmp_path, capsys):
    folder = media(tmp_path, "video0.mp4", "video7010.mp4", "video9.mp4")
    msrvtt_to_tsv.main(write_msrvtt(tmp_path) + ["--media-dir", str(folder)])
    out = tmp_path / "out"
    assert read_rows(out / "msrvtt_caption_train.tsv") == [["1", "video0", "a man sings", "", "video0.mp4"],
                                                           ["3", "video0", "someone sings", "", "video0.mp4"]]
    assert read_rows(out / "msrvtt_caption_test.tsv") == [
        ["video7010", "video7010", "a cat&&a kitten plays", "", "video7010.mp4"]]
    assert read_rows(out / "msrvtt_qa_test.tsv") == [
        ["5", "video7010", "what is playing?", "1|!+cat", "", "video7010.mp4"]]
    assert "1 skipped: video without captions" in capsys.readouterr().out


def test_msrvtt_split_lists_override_the_split_field(tmp_path):
    (tmp_path / "test_list.txt").write_text("video0\n")
    folder = media(tmp_path, "video0.mp4")
    msrvtt_to_tsv.main(write_msrvtt(tmp_path)[:2] + ["--out-dir", str(tmp_path / "out"), "--media-dir", str(folder),
                                                   "--split", f"test={tmp_path / 'test_list.txt'}"])
    assert os.listdir(tmp_path / "out") == ["msrvtt_caption_test.tsv"]
    assert read_rows(tmp_path / "out" / "msrvtt_caption_test.tsv")[0][2] == "a man sings&&someone sings"


def test_msrvtt_qa_accuracy_is_exact_match_and_vqa_normalises():
    assert vqa_soft_accuracy(["one", "the cat"], [{"1": 1.0}, {"cat": 1.0}], normalise=False)["vqa_score"] == 0.0
    assert vqa_soft_accuracy(["one", "the cat"], [{"1": 1.0}, {"cat": 1.0}])["vqa_score"] == 1.0


def test_audiocaps_rows_per_caption_for_train_and_per_clip_otherwise(tmp_path):
    header = "audiocap_id,youtube_id,start_time,caption\n"
    (tmp_path / "train.csv").write_text(header + '1,abc,30,"A dog barks, loudly"\n2,xyz,0,Rain falls\n')
    (tmp_path / "test.csv").write_text(header + "3,abc,30,Barking\n4,abc,30,A dog\n")
    folder = media(tmp_path, "abc_30.wav", "xyz_0.wav")
    audiocaps_to_tsv.main(["--csv", str(tmp_path / "train.csv"), str(tmp_path / "test.csv"), "--media-dir",
                           str(folder), "--out-dir", str(tmp_path / "out"), "--audio-name", "{youtube_id}_{start_time}.wav"])
    assert read_rows(tmp_path / "out" / "audiocaps_train.tsv") == [["1", "abc", "A dog barks, loudly", "", "abc_30.wav"],
                                                                   ["2", "xyz", "Rain falls", "", "xyz_0.wav"]]
    assert read_rows(tmp_path / "out" / "audiocaps_test.tsv") == [["abc", "abc", "Barking&&A dog", "", "abc_30.wav"]]


def test_a_bad_audiocaps_row_is_located(tmp_path):
    (tmp_path / "val.csv").write_text("audiocap_id,youtube_id,start_time,caption\n1,abc,30,ok\n2,,0,x\n")
    with pytest.raises(SystemExit, match=r"val.csv: line 3: a field of .* is empty"):
        audiocaps_to_tsv.main(["--csv", str(tmp_path / "val.csv"), "--media-dir", str(tmp_path), "--allow-missing",
                               "--out-dir", str(tmp_path / "out")])


# ---- COCO Karpathy split ---------------------------------------------------------------------------------


def karpathy_image(cocoid, split, raws, folder="val2014", first_sentid=0):
    """An image record of dataset_coco.json: sentences with ``raw`` as written and Karpathy's ``tokens``."""
    sentences = [{"tokens": raw.lower().strip(" .").split(), "raw": raw, "imgid": cocoid % 100,
                  "sentid": first_sentid + k} for k, raw in enumerate(raws)]
    return {"filepath": folder, "sentids": [s["sentid"] for s in sentences],
            "filename": f"COCO_{folder}_{cocoid:012d}.jpg", "imgid": cocoid % 100, "split": split,
            "sentences": sentences, "cocoid": cocoid}


def write_karpathy(tmp_path, images):
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return ["--karpathy", str(tmp_path / "dataset_coco.json"), "--out-dir", str(tmp_path / "out")]


KARPATHY = [karpathy_image(9, "train", ["A man  rides a horse. ", "Someone on a horse"], "train2014", 10),
            karpathy_image(25, "restval", ["A giraffe eating."], first_sentid=20),
            karpathy_image(42, "val", ["Two dogs.", "A pair of dogs"], first_sentid=30),
            karpathy_image(73, "test", ["A turkey's head.", "Roast turkey && stuffing", "Dinner"], first_sentid=40)]


@pytest.mark.parametrize("restval_in_train", [False, True])
def test_karpathy_rows_by_split_per_sentence_for_train(tmp_path, capsys, restval_in_train):
    folder = media(tmp_path, *(f"{image['filepath']}/{image['filename']}" for image in KARPATHY))
    karpathy_to_tsv.main(write_karpathy(tmp_path, KARPATHY) + ["--media-dir", str(folder)]
                         + ["--restval-in-train"] * restval_in_train)
    out = tmp_path / "out"
    train = [["10", "9", "A man rides a horse.", "", "train2014/COCO_train2014_000000000009.jpg"],
             ["11", "9", "Someone on a horse", "", "train2014/COCO_train2014_000000000009.jpg"]]
    restval = [["20", "25", "A giraffe eating.", "", "val2014/COCO_val2014_000000000025.jpg"]]
    assert read_rows(out / "coco_caption_train.tsv") == train + restval * restval_in_train
    assert os.path.exists(out / "coco_caption_restval.tsv") is not restval_in_train
    assert read_rows(out / "coco_caption_val.tsv") == [
        ["42", "42", "Two dogs.&&A pair of dogs", "", "val2014/COCO_val2014_000000000042.jpg"]]
    assert read_rows(out / "coco_caption_test.tsv") == [
        ["73", "73", "A turkey's head.&&Roast turkey & stuffing&&Dinner", "", "val2014/COCO_val2014_000000000073.jpg"]]
    assert f"coco_caption_train.tsv ({3 if restval_in_train else 2} rows)" in capsys.readouterr().out


def test_karpathy_flickr_records_without_cocoid_or_filepath(tmp_path):
    image = {"sentids": [0], "imgid": 5, "split": "test", "filename": "1000092795.jpg",
             "sentences": [{"tokens": ["two", "men"], "raw": "Two men.", "imgid": 5, "sentid": 0}]}
    karpathy_to_tsv.main(write_karpathy(tmp_path, [image]) + ["--media-dir", str(media(tmp_path, "1000092795.jpg")),
                                                              "--prefix", "flickr30k"])
    assert read_rows(tmp_path / "out" / "flickr30k_caption_test.tsv") == [["5", "5", "Two men.", "", "1000092795.jpg"]]


def test_bad_karpathy_records_are_located_and_nothing_is_written(tmp_path):
    no_raw = karpathy_image(42, "val", ["Two dogs.", "x"])
    del no_raw["sentences"][1]["raw"]
    for images, message in [([KARPATHY[0], no_raw], r"image 2 \(id 42\), sentence 2: no 'raw' field"),
                            ([KARPATHY[0], karpathy_image(42, "val", [" "])], r"image 2 \(id 42\), sentence 1: empty"),
                            ([KARPATHY[0]], r"image 1 \(id 9\): media file not found: .*COCO_train2014_000000000009")]:
        with pytest.raises(SystemExit, match=r"dataset_coco.json: " + message):
            karpathy_to_tsv.main(write_karpathy(tmp_path, images) + ["--media-dir", str(tmp_path / "none")]
                                 + ["--allow-missing"] * ("media" not in message))
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@needs_coco
def test_karpathy_references_reach_the_caption_task_as_written(tmp_path, vocab_dir):
    image = karpathy_image(73, "test", ["A turkey's head.", "Dinner"])
    image["filepath"], image["filename"] = "", sorted(os.listdir(COCO_PHOTOS))[0]
    karpathy_to_tsv.main(write_karpathy(tmp_path, [image]) + ["--media-dir", COCO_PHOTOS])
    task = build_task("caption", str(tmp_path / "out" / "coco_caption_test.tsv"), vocab_dir, media_dir=COCO_PHOTOS)
    task.load_dataset("valid")
    assert task.dataset("valid")[0]["meta"] == {"uniq_id": "73", "references": ["A turkey's head.", "Dinner"]}


# ---- OVEN ----------------------------------------------------------------------------------------------


def oven_line(data_id, image_id, entity_id, entity_text, split, question="what is this building?"):
    return json.dumps({"data_id": data_id, "image_id": image_id, "question": question, "entity_id": entity_id,
                       "entity_text": entity_text, "data_split": split})


@needs_coco
def test_oven_rows_say_seen_and_the_task_reads_them(tmp_path, vocab_dir):
    photo = sorted(os.listdir(COCO_PHOTOS))[0].removesuffix(".jpg")
    path = tmp_path / "oven_entity_val.jsonl"
    path.write_text("\n".join([oven_line("oven_entity_val_0", photo, "Q243", "Eiffel Tower", "val_seen"),
                               oven_line("oven_entity_val_1", photo, "Q90", "Paris", "val_unseen", "")]))
    oven_to_tsv.main(["--jsonl", str(path), "--media-dir", COCO_PHOTOS, "--out-dir", str(tmp_path / "out")])
    rows = read_rows(tmp_path / "out" / "oven_entity_val.tsv")
    assert [r[:5] for r in rows] == [["oven_entity_val_0", f"{photo}.jpg", "", "", "what is this building?"],
                                     ["oven_entity_val_1", f"{photo}.jpg", "", "", ""]]
    assert [json.loads(r[5]) for r in rows] == [{"entity_id": "Q243", "seen": True},
                                                {"entity_id": "Q90", "seen": False}]
    catalogue = tmp_path / "out" / "catalogue.tsv"
    assert read_rows(catalogue) == [["Q243", "Eiffel Tower"], ["Q90", "Paris"]]
    task = build_task("entity_recognition", str(tmp_path / "out" / "oven_entity_val.tsv"), vocab_dir,
                      media_dir=COCO_PHOTOS, catalogue=str(catalogue))
    task.load_dataset("valid")
    assert [task.dataset("valid")[i]["meta"]["seen"] for i in range(2)] == [True, False]


def test_oven_catalogue_from_wikipedia(tmp_path):
    (tmp_path / "oven_entity_train.jsonl").write_text(oven_line("t0", "oven_1", "Q243", "Eiffel Tower", "train"))
    (tmp_path / "wiki.jsonl").write_text(json.dumps({"wikidata_id": "Q243", "wikipedia_title": "Eiffel Tower"}) + "\n"
                                         + json.dumps({"wikidata_id": "Q1", "wikipedia_title": "Universe"}) + "\n")
    oven_to_tsv.main(["--jsonl", str(tmp_path / "oven_entity_train.jsonl"), "--wiki", str(tmp_path / "wiki.jsonl"),
                      "--media-dir", str(media(tmp_path, "oven_1.jpg")), "--out-dir", str(tmp_path / "out")])
    assert json.loads(read_rows(tmp_path / "out" / "oven_entity_train.tsv")[0][5]) == {"entity_id": "Q243"}
    assert read_rows(tmp_path / "out" / "catalogue.tsv") == [["Q243", "Eiffel Tower"], ["Q1", "Universe"]]


def test_a_missing_input_file_is_named_without_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match=r"error: .*No such file or directory: '.*absent_qa.json'"):
        msrvtt_to_tsv.main(["--qa", str(tmp_path / "absent_qa.json"), "--media-dir", str(tmp_path),
                            "--out-dir", str(tmp_path / "out")])


def test_a_split_name_that_cannot_name_a_file_is_refused(tmp_path):
    refs = [{"ref_id": 3, "ann_id": 101, "image_id": 11, "split": "../val", "sentences": [sentence(1, "x")]}]
    with pytest.raises(SystemExit, match=r"ref 1 \(ref_id 3\): split name '../val' cannot name a file"):
        refcoco_to_tsv.main(write_refcoco(tmp_path, refs) + ["--media-dir", str(tmp_path), "--allow-missing"])
