"""Several images per row: the image cell's JSON list, <image_k> markers, the interleaved encoder, grounding
on a chosen image, and the nlvr, multi_image_qa and multi_image_refcoco tasks."""
import base64
import json
import os
import subprocess
import sys
from argparse import Namespace

import pytest
import torch

from data.errors import BadInputError
from helpers import ROOT, build_model, build_task, few_rows, read_lines, set_cell, tiny_model_args, write_tsv
from decoding.constraints import FixedLengthRange, ImageIndexed


def task_on(name, demo_dir, vocab_dir, tmp_path, lines=None, **options):
    """Task ``name`` on its first three demo rows (or on ``lines``), their dataset loaded as "valid"."""
    file = f"{name}_valid.tsv"
    data = few_rows(demo_dir, tmp_path, file) if lines is None else write_tsv(tmp_path / file, lines)
    task = build_task(name, data, vocab_dir, **options)
    task.load_dataset("valid")
    return task


def images_of(line):
    return json.loads(line.split("\t")[4])


# ---- the cell ------------------------------------------------------------------------------------------


def test_a_list_cell_gives_a_stack_of_images_and_paths_read_as_base64(demo_dir, vocab_dir, tmp_path):
    line = read_lines(demo_dir / "nlvr_valid.tsv", 1)[0]
    media = tmp_path / "media"
    media.mkdir()
    for k, image in enumerate(images_of(line)):
        (media / f"{k}.jpg").write_bytes(base64.b64decode(image))
    by_path = set_cell(line, 5, json.dumps(["0.jpg", "1.jpg"]))
    task = task_on("nlvr", demo_dir, vocab_dir, tmp_path, [line, by_path], media_dir=str(media))
    from_base64, from_paths = task.dataset("valid")[0], task.dataset("valid")[1]
    assert from_base64["image"].shape == (2, 3, 64, 64) and from_base64["image"].dtype == torch.uint8
    assert torch.equal(from_base64["image"], from_paths["image"])
    assert not torch.equal(from_base64["image"][0], from_base64["image"][1])
    batch = task.dataset("valid").collater([from_base64, from_paths])
    assert batch["net_input"]["image"].shape == (4, 3, 64, 64)
    assert batch["net_input"]["image_counts"].tolist() == [2, 2]


def test_markers_become_image_tokens_in_the_source(demo_dir, vocab_dir, tmp_path):
    line = set_cell(read_lines(demo_dir / "nlvr_valid.tsv", 1)[0], 3, "<image_2> has more than <image_1>")
    task = task_on("nlvr", demo_dir, vocab_dir, tmp_path, [line])
    source = task.dataset("valid")[0]["source"].tolist()
    vocab = task.vocab
    assert [vocab.to_image_index(t) for t in source if vocab.to_image_index(t) is not None] == [1, 0]
    assert source.index(vocab.image_id(1)) < source.index(vocab.image_id(0))
    assert len(source) == task.measured_lengths(task.dataset("valid").tsv)[0, 0]


@pytest.mark.parametrize("column, value, options, reason", [
    (5, "[not json", {}, "image list is not valid JSON"),
    (5, "[]", {}, "an image list must hold at least one image"),
    (5, '["", 3]', {}, "holds non-empty strings (base64 or paths), not int, str"),
    (5, None, {"max_images": 1}, "2 images, more than the limit of 1 per row (--max-images)"),
    (5, None, {"max_row_pixels": 6000}, "image 2 of 2: with it the images declare more than --max-row-pixels 6000"),
    (5, "second-bad", {}, "image 2 of 2: cannot decode image"),
    (3, "<image_3> is red", {}, "<image_3> names an image the row lacks: it holds 2"),
    (3, "<image_1> and <image_1>", {}, "<image_1> appears twice"),
])
def test_bad_cells_name_file_line_and_column(demo_dir, vocab_dir, tmp_path, column, value, options, reason):
    good = read_lines(demo_dir / "nlvr_valid.tsv", 2)
    bad = good[1]
    if value == "second-bad":
        value = json.dumps([images_of(bad)[0], base64.b64encode(b"not an image").decode()])
    if value is not None:
        bad = set_cell(bad, column, value)
    task = task_on("nlvr", demo_dir, vocab_dir, tmp_path, [good[0], bad], **options)
    with pytest.raises(BadInputError) as error:
        task.dataset("valid")[1]
    assert (error.value.path, error.value.line, error.value.column) == (str(tmp_path / "nlvr_valid.tsv"), 2, column)
    assert reason in error.value.reason


# ---- the encoder ---------------------------------------------------------------------------------------


def encoded(model, net_input):
    with torch.no_grad():
        return model.encoder(**{k: v for k, v in net_input.items() if k != "prev_output_tokens"})


def test_one_image_per_row_encodes_as_before(demo_dir, vocab_dir, tmp_path):
    """Rows of one image, its cell plain or a list of one, give exactly the sequence the encoder built before
    rows could hold several: [image tokens ; text tokens] through the layers; and a checkpoint without the
    image-index table loads and gives the same logits."""
    lines = read_lines(demo_dir / "refcoco_valid.tsv", 3)
    listed = [set_cell(line, 5, json.dumps([line.split("\t")[4]])) for line in lines]
    task = task_on("refcoco", demo_dir, vocab_dir, tmp_path, lines + listed)
    dataset = task.dataset("valid")
    plain, as_lists = (dataset.collater([dataset[i] for i in rows]) for rows in ((0, 1, 2), (3, 4, 5)))
    assert "image_counts" not in plain["net_input"] and as_lists["net_input"]["image_counts"].tolist() == [1, 1, 1]
    torch.manual_seed(0)
    model = build_model(task).eval()
    encoder, src = model.encoder, plain["net_input"]["src_tokens"]
    with torch.no_grad():
        image, _, _ = encoder.media_encoders["image"](plain["net_input"]["image"])
        x = torch.cat([image + encoder.embed_types.weight[1], encoder.embed_text(src)[0]], dim=1)
        keep = torch.cat([torch.ones(image.shape[:2], dtype=torch.bool), src.ne(task.vocab.dictionary.pad())], dim=1)
        x = encoder.embed_norm(x)
        for layer in encoder.layers:
            x = layer(x, keep[:, None, None, :])
        expected = encoder.final_norm(x)
    for batch in (plain, as_lists):
        out = encoded(model, batch["net_input"])
        assert torch.equal(out["encoder_out"], expected) and torch.equal(out["attend_mask"][:, 0, 0], keep)
    state = {k: v for k, v in model.state_dict().items() if k != "encoder.image_index.weight"}
    old = build_model(task).eval()
    old.load_state_dict(state, model_cfg=None)
    with torch.no_grad():
        assert torch.equal(old(**plain["net_input"])[0], model(**plain["net_input"])[0])


def test_marked_images_follow_their_markers_and_the_others_come_first(demo_dir, vocab_dir, tmp_path):
    task = task_on("nlvr", demo_dir, vocab_dir, tmp_path)
    torch.manual_seed(0)
    model = build_model(task).eval()
    encoder, vocab = model.encoder, task.vocab
    words = vocab.encode_text("red circle")
    # row 0: image 2 placed after its marker, image 1 first; row 1: one unplaced image; row 2: none
    src = torch.tensor([[*words[:1], vocab.image_id(1), *words[1:], vocab.dictionary.eos()],
                        [*words, vocab.dictionary.eos(), vocab.dictionary.pad()],
                        [*words, vocab.dictionary.eos(), vocab.dictionary.pad()]])
    images = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)
    media = {"image": images, "image_present": torch.tensor([True, True, False]),
             "image_counts": torch.tensor([2, 1, 0])}
    with torch.no_grad():
        tokens, _, _ = encoder.media_encoders["image"](images)
        tokens = tokens + encoder.embed_types.weight[1] + encoder.image_index(torch.tensor([0, 1, 0]))[:, None]
        text, text_positions = encoder.embed_text(src)
        keep = src.ne(vocab.dictionary.pad())
        front, front_keep, _, spliced, spliced_keep, _ = encoder.embed_images(media, src, text, keep, text_positions)
    count = tokens.size(1)
    assert front.shape == (3, count, tokens.size(2))
    torch.testing.assert_close(front[0], tokens[0], rtol=0, atol=0)
    torch.testing.assert_close(front[1], tokens[2], rtol=0, atol=0)
    assert front_keep.tolist() == [[True] * count, [True] * count, [False] * count]
    torch.testing.assert_close(spliced[0], torch.cat([text[0, :2], tokens[1], text[0, 2:]]), rtol=0, atol=0)
    assert spliced_keep[0].all() and spliced.size(1) == src.size(1) + count
    torch.testing.assert_close(spliced[1, :src.size(1)], text[1], rtol=0, atol=0)
    assert spliced_keep[1].tolist() == [True] * (len(words) + 1) + [False] * (count + 1)
    assert not encoder.image_index.weight[0].any() and encoder.image_index.weight[1].abs().sum() > 0


def test_an_image_s_place_in_its_row_marks_its_tokens_as_its_grid_positions_do(demo_dir, vocab_dir, tmp_path):
    """The same image first and second in a row: its tokens differ by the image-index embedding, which at
    initialisation is as large as the tokens' 2-D positions (a code much smaller is lost beside them)."""
    task = task_on("nlvr", demo_dir, vocab_dir, tmp_path)
    torch.manual_seed(0)
    encoder = build_model(task).eval().encoder
    image = torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8)
    src = torch.tensor([task.vocab.encode_text("red circle") + [task.vocab.dictionary.eos()]])
    media = {"image": image.repeat(2, 1, 1, 1), "image_present": torch.tensor([True]),
             "image_counts": torch.tensor([2])}
    with torch.no_grad():
        _, _, grid = encoder.media_encoders["image"](image)
        text, text_positions = encoder.embed_text(src)
        front = encoder.embed_images(media, src, text, src.ne(task.vocab.dictionary.pad()), text_positions)[0]
    first, second = front[0].chunk(2)
    assert (second - first).norm(dim=-1).mean() > 0.5 * grid[0].norm(dim=-1).mean()


def test_positions_in_every_layer_follow_the_images_where_they_stand(demo_dir, vocab_dir, tmp_path):
    """With --layer-positions, the front block's positions are each image's grid (shared by the batch) and
    a placed image's grid positions stand after its marker in the text's positions."""
    task = task_on("nlvr", demo_dir, vocab_dir, tmp_path)
    torch.manual_seed(0)
    encoder = build_model(task, layer_positions=True).eval().encoder
    vocab = task.vocab
    words = vocab.encode_text("red circle")
    src = torch.tensor([[*words[:1], vocab.image_id(1), *words[1:], vocab.dictionary.eos()],
                        [*words, vocab.dictionary.eos(), vocab.dictionary.pad()]])
    images = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)
    media = {"image": images, "image_present": torch.tensor([True, True]), "image_counts": torch.tensor([2, 1])}
    with torch.no_grad():
        _, _, grid = encoder.media_encoders["image"](images)
        text, text_positions = encoder.embed_text(src)
        _, _, front, _, spliced_keep, spliced = encoder.embed_images(media, src, text, src.ne(vocab.dictionary.pad()),
                                                                       text_positions)
    count = grid.size(1)
    torch.testing.assert_close(front, grid, rtol=0, atol=0)  # one unplaced image a row at most
    torch.testing.assert_close(spliced[0], torch.cat([text_positions[0, :2], grid[0], text_positions[0, 2:]]),
                               rtol=0, atol=0)
    torch.testing.assert_close(spliced[1, :src.size(1)], text_positions[0], rtol=0, atol=0)
    assert spliced.shape == (2, src.size(1) + count, grid.size(2)) and spliced_keep[0].all()
    out = encoder(src, **media)
    assert out["positions"].shape[:2] == (2, front.size(1) + spliced.size(1))


def test_every_image_of_a_batch_goes_through_the_backbone_in_one_call(demo_dir, vocab_dir, tmp_path):
    task = task_on("nlvr", demo_dir, vocab_dir, tmp_path)
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[i] for i in range(3)])
    model = build_model(task).eval()
    calls = []
    model.encoder.media_encoders["image"].backbone.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    encoded(model, batch["net_input"])
    assert calls == [6]


# ---- grounding on a chosen image -----------------------------------------------------------------------


def test_the_image_index_is_limited_to_the_row_s_images():
    image_ids = [20, 21, 22, 23]
    inner = FixedLengthRange(0, 10, 4, 2, 30, not_below={2: 0, 3: 1})
    bound = ImageIndexed(inner, image_ids).for_batch([{"image_count": n} for n in (1, 3, 2)])
    first = bound.allowed(torch.zeros(3, 0, dtype=torch.long), torch.tensor([0, 1, 2]))
    assert [torch.nonzero(row).squeeze(1).tolist() for row in first] == [[20], [20, 21, 22], [20, 21]]
    prefix = torch.tensor([[20, 3, 4]])
    assert torch.equal(bound.allowed(prefix, torch.tensor([1])), inner.allowed(prefix[:, 1:], torch.tensor([1])))
    masks = bound.training_masks(torch.tensor([[21, 3, 4, 5, 6, 2]]))
    assert masks[0, 0].nonzero().squeeze(1).tolist() == [20]  # the first sample's one image
    with pytest.raises(RuntimeError, match="before for_batch"):
        ImageIndexed(inner, image_ids).allowed(torch.zeros(1, 0, dtype=torch.long), torch.tensor([0]))


def test_grounding_targets_name_the_image_and_generation_stays_within_the_row(demo_dir, vocab_dir, tmp_path):
    task = task_on("multi_image_refcoco", demo_dir, vocab_dir, tmp_path)
    dataset = task.dataset("valid")
    lines = read_lines(tmp_path / "multi_image_refcoco_valid.tsv")
    samples = [dataset[i] for i in range(len(lines))]
    for line, sample in zip(lines, samples):
        assert sample["target"][0] == task.vocab.image_id(int(line.split("\t")[5]) - 1) and len(sample["target"]) == 6
    torch.manual_seed(0)
    model = build_model(task).eval()
    generator = task.build_generator([model], Namespace(beam=3, max_len_b=8))
    predictions = task.predict(generator, [model], dataset.collater(samples))
    assert all(p["image"] in (1, 2) and p["box"] is not None for p in predictions)


def test_with_a_decoder_prompt_the_image_token_follows_the_prompt(demo_dir, vocab_dir, tmp_path):
    """--decoder-prompt: the decoder reads the prompt (its <image_k> markers included), then the image token,
    learnt and generated within the row's images, then the box."""
    task = task_on("multi_image_refcoco", demo_dir, vocab_dir, tmp_path, decoder_prompt=True)
    dataset = task.dataset("valid")
    samples = [dataset[i] for i in range(len(dataset))]
    batch = dataset.collater(samples)
    image_ids = [task.vocab.image_id(k) for k in range(2)]
    for meta, target, masks in zip(batch["meta"], batch["target"], batch["constraint_masks"]):
        start = meta["decoder_prompt_length"]
        assert start > 0 and target[:start].eq(task.vocab.dictionary.pad()).all()
        assert target[start] == image_ids[meta["image"] - 1] and masks[start].nonzero().squeeze(1).tolist() == image_ids
    torch.manual_seed(0)
    model = build_model(task).eval()
    # max_len_b counts the outputs (an image token, four bins), not the prompt: a limit below the prompt's
    # length once ended every hypothesis inside it, with no box
    args = Namespace(beam=3, max_len_b=5)
    generator = task.build_generator([model], args)
    predictions = task.predict(generator, [model], batch)
    assert all(p["image"] in (1, 2) and p["box"] is not None for p in predictions)
    assert args.max_len_b == 5 and batch["decoder_prompts"].size(1) > 5


def test_a_box_counts_only_on_the_right_image(demo_dir, vocab_dir, tmp_path):
    task = task_on("multi_image_refcoco", demo_dir, vocab_dir, tmp_path)
    box = [1.0, 2.0, 30.0, 40.0]
    right = {"box": box, "reference": box, "image": 2, "reference_image": 2}
    wrong = dict(right, image=1)
    assert task.score([right])["acc@0.5"] == 1.0 and task.score([wrong])["acc@0.5"] == 0.0
    assert task.sequence_rewards([right, wrong]).tolist() == [1.0, 0.0]


# ---- each task trains ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name, metric", [("nlvr", "accuracy"), ("multi_image_qa", "vqa_score"),
                                          ("multi_image_refcoco", "acc@0.5")])
def test_each_task_trains_and_evaluates(demo_dir, vocab_dir, tmp_path, name, metric):
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in tiny_model_args().items()]
    valid = few_rows(demo_dir, tmp_path, f"{name}_valid.tsv", range(6))
    run([sys.executable, os.path.join(ROOT, "train.py"), f"{demo_dir}/{name}_train.tsv,{valid}", "--task", name,
         "--vocab-dir", str(vocab_dir), "--patch-image-size", "64", *flags,
         "--criterion", "constrained_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-3",
         "--batch-size", "4", "--max-update", "3", "--num-workers", "0", "--save-dir", str(tmp_path / "ckpt"),
         "--no-epoch-checkpoints", "--disable-validation", "--log-format", "simple", "--log-interval", "1"])
    results = tmp_path / "results"
    run([sys.executable, os.path.join(ROOT, "evaluate.py"), "--path", str(tmp_path / "ckpt" / "checkpoint_last.pt"),
         "--data", valid, "--results-dir", str(results), "--beam", "2", "--cpu"])
    predictions = (results / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 6
    assert 0.0 <= json.loads((results / "metrics.json").read_text())[metric] <= 1.0


def run(command):
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
