"""Speed options of the model: fused attention kernels, bf16 autocast, activation checkpointing.

``--compile-layers`` is measured in benchmarks/train_step.py rather than tested here: compiling the
layers takes minutes on a small CPU.
"""
from argparse import Namespace

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from helpers import build_criterion, build_model, build_task


@pytest.fixture(scope="module")
def refcoco(demo_dir, vocab_dir):
    task = build_task("refcoco", f"{demo_dir}/refcoco_valid.tsv", vocab_dir)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    batch = dataset.collater([dataset[i] for i in range(4)])
    # Text of different lengths, so that key padding masks are in play.
    assert batch["net_input"]["src_tokens"].eq(task.vocab.dictionary.pad()).any()
    return task, batch


def loss_and_grads(task, batch, saved=None, **model_options):
    """The per-token loss and the gradients of a fresh model; ``saved`` collects the tensors that
    autograd keeps from the forward pass for the backward pass."""
    torch.manual_seed(0)
    model = build_model(task, **model_options).train()
    torch.manual_seed(1)  # the same dropout draws for every model
    saved = [] if saved is None else saved

    def keep(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss, sample_size, _ = build_criterion(task)(model, batch)
    (loss / sample_size).backward()
    return loss.item() / sample_size, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_attention_runs_on_the_fused_cpu_kernel_alone(refcoco):
    """With every other attention backend off, training and generation still run: no mask or shape forces
    the unfused path."""
    task, batch = refcoco
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        loss, _ = loss_and_grads(task, batch)
        model = build_model(task).eval()
        generator = task.build_generator([model], Namespace(beam=2, max_len_b=8))
        hypotheses = task.inference_step(generator, [model], batch)
    assert loss > 0 and len(hypotheses) == 4
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]), pytest.raises(RuntimeError, match="No viable backend"):
        loss_and_grads(task, batch)  # the contrast: this backend has no CPU kernel, so the check above is real


def test_bf16_autocast_trains_close_to_fp32(refcoco):
    task, batch = refcoco
    loss32, grads32 = loss_and_grads(task, batch)
    loss16, grads16 = loss_and_grads(task, batch, bf16_autocast=True)
    assert loss16 == pytest.approx(loss32, rel=0.02)
    assert grads16.keys() == grads32.keys()
    flat32 = torch.cat([g.flatten() for g in grads32.values()])
    flat16 = torch.cat([grads16[n].flatten() for n in grads32])
    assert flat16.dtype == torch.float32 and F.cosine_similarity(flat16, flat32, dim=0) > 0.99


def test_bf16_autocast_runs_the_layers_in_bf16_and_returns_fp32_logits(refcoco):
    task, batch = refcoco
    model = build_model(task, bf16_autocast=True).train()
    seen = []
    model.decoder.layers[0].ffn[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    logits, _ = model(**batch["net_input"])
    assert seen == [torch.bfloat16] and logits.dtype == torch.float32


def test_checkpointed_activations_give_the_same_gradients(refcoco):
    task, batch = refcoco
    saved, saved_ckpt = [], []
    loss, grads = loss_and_grads(task, batch, saved, dropout=0.1)  # recomputation must replay the dropout draws
    loss_ckpt, grads_ckpt = loss_and_grads(task, batch, saved_ckpt, dropout=0.1, checkpoint_activations=True)
    # Each layer keeps only its inputs: of ~25 tensors per layer, all but a few are recomputed.
    assert len(saved_ckpt) < len(saved) - 30
    assert loss_ckpt == loss and grads_ckpt.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-7, msg=name)
