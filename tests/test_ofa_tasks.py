"""OFA checkpoints on UniGround tasks. They preprocess and generate as OFA does: image resize, prompts, text
cleaning, box bins, beam settings, decoder prompts, VQA answers from OFA's ans2label.pkl; expected values
follow OFA's own code (data/mm_data/*_dataset.py, data/ofa_dataset.py, utils/transforms.py,
run_scripts/*/evaluate_*.sh). And they fine-tune on tasks that need tokens OFA's dictionary lacks."""
import base64
import io
import json
import logging
import os
import pickle
import re
import shutil
import string

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
from conftest import SHARED_DATA
from data.errors import BadInputError
from helpers import build_task, losses_over_steps, read_lines, set_cell, write_tsv
from models.image_encoder import model_pixels
from models.ofa import OFACheckpointError, OFAModel, checkpoint_options
from tasks.ofa_checkpoint import load_ofa_model_and_task, ofa_task_config, setup_ofa_task
from data.answers import read_answer_file
from test_ofa_vocab import write_bpe_files
from utils import checkpoint
from utils.checkpoint import CheckpointMismatchError, load_state
from geometry.codec import IE_TOKENS, IMAGE_TOKENS

ORACLE = os.path.join(SHARED_DATA, "ofa-oracle")
CHECKPOINT = os.path.join(ORACLE, "ofa_tiny_random.pt")
needs_oracle = pytest.mark.skipif(not os.path.isdir(ORACLE), reason=f"the OFA oracle fixture {ORACLE} is absent")


def ofa_pre_caption(text):
    """data/ofa_dataset.py pre_caption, as OFA writes it."""
    text = text.lower().lstrip(",.!?*#:;~").replace("-", " ").replace("/", " ").replace("<person>", "person")
    return re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")


def ofa_pixels(cell, size):
    """OFA's patch_resize_transform: RGB, Resize((size, size), BICUBIC), ToTensor, Normalize(0.5, 0.5)."""
    image = Image.open(io.BytesIO(base64.urlsafe_b64decode(cell))).convert("RGB").resize((size, size), Image.BICUBIC)
    return (torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1) - 0.5) / 0.5


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    """Small BPE files whose GPT-2 ids (1000 on) are among the 500 of the oracle's dict.txt, so no text
    becomes <unk>."""
    folder = tmp_path_factory.mktemp("bpe")
    write_bpe_files(folder)
    encoder = json.loads((folder / "encoder.json").read_text())
    (folder / "encoder.json").write_text(json.dumps({symbol: 1000 + i for symbol, i in encoder.items()}))
    if os.path.isdir(ORACLE):
        shutil.copy(os.path.join(ORACLE, "dict.txt"), folder / "dict.txt")
    return folder


@pytest.fixture(scope="module")
def oracle(demo_dir, bpe_dir, tmp_path_factory):
    """The oracle checkpoint (OFA's refcoco task: patch_image_size 256, max_image_size 512) on refcoco rows
    whose expressions OFA's cleaning changes: (model, task, rows)."""
    rows = read_lines(demo_dir / "refcoco_valid.tsv", 2)
    rows = [set_cell(rows[0], 3, "  .The Red-Cup/left  <person> "), set_cell(rows[1], 3, "what")]
    data = write_tsv(tmp_path_factory.mktemp("refcoco") / "refcoco.tsv", rows)
    [model], task = load_ofa_model_and_task(CHECKPOINT, str(bpe_dir), {"data": data})
    task.load_dataset("valid")
    return model.eval(), task, rows


@pytest.fixture
def refcoco(oracle):
    return oracle[1:]


@needs_oracle
def test_refcoco_checkpoint_sets_ofas_preprocessing_and_beam_settings(refcoco):
    task, _ = refcoco
    cfg = task.cfg
    assert cfg.ofa_preprocessing and cfg.patch_image_size == 256 and cfg.bin_span == 512 and cfg.num_bins == 1000
    # run_scripts/refcoco/evaluate_refcoco*.sh
    args = generation(task)
    assert (args.beam, args.min_len, args.max_len_a, args.max_len_b, args.no_repeat_ngram_size) == (5, 4, 0, 4, 3)
    given = generation(task, "--beam", "2", "--lenpen", "0.5")
    assert (given.beam, given.lenpen, given.max_len_b) == (2, 0.5, 4)


def test_a_uniground_checkpoint_evaluates_with_evaluates_defaults_not_its_validation_settings(demo_dir, vocab_dir):
    task = build_task("refcoco", demo_dir / "refcoco_valid.tsv", vocab_dir, eval_args='{"beam": 1, "max_len_b": 6}')
    args = generation(task)
    assert (args.beam, args.max_len_b) == (5, 32) and not hasattr(args, "no_repeat_ngram_size")


@needs_oracle
def test_refcoco_sample_is_ofas_pixels_prompt_and_box_bins(refcoco):
    task, rows = refcoco
    vocab = task.vocab
    sample = task.dataset("valid")[0]
    cells = rows[0].split("\t")
    assert torch.allclose(model_pixels(sample["image"]), ofa_pixels(cells[4], 256), atol=1e-6)  # uint8 until the model
    expression = ofa_pre_caption(cells[2])
    assert expression == ".the red cup left person"
    prompt = vocab.encode_text(' which region does the text " {} " describe?'.format(expression))
    assert sample["source"].tolist() == [vocab.dictionary.bos()] + prompt + [vocab.dictionary.eos()]
    # RandomResize([256], max_size=256) makes the image 256 x 256; Normalize divides boxes by max_image_size 512
    width, height = Image.open(io.BytesIO(base64.urlsafe_b64decode(cells[4]))).size
    box = torch.tensor([float(v) for v in cells[3].split(",")])
    scaled = box * torch.tensor([256 / width, 256 / height] * 2) / 512
    bins = [int((v * 999).round()) for v in scaled]
    assert max(bins) < 500 and sample["target"].tolist() == vocab.bin_ids(bins) + [vocab.dictionary.eos()]
    # eval_refcoco: bins / (num_bins - 1) * max_image_size / resize ratio
    predicted = task.decode_prediction(vocab.bin_ids(bins), sample["meta"])["box"]
    ratios = [256 / width, 256 / height] * 2
    assert np.allclose(predicted, [b / 999 * 512 / r for b, r in zip(bins, ratios)], atol=1e-4)


def generation(task, *flags):
    """evaluate.py's beam search settings for ``task`` with command-line ``flags``."""
    return evaluate.generation_args(evaluate.parse_args(["--path", "x", "--data", "y", "--results-dir", "z", *flags]),
                                    task)


def task_from_ofa_options(ofa_options, bpe_dir, data, **extra):
    return setup_ofa_task(ofa_options, "ofa.pt", str(bpe_dir), {"data": str(data), **extra})


@needs_oracle
def test_caption_targets_and_outputs_lose_punctuation_keep_case_and_start_with_a_space(demo_dir, bpe_dir, tmp_path):
    row = set_cell(read_lines(demo_dir / "caption_valid.tsv", 1)[0], 3, "A man's hat, red.&&two  cats")
    task = task_from_ofa_options({"_name": "caption", "patch_image_size": 480, "max_image_size": 512}, bpe_dir,
                                 write_tsv(tmp_path / "caption.tsv", [row]))
    assert task.cfg.patch_image_size == 480 and "bin_span" not in task.cfg
    args = generation(task)
    assert (args.beam, args.max_len_b, args.no_repeat_ngram_size) == (5, 16, 3)  # evaluate_caption*.sh
    task.load_dataset("valid")
    sample = task.dataset("valid")[0]
    caption = "A man's hat, red.".translate(str.maketrans({c: None for c in string.punctuation})).strip()
    assert caption == "A mans hat red"
    assert sample["target"].tolist() == task.vocab.encode_text(" " + caption) + [task.vocab.dictionary.eos()]
    assert sample["meta"]["references"] == ["A man's hat, red.", "two  cats"]  # scored as written
    assert sample["source"][1:-1].tolist() == task.vocab.encode_text(" what does the image describe?")
    assert sample["image"].shape == (3, 480, 480)


@needs_oracle
def test_vqa_and_snli_ve_targets_start_with_a_space_and_take_ofas_settings(demo_dir, bpe_dir, tmp_path):
    answers = tmp_path / "ans2label.pkl"
    answers.write_bytes(pickle.dumps({"no": 1, "yes": 0}))
    vqa = task_from_ofa_options({"_name": "vqa_gen", "patch_image_size": 480}, bpe_dir,
                                write_tsv(tmp_path / "vqa.tsv", read_lines(demo_dir / "vqa_valid.tsv", 1)),
                                answers_file=str(answers))
    assert vqa.cfg.eval_mode == "beam" and vqa.generation_defaults == {
        "beam": 5, "unnormalized": True, "temperature": 1.0}  # run_scripts/vqa/evaluate_vqa_beam*.sh
    assert vqa.choices == ["yes", "no"]
    eos = vqa.vocab.dictionary.eos()
    assert vqa.choice_tokens == [vqa.vocab.encode_text(" yes") + [eos], vqa.vocab.encode_text(" no") + [eos]]
    assert vqa.vocab.encode_text(" yes") != vqa.vocab.encode_text("yes")

    snli = task_from_ofa_options({"_name": "snli_ve", "patch_image_size": 480, "add_caption": True}, bpe_dir,
                                 write_tsv(tmp_path / "snli.tsv", read_lines(demo_dir / "snli_ve_valid.tsv", 1)))
    assert snli.cfg.eval_mode == "candidates" and snli.cfg.add_premise  # OFA's all-candidate snli_ve evaluation
    snli.load_dataset("valid")
    sample = snli.dataset("valid")[0]
    row = read_lines(demo_dir / "snli_ve_valid.tsv", 1)[0].split("\t")
    prompt = ' can image and text1 " {} " imply text2 " {} "?'.format(ofa_pre_caption(row[4]), ofa_pre_caption(row[3]))
    assert sample["source"][1:-1].tolist() == snli.vocab.encode_text(prompt)


def test_ofa_task_options_not_implemented_are_named():
    options = {"_name": "vqa_gen", "prompt_type": "src", "add_object": True, "patch_image_size": 480}
    with pytest.raises(OFACheckpointError, match="vqa.pt: OFA task options not implemented here: "
                                                 "prompt_type='src', add_object=True"):
        ofa_task_config(options, "vqa.pt")
    name, cfg = ofa_task_config({**options, "prompt_type": "prev_output", "add_object": False}, "vqa.pt")
    assert name == "vqa" and cfg.decoder_prompt


def test_ofa_answer_pickle_is_read_as_plain_data(tmp_path):
    path = tmp_path / "trainval_ans2label.pkl"
    path.write_bytes(pickle.dumps({"two": 2, "yes": 0, "no": 1}, protocol=2))
    assert read_answer_file(path) == ["yes", "no", "two"]


class Planted:
    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_an_answer_pickle_naming_a_class_or_function_is_refused_without_running_it(tmp_path):
    planted = Planted()
    planted.target = tmp_path / "written-by-the-pickle"
    path = tmp_path / "ans2label.pkl"
    path.write_bytes(pickle.dumps({"yes": planted}))
    with pytest.raises(BadInputError, match=r"ans2label.pkl:1: column 1: not a readable pickle of plain data: "
                                            r"it names io.open; .* nothing in a pickle is run"):
        read_answer_file(path)
    assert not planted.target.exists()
    pickle.loads(path.read_bytes()).get("yes").close()  # what an ordinary unpickler does with it
    assert planted.target.exists()
    (tmp_path / "truncated.pkl").write_bytes(pickle.dumps({"yes": 0})[:-3])
    with pytest.raises(BadInputError, match="truncated.pkl:1: column 1: not a readable pickle"):
        read_answer_file(tmp_path / "truncated.pkl")


@pytest.fixture
def prompted_vqa(demo_dir, bpe_dir, tmp_path):
    """OFA's VQA fine-tuning options (prompt_type=prev_output) on two demo rows, answers from an ans2label.pkl."""
    rows = [set_cell(row, 3, question) for row, question in zip(read_lines(demo_dir / "vqa_valid.tsv", 2),
                                                                 ["What", "what at?"])]  # short: fewer steps
    answers = tmp_path / "ans2label.pkl"
    answers.write_bytes(pickle.dumps({"no": 0, "one": 1, "two": 2}))
    task = task_from_ofa_options({"_name": "vqa_gen", "patch_image_size": 256, "prompt_type": "prev_output"},
                                 bpe_dir, write_tsv(tmp_path / "vqa.tsv", rows), answers_file=str(answers))
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    return task, dataset.collater([dataset[i] for i in range(len(rows))])


@needs_oracle
def test_decoder_prompt_batches_are_ofas_prev_output_items(prompted_vqa):
    task, batch = prompted_vqa
    pad, eos = task.vocab.dictionary.pad(), task.vocab.dictionary.eos()
    assert task.cfg.decoder_prompt
    for i, meta in enumerate(batch["meta"]):
        source = batch["net_input"]["src_tokens"][i]
        src_item = source[source.ne(pad)]
        answer = max(meta["answers"], key=meta["answers"].get)
        tgt_item = torch.tensor(task.vocab.encode_text(" " + answer))
        # data/mm_data/vqa_gen_dataset.py, prompt_type 'prev_output'
        prev_output_item = torch.cat([src_item[:-1], tgt_item])
        target_item = torch.cat([prev_output_item[1:], torch.tensor([eos])])
        target_item[:-len(tgt_item) - 1] = pad
        length = len(prev_output_item)
        assert batch["net_input"]["prev_output_tokens"][i, :length].tolist() == prev_output_item.tolist()
        assert batch["target"][i, :length].tolist() == target_item.tolist()
        assert meta["decoder_prompt_length"] == len(src_item) - 2
        masks = batch["constraint_masks"][i, :length]
        assert masks[:meta["decoder_prompt_length"]].all()  # the prompt: padding in the target, unmasked
        allowed = masks[meta["decoder_prompt_length"]].nonzero().squeeze(1).tolist()
        assert allowed == sorted({tokens[0] for tokens in task.choice_tokens})
    assert batch["ntokens"] == sum(len(task.vocab.encode_text(" " + max(m["answers"], key=m["answers"].get))) + 1
                                   for m in batch["meta"])


@needs_oracle
def test_decoder_prompt_candidates_and_beam_search_score_the_answer_after_the_question(oracle, prompted_vqa):
    model = oracle[0]
    task, batch = prompted_vqa
    with torch.no_grad():
        scores = task.candidate_scores([model], batch)
        # by hand: the decoder reads <s>, the question, the candidate; the candidate's log-likelihood, each
        # step's softmax over the tokens the trie allows there
        sample, choice = 1, 2
        prompt = batch["decoder_prompts"][sample][:batch["meta"][sample]["decoder_prompt_length"]]
        tokens = torch.tensor(task.choice_tokens[choice])
        prev = torch.cat([torch.tensor([task.vocab.dictionary.bos()]), prompt, tokens[:-1]])[None]
        net_input = {k: v[sample:sample + 1] for k, v in batch["net_input"].items() if k != "prev_output_tokens"}
        logits = model(**net_input, prev_output_tokens=prev)[0][0, len(prompt):]
        masks = task.trie.training_masks(tokens[None])[0]
        expected = logits.masked_fill(~masks, float("-inf")).log_softmax(-1).gather(1, tokens[:, None]).sum()
    assert torch.allclose(scores[sample, choice], expected, atol=1e-5)
    # beam search with every candidate in the beam finds the same best answer, the question forced first
    args = generation(task)
    beam = task.predict(task.build_generator([model], args), [model], batch)
    assert [p["answer"] for p in beam] == [task.choices[c] for c in scores.argmax(1).tolist()]


@needs_oracle
@pytest.mark.parametrize("max_len_b", [1, 3])
def test_free_outputs_after_decoder_prompts_of_different_lengths_keep_max_len_b(oracle, prompted_vqa, max_len_b):
    """fairseq's limit has to count the longest prompt of the batch; a sample with a shorter one still stops
    after max_len_b output tokens (and EOS)."""
    model = oracle[0]
    task, batch = prompted_vqa
    lengths = [meta["decoder_prompt_length"] for meta in batch["meta"]]
    assert len(set(lengths)) == 2
    task.cfg.unconstrained = True
    try:
        generator = task.build_generator([model], generation(task, "--beam", "2", "--max-len-b", str(max_len_b)))
        hypotheses = task.inference_step(generator, [model], batch)
    finally:
        task.cfg.unconstrained = False
    eos = task.vocab.dictionary.eos()
    for hyps, length in zip(hypotheses, lengths):
        for hyp in hyps:
            output = hyp["tokens"][length:].tolist()
            assert len(output) <= max_len_b + 1 and output[-1] == eos and eos not in output[:-1], output
    longest = max(len(hyp["tokens"]) - length for hyps, length in zip(hypotheses, lengths) for hyp in hyps)
    assert longest == max_len_b + 1  # untrained weights run to the limit


@needs_oracle
def test_fine_tuning_from_an_ofa_checkpoint_appends_the_tokens_a_task_needs(demo_dir, bpe_dir, tmp_path):
    """refseg needs <poly>: UniGround's tokens follow OFA's with fresh embeddings, OFA's rows kept, and a few
    updates on refseg rows lower the loss."""
    task = build_task("refseg", write_tsv(tmp_path / "refseg.tsv", read_lines(demo_dir / "refseg_train.tsv", 2)),
                      "", bpe_dir=str(bpe_dir), ofa_preprocessing=True)
    dictionary, rows = task.vocab.dictionary, 9697  # the checkpoint's: dict.txt, <mask>, codes, bins
    assert dictionary[rows - 1] == "<bin_999>" and dictionary[rows] == "<time_0>" and task.vocab.first_time == rows
    assert task.vocab.poly == rows + 100 and [dictionary[task.vocab.ie(t)] for t in IE_TOKENS] == list(IE_TOKENS)
    assert len(dictionary) == rows + 100 + 1 + len(IE_TOKENS) + len(IMAGE_TOKENS)
    state = load_state(CHECKPOINT)
    model = OFAModel.from_args(checkpoint_options(state, CHECKPOINT), len(dictionary), dictionary.pad())
    model.load_state_dict(dict(state["model"]))  # as --finetune-from-model and --restore-file load it
    for key in ("encoder.embed_tokens.weight", "decoder.output_projection.weight"):
        weights = model.state_dict()[key]
        assert weights.shape[0] == len(dictionary) and torch.equal(weights[:rows], state["model"][key])
        assert torch.isfinite(weights[rows:]).all() and weights[rows:].std() > 0  # fresh, not zeros
    task.load_dataset("train")
    dataset = task.dataset("train")
    batch = dataset.collater([dataset[0], dataset[1]])
    assert (batch["target"] == task.vocab.poly).any()
    model.encoder.embed_images.requires_grad_(False)  # the ResNet's backward would take most of the test's time
    losses = losses_over_steps(task, batch, 4, lr=1e-3, model=model)
    assert all(map(np.isfinite, losses)) and losses[-1] < 0.8 * losses[0], losses


@needs_oracle
def test_restoring_an_ofa_checkpoint_checks_its_vocabulary_and_bins_without_the_older_checkpoint_warning(
        oracle, bpe_dir, vocab_dir, caplog):
    """fairseq's --restore-file and --finetune-from-model read the checkpoint through load_checkpoint_to_cpu,
    into the task being trained."""
    _, task, _ = oracle
    data = task.cfg.data

    def restore_into(task):
        token = checkpoint._restoring_into.set(task)
        try:
            return checkpoint.load_checkpoint_to_cpu(CHECKPOINT)
        finally:
            checkpoint._restoring_into.reset(token)

    checkpoint._warn_without_identity.cache_clear()
    with caplog.at_level(logging.WARNING, logger="utils.checkpoint"):
        state = restore_into(task)
    assert not [r for r in caplog.records if "older checkpoint" in r.getMessage()]
    model = OFAModel.from_args(checkpoint_options(state, CHECKPOINT), len(task.vocab.dictionary), 1)
    model.load_state_dict(dict(state["model"]))
    with pytest.raises(CheckpointMismatchError, match="an OFA checkpoint, whose token ids are those of OFA's GPT-2 "
                                                      "BPE vocabulary: give --bpe-dir"):
        restore_into(build_task("refcoco", data, vocab_dir))
    with pytest.raises(CheckpointMismatchError, match="num_bins 1000 in the checkpoint, 500 here"):
        restore_into(build_task("refcoco", data, "", bpe_dir=str(bpe_dir), num_bins=500))


@needs_oracle
def test_bf16_autocast_runs_the_ofa_model_in_bf16_with_fp32_logits(oracle):
    model, task, _ = oracle
    state = load_state(CHECKPOINT)
    args = checkpoint_options(state, CHECKPOINT)
    args.bf16_autocast = True
    autocast = OFAModel.from_args(args, len(task.vocab.dictionary), 1)
    autocast.load_state_dict(dict(state["model"]))
    autocast.eval()
    dataset = task.dataset("valid")
    net_input = dataset.collater([dataset[0], dataset[1]])["net_input"]
    dtypes = []
    for part in (autocast.encoder, autocast.decoder):
        linear = next(m for m in part.layers.modules() if isinstance(m, torch.nn.Linear))
        linear.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    with torch.no_grad():
        logits = autocast(**net_input)[0]
        reference = model(**net_input)[0]
    assert set(dtypes) == {torch.bfloat16} and len(dtypes) == 2 and logits.dtype == torch.float32
    difference = (logits - reference).abs().max().item()
    assert 0 < difference < 0.05 * reference.abs().max().item(), difference
