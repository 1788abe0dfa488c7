"""Retrieval-augmented entity recognition: the contrastive loss, the entity index, decoding over each
sample's retrieved candidates, and recall@k."""
import json
import math
import os
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import evaluate
import retrieval.index
from data.catalogue import read_catalogue
from conftest import model_flags
from helpers import ROOT, build_criterion, build_model, build_task, free_port, read_lines, set_cell, write_tsv
from preprocess.demo_world.images import CATALOGUE_FILE
from retrieval.candidates import SampleTries
from retrieval.embedding import entity_text, info_nce, pooled
from retrieval.index import (EntityIndex, IndexMismatchError, build_index, embed_chunks, load_index, parts_folder)
from test_entity_recognition import write_catalogue
from evaluation.metrics import recall_at_k


def demo_task(demo_dir, vocab_dir, **options):
    task = build_task("entity_recognition", f"{demo_dir}/entity_valid.tsv", vocab_dir,
                      catalogue=f"{demo_dir}/{CATALOGUE_FILE}", **options)
    task.load_dataset("valid")
    return task


def demo_batch(task, count=4):
    dataset = task.dataset("valid")
    return dataset.collater([dataset[i] for i in range(count)])


# ---- the contrastive loss ---------------------------------------------------------------------------------


def test_info_nce_by_hand():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    entities = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    # temperature 0.5: query 0's logits (2, 0, 1.2), gold 0; query 1's (0, 2, 1.6), gold 2
    expected = (-2 + math.log(math.exp(2) + 1 + math.exp(1.2))) + (-1.6 + math.log(1 + math.exp(2) + math.exp(1.6)))
    loss = info_nce(queries, entities, torch.tensor([0, 2]), 0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_hard_negatives_are_the_names_that_share_prefixes(tmp_path, vocab_dir, demo_dir):
    task = build_task("entity_recognition", f"{demo_dir}/entity_valid.tsv", vocab_dir,
                      catalogue=write_catalogue(tmp_path / "c.tsv"))
    # sorted names: red dome (3), scarlet dome (0), scarlet dome tower (1), scarlet domes (2)
    assert task.entity_texts.prefix_neighbours([0, 1, 2], 2) == [[3, 1], [0, 2], [0, 1]]
    assert task.entity_texts.prefix_neighbours([1], 1) == [[0]]
    assert task.entity_texts.prefix_neighbours([1], 0) == [[]]
    assert entity_text(task.catalogue, 0) == "scarlet dome; red dome, the dome; a red circle"
    assert entity_text(task.catalogue, 3) == "red dome; a name that is Q1's alias"


def test_retrieval_criterion_adds_the_weighted_contrastive_loss(demo_dir, vocab_dir):
    task = demo_task(demo_dir, vocab_dir)
    batch = demo_batch(task)
    torch.manual_seed(0)
    model = build_model(task).eval()
    plain, size, _ = build_criterion(task)(model, batch)
    loss, retrieval_size, log = build_criterion(task, name="retrieval_cross_entropy", retrieval_weight=2.0,
                                                retrieval_temperature=0.1, hard_negatives=1)(model, batch)
    # by hand: the batch's gold entities first, then each one's single prefix neighbour
    gold = [task.catalogue.position[m["entity_id"]] for m in batch["meta"]]
    entities = list(dict.fromkeys(gold))
    entities = list(dict.fromkeys(entities + [n[0] for n in task.entity_texts.prefix_neighbours(entities, 1)]))
    with torch.no_grad():
        queries = pooled(model.encoder(**{k: v for k, v in batch["net_input"].items() if k != "prev_output_tokens"}))
        keys = task.entity_texts.embed(model, entities)
    logits = queries @ keys.t() / 0.1
    expected = sum(torch.logsumexp(row, 0) - row[entities.index(g)] for row, g in zip(logits, gold))
    assert size == retrieval_size
    assert log["retrieval_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(plain.item() + 2.0 * expected.item(), rel=1e-5)
    # the contrastive part trains the encoder (through the queries and the entity texts)
    grads = []
    for weight in (1.0, 0.0):
        model.zero_grad()
        build_criterion(task, name="retrieval_cross_entropy", retrieval_weight=weight)(model, batch)[0].backward()
        grads.append(model.encoder.layers[0].ffn_norm.weight.grad.clone())
    assert not torch.allclose(*grads)


def test_retrieval_criterion_needs_the_entity_task(demo_dir, vocab_dir):
    task = build_task("snli_ve", f"{demo_dir}/snli_ve_valid.tsv", vocab_dir)
    with pytest.raises(ValueError, match="entity_recognition"):
        build_criterion(task, name="retrieval_cross_entropy")


# ---- the index ------------------------------------------------------------------------------------------------


def unit_rows(count, dim=8, seed=0):
    rows = torch.from_numpy(np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32))
    return torch.nn.functional.normalize(rows, dim=1)


FINGERPRINT = {"catalogue": "c" * 64, "weights": "w" * 64, "texts": {"max_tokens": 64}}


def test_index_round_trip_and_refusal_of_other_weights(tmp_path):
    rows = unit_rows(10)
    path = str(tmp_path / "entities.npz")
    index = build_index(lambda positions: rows[positions], 10, FINGERPRINT, 4, path)
    assert torch.equal(index.embeddings, rows)
    assert os.listdir(tmp_path) == ["entities.npz"]  # the parts folder is gone
    loaded = load_index(path, FINGERPRINT)
    assert torch.equal(loaded.embeddings, rows) and loaded.fingerprint == FINGERPRINT
    with pytest.raises(IndexMismatchError, match=rf"{path}: .*another weights than this run's .*w{{64}}.*x{{64}}"):
        load_index(path, dict(FINGERPRINT, weights="x" * 64))
    with pytest.raises(IndexMismatchError, match="another catalogue and weights"):
        load_index(path, dict(FINGERPRINT, catalogue="d" * 64, weights="x" * 64))


def test_index_build_shards_across_ranks_and_resumes_from_their_chunks(tmp_path):
    rows = unit_rows(11)
    path = str(tmp_path / "entities.npz")
    chunks = [range(0, 4), range(4, 8), range(8, 11)]
    parts = parts_folder(path, FINGERPRINT)
    seen = []

    def embed(positions):
        seen.append(list(positions))
        return rows[positions]
    for rank in (1, 0):  # each rank embeds every second chunk into the shared parts folder
        embed_chunks(embed, chunks, rank, 2, parts)
    assert seen == [[4, 5, 6, 7], [0, 1, 2, 3], [8, 9, 10]]
    os.remove(os.path.join(parts, "chunk-000002.npy"))  # as if the run was killed before the last chunk
    seen.clear()
    index = build_index(embed, 11, FINGERPRINT, 4, path)
    assert seen == [[8, 9, 10]] and torch.equal(index.embeddings, rows)
    assert not os.path.exists(parts)


def build_on_rank(rank, port, folder):
    """One of two gloo ranks: the index built in memory and on disk, and which entities this rank embedded."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    rows, embedded = unit_rows(11), []

    def embed(positions):
        embedded.extend(positions)
        return rows[positions]
    in_memory = build_index(embed, 11, FINGERPRINT, 4)
    on_disk = build_index(embed, 11, FINGERPRINT, 4, os.path.join(folder, "entities.npz"))
    torch.save({"embedded": embedded, "memory": in_memory.embeddings, "disk": on_disk.embeddings},
               os.path.join(folder, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow  # two processes that import the test module (and fairseq)
def test_two_ranks_share_the_build_and_get_the_whole_index(tmp_path):
    mp.spawn(build_on_rank, args=(free_port(), str(tmp_path)), nprocs=2)
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    # chunks 0 and 2 on rank 0, chunk 1 on rank 1; once in memory, once into the parts folder
    assert results[0]["embedded"] == [0, 1, 2, 3, 8, 9, 10] * 2 and results[1]["embedded"] == [4, 5, 6, 7] * 2
    for result in results:
        assert torch.equal(result["memory"], unit_rows(11)) and torch.equal(result["disk"], unit_rows(11))
    assert torch.equal(load_index(str(tmp_path / "entities.npz"), FINGERPRINT).embeddings, unit_rows(11))
    assert sorted(os.listdir(tmp_path)) == ["entities.npz", "rank0.pt", "rank1.pt"]


def test_exact_search_over_blocks_finds_the_top_k(monkeypatch):
    monkeypatch.setattr(retrieval.index, "SEARCH_BLOCK", 7)
    rows, queries = unit_rows(50), unit_rows(5, seed=1)
    scores, positions = EntityIndex(rows, FINGERPRINT).search(queries, 6)
    expected = (queries @ rows.t()).argsort(1, descending=True)[:, :6]
    assert torch.equal(positions, expected)
    assert torch.allclose(scores, (queries @ rows.t()).gather(1, expected))
    assert EntityIndex(rows[:3], FINGERPRINT).search(queries, 6)[1].shape == (5, 3)


def test_task_index_is_saved_and_refused_once_the_weights_change(demo_dir, vocab_dir, tmp_path):
    path = str(tmp_path / "entities.npz")
    task = demo_task(demo_dir, vocab_dir, retrieval="on", retrieval_index=path, retrieval_chunk_size=16)
    torch.manual_seed(0)
    model = build_model(task).eval()
    index = task.retriever.entity_index(model, task.index_path())
    assert len(index) == len(task.catalogue) and os.path.exists(path)
    assert task.retriever.entity_index(model, task.index_path()) is index  # unchanged weights: reused
    assert torch.allclose(index.embeddings[:3], task.retriever.embed_entities(model, [0, 1, 2]), atol=1e-6)
    fresh = demo_task(demo_dir, vocab_dir, retrieval="on", retrieval_index=path)
    assert torch.equal(fresh.retriever.entity_index(model, fresh.index_path()).embeddings, index.embeddings)  # loaded from the file
    with torch.no_grad():
        model.encoder.final_norm.bias.add_(0.1)
    with pytest.raises(IndexMismatchError, match="another weights"):
        task.retriever.entity_index(model, task.index_path())


def test_a_rank_without_rows_to_generate_still_builds_the_index(demo_dir, vocab_dir, tmp_path):
    """The index build is collective across ranks, so each builds it before generating, not at its first
    batch: a rank whose share of the rows is all bad (or empty) would otherwise leave the others waiting."""
    rows = read_lines(demo_dir / "entity_valid.tsv", 2)
    data = write_tsv(tmp_path / "bad.tsv", [set_cell(row, 2, "@@@") for row in rows])
    path = tmp_path / "entities.npz"
    task = build_task("entity_recognition", str(data), vocab_dir, catalogue=f"{demo_dir}/{CATALOGUE_FILE}",
                      retrieval="on", retrieval_index=str(path), skip_bad_rows=2)
    model = build_model(task).eval()
    args = Namespace(**{**dict.fromkeys(evaluate.GENERATION_OPTIONS), "beam": 2}, batch_size=2, num_workers=0, cpu=True)
    predictions, _, _ = evaluate.generate(args, [model], task)
    assert predictions == [] and len(task.bad_rows.seen) == 2
    assert path.exists() and len(task.retriever.index_cache[1]) == len(task.catalogue)


# ---- decoding over each sample's candidates -------------------------------------------------------------------


def test_sample_tries_allow_only_their_samples_names():
    eos, vocab = 2, 10
    tries = SampleTries([[[5, 6, eos], [5, 7, eos]], [[8, eos]]], eos, vocab)
    rows = torch.tensor([0, 1, 0, 1])
    masks = tries.allowed(torch.zeros(4, 0, dtype=torch.long), rows)
    assert masks.shape == (4, vocab)
    assert [m.nonzero().squeeze(1).tolist() for m in masks] == [[5], [8], [5], [8]]
    masks = tries.allowed(torch.tensor([[5], [8], [8], [5]]), rows)
    assert [m.nonzero().squeeze(1).tolist() for m in masks] == [[6, 7], [eos], [eos], [eos]]  # off-trie: EOS


def names_of(task, positions):
    return {tuple(task.choice_tokens[c][:-1]) for p in positions for c in task.entity_choices[p]}


def test_beams_never_leave_their_samples_candidates(demo_dir, vocab_dir):
    task = demo_task(demo_dir, vocab_dir, retrieval="on", retrieval_k=3)
    batch = demo_batch(task)
    torch.manual_seed(0)
    model = build_model(task).eval()
    generator = task.build_generator([model], Namespace(beam=3, max_len_b=8, min_len=1))
    # disjoint candidate sets that leave out each sample's gold entity and share prefixes within
    sets = [[0, 15, 30], [4, 19, 31], [8, 23, 32], [12, 27, 33]]
    bound = dict(batch, meta=[dict(m, candidates=c, retrieval_rank=None) for m, c in zip(batch["meta"], sets)])
    eos = task.vocab.dictionary.eos()
    for hyps, candidates in zip(task.inference_step(generator, [model], bound), sets):
        assert len(hyps) == 3
        for hyp in hyps:
            tokens = hyp["tokens"].tolist()
            assert tokens[-1] == eos and tuple(tokens[:-1]) in names_of(task, candidates), tokens
    for hyps, meta in zip(task.inference_step(generator, [model], bound), bound["meta"]):
        prediction = task.decode_prediction(hyps[0]["tokens"].tolist()[:-1], meta)
        assert task.catalogue.position[prediction["entity_id"]] in meta["candidates"]
        assert prediction["retrieval_rank"] is None


def test_a_shared_name_goes_to_the_retrieved_entity(tmp_path, vocab_dir, demo_dir):
    task = build_task("entity_recognition", f"{demo_dir}/entity_valid.tsv", vocab_dir,
                      catalogue=write_catalogue(tmp_path / "c.tsv"))
    meta = {"uniq_id": "x", "entity_id": "Q1", "seen": None}
    tokens = task.vocab.encode_text("the dome")  # an alias of Q1 and of Q3
    assert task.decode_prediction(tokens, meta)["entity_id"] == "Q1"
    assert task.decode_prediction(tokens, dict(meta, candidates=[1, 2], retrieval_rank=None))["entity_id"] == "Q3"
    red_dome = task.vocab.encode_text("red dome")  # Q4's name, Q1's alias: the name wins among candidates
    assert task.decode_prediction(red_dome, dict(meta, candidates=[0, 3], retrieval_rank=1))["entity_id"] == "Q4"
    assert task.decode_prediction(red_dome, dict(meta, candidates=[0, 1], retrieval_rank=1))["entity_id"] == "Q1"


def test_retrieval_mode_retrieves_ranks_and_scores(demo_dir, vocab_dir):
    task = demo_task(demo_dir, vocab_dir, retrieval="on", retrieval_k=4)
    batch = demo_batch(task, 6)
    torch.manual_seed(0)
    model = build_model(task).eval()
    generator = task.build_generator([model], Namespace(beam=6, max_len_b=8, min_len=1))
    assert generator.beam_size == 4  # capped at --retrieval-k
    queries = pooled(model.encoder(**{k: v for k, v in batch["net_input"].items() if k != "prev_output_tokens"}))
    ranked = (queries @ task.retriever.entity_index(model, task.index_path()).embeddings.t()).argsort(1, descending=True)[:, :4].tolist()
    predictions = task.predict(generator, [model], batch)
    for prediction, top in zip(predictions, ranked):
        gold = task.catalogue.position[prediction["reference"]]
        assert prediction["retrieval_rank"] == (top.index(gold) + 1 if gold in top else None)
        assert task.catalogue.position[prediction["entity_id"]] in top
    scores = task.score(predictions)
    assert scores["recall@4"] == pytest.approx(np.mean([p["retrieval_rank"] is not None for p in predictions]))
    assert set(scores) >= {"accuracy", "recall@1", "recall@4"}


def test_decoder_prompt_binds_the_candidates_too(demo_dir, vocab_dir):
    task = demo_task(demo_dir, vocab_dir, retrieval="on", decoder_prompt=True)
    bound = task.output_constraint().for_batch([{"candidates": [0], "decoder_prompt_length": 2}])
    assert isinstance(bound.inner, SampleTries)
    name = task.choice_tokens[0][:-1]
    masks = bound.allowed(torch.tensor([[7, 7] + name[:1]]), torch.tensor([0]))
    assert masks[0].nonzero().squeeze(1).tolist() == [name[1] if len(name) > 1 else task.vocab.dictionary.eos()]


@pytest.mark.parametrize("options, message", [({"retrieval": "maybe"}, "--retrieval must be one of"),
                                              ({"retrieval": "on", "eval_mode": "candidates"}, "--eval-mode beam"),
                                              ({"retrieval_k": 0}, "--retrieval-k")])
def test_bad_retrieval_options_are_refused(demo_dir, vocab_dir, options, message):
    with pytest.raises(ValueError, match=message):
        demo_task(demo_dir, vocab_dir, **options)


# ---- metrics ---------------------------------------------------------------------------------------------------


def test_recall_at_k_by_hand():
    assert recall_at_k([1, 3, None, 2], [1, 2, 5]) == {"recall@1": 0.25, "recall@2": 0.5, "recall@5": 0.75}
    assert recall_at_k([], [1]) == {"recall@1": 0.0}


def test_demo_entities_describe_their_colour_and_distractors_say_they_are_not_drawn(demo_dir):
    catalogue = read_catalogue(demo_dir / CATALOGUE_FILE)
    for entity in (catalogue[i] for i in range(len(catalogue))):
        assert entity.id.split("-")[1] in entity.description, entity
        assert ("never drawn" in entity.description) == (not entity.id.startswith("landmark-")), entity


@pytest.mark.slow
def test_train_with_the_retrieval_loss_then_evaluate_with_retrieval(demo_dir, vocab_dir, tmp_path):
    """The options through train.py and evaluate.py: the loss is logged, the index is kept beside the
    checkpoint and reused, and recall@k is scored."""
    catalogue = f"{demo_dir}/{CATALOGUE_FILE}"
    train = subprocess.run(
        [sys.executable, "train.py", f"{demo_dir}/entity_train.tsv,{demo_dir}/entity_valid.tsv",
         "--task", "entity_recognition", "--catalogue", catalogue, "--vocab-dir", str(vocab_dir), *model_flags(),
         "--patch-image-size", "64", "--criterion", "retrieval_cross_entropy", "--retrieval-weight", "0.5",
         "--hard-negatives", "2", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "4", "--max-update", "2",
         "--disable-validation", "--num-workers", "0", "--log-format", "simple", "--log-interval", "1",
         "--save-dir", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, (train.stdout + train.stderr)[-3000:]
    assert "retrieval_loss" in train.stdout + train.stderr
    checkpoint = tmp_path / "run" / "checkpoint_last.pt"
    command = [sys.executable, "evaluate.py", "--path", str(checkpoint), "--data", f"{demo_dir}/entity_valid.tsv",
               "--beam", "3", "--batch-size", "8", "--cpu", "--task-option", "retrieval=on",
               "--task-option", "retrieval_k=3"]
    for attempt in range(2):
        result = subprocess.run(command + ["--results-dir", str(tmp_path / f"results{attempt}")], cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert ("entity index (rank 0 of 1)" in result.stderr) == (attempt == 0)  # built once, then loaded
        metrics = json.loads((tmp_path / f"results{attempt}" / "metrics.json").read_text())
        assert {"accuracy", "recall@1", "recall@3", "harmonic_mean"} <= set(metrics), metrics
    assert (tmp_path / "run" / "checkpoint_last.pt.entities.npz").exists()
