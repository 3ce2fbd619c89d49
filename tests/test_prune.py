"""Pruning: masks against torch.nn.utils.prune, exact sparsity, 2:4 validity, structured
pruning that preserves outputs when it removes dead neurons/heads."""

import copy

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import prune as tprune

from vramlib.models import GPT, GPTConfig
from vramlib.compress.prune import (apply_masks, channel_mask, checkpoint_bytes, global_masks, head_importance,
                           is_nm_sparse, iterative_prune, layerwise_masks, magnitude_mask, model_sparsity,
                           neuron_importance, nm_mask, polynomial_schedule, prunable_linears, prune_gpt_heads,
                           prune_gpt_mlp, prune_heads, remove_masks, sensitivity_scan, shrink_mlp,
                           sparse_storage_bytes, sparsity, to_semi_structured)
from vramlib.hardware.timing import time_fn, time_interleaved


def tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=4, d_model=32, **kw)).eval()


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.8, 0.9, 1.0])
def test_magnitude_mask_exact_sparsity_and_matches_torch(s):
    torch.manual_seed(0)
    lin = nn.Linear(50, 40)
    mask = magnitude_mask(lin.weight, s)
    assert (~mask).sum().item() == round(s * 2000)
    tprune.l1_unstructured(lin, "weight", amount=s)
    assert torch.equal(mask, lin.weight_mask.bool())


def test_pruned_entries_are_the_smallest():
    w = torch.tensor([[0.1, -5.0, 0.3, 2.0], [-0.05, 1.0, -3.0, 0.2]])
    mask = magnitude_mask(w, 0.5)
    assert mask.tolist() == [[False, True, False, True], [False, True, True, False]]


def test_global_masks_match_torch_global_unstructured():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    with torch.no_grad():
        model[2].weight.mul_(5)   # layer 2 has larger weights -> loses less
    masks = global_masks(model, 0.7)
    total = sum((~m).sum().item() for m in masks.values())
    assert total == round(0.7 * (600 + 300))
    ref = copy.deepcopy(model)
    tprune.global_unstructured([(ref[0], "weight"), (ref[2], "weight")],
                               pruning_method=tprune.L1Unstructured, amount=0.7)
    assert torch.equal(masks["0"], ref[0].weight_mask.bool())
    assert torch.equal(masks["2"], ref[2].weight_mask.bool())
    assert sparsity(masks["0"].float()) > sparsity(masks["2"].float())   # global != layer-wise


@pytest.mark.parametrize("dim", [0, 1])
def test_channel_mask_matches_ln_structured(dim):
    torch.manual_seed(2)
    lin = nn.Linear(12, 10)
    mask = channel_mask(lin.weight, 0.4, n=2, dim=dim)
    tprune.ln_structured(lin, "weight", amount=0.4, n=2, dim=dim)
    assert torch.equal(mask, lin.weight_mask.bool())
    removed = (~mask).all(dim=1 - dim).sum().item()
    assert removed == round(0.4 * lin.weight.shape[dim])


def test_nm_mask_pattern_and_selection():
    w = torch.tensor([[1.0, -4.0, 3.0, 0.5, 0.1, 0.2, -0.3, 0.4]])
    m = nm_mask(w, 2, 4)
    assert m.tolist() == [[False, True, True, False, False, False, True, True]]
    torch.manual_seed(3)
    w = torch.randn(64, 128)
    m = nm_mask(w, 2, 4)
    assert sparsity((w * m)) == 0.5 and is_nm_sparse(w * m) and not is_nm_sparse(w)
    assert (m.reshape(-1, 4).sum(1) == 2).all()
    with pytest.raises(ValueError):
        nm_mask(torch.randn(4, 6))


def test_apply_and_remove_masks_keep_zeros_through_training():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 4))
    apply_masks(model, layerwise_masks(model, 0.75))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        loss = model(torch.randn(8, 128)).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    assert model_sparsity(model) == 0.75
    sd_masked = checkpoint_bytes(model)
    remove_masks(model)
    assert model_sparsity(model) == 0.75
    assert not any(hasattr(m, "weight_mask") for m in model.modules())
    # weight_orig + weight_mask: a masked checkpoint is bigger than the dense one
    assert sd_masked > 1.8 * checkpoint_bytes(model)


def test_prunable_linears_skip_tied_head():
    names = [n for n, _ in prunable_linears(tiny_gpt())]
    assert "lm_head" not in names and len(names) == 8


def test_sensitivity_scan_restores_model():
    model = tiny_gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    res = sensitivity_scan(model, lambda m: calls.append(model_sparsity(m)) or 0.0, [0.0, 0.5],
                           layers=["blocks.0.mlp.fc"])
    assert list(res) == ["blocks.0.mlp.fc"] and len(res["blocks.0.mlp.fc"]) == 2
    assert calls[0] == 0.0 and calls[1] > 0.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_polynomial_schedule_and_iterative_prune():
    sched = polynomial_schedule(0.8, 4)
    assert sched[-1] == pytest.approx(0.8) and all(a < b for a, b in zip(sched, sched[1:]))
    model = tiny_gpt()
    hist = iterative_prune(model, 0.8, 3, finetune=lambda m: None, evaluate=lambda m: 1.0)
    assert [round(h["sparsity"], 3) for h in hist][-1] == 0.8
    assert model_sparsity(model) == pytest.approx(0.8, abs=1e-4)


def test_shrink_mlp_preserves_output_when_dropping_dead_neurons():
    torch.manual_seed(5)
    fc, proj = nn.Linear(8, 32), nn.Linear(32, 8)
    dead = torch.arange(0, 32, 3)
    with torch.no_grad():
        fc.weight[dead] = 0
        fc.bias[dead] = 0
    alive = torch.tensor([i for i in range(32) if i not in set(dead.tolist())])
    assert set(torch.topk(neuron_importance(fc, proj), len(alive)).indices.tolist()) == set(alive.tolist())
    fc2, proj2 = shrink_mlp(fc, proj, alive)
    x = torch.randn(5, 8)
    ref = proj(torch.nn.functional.gelu(fc(x)))
    out = proj2(torch.nn.functional.gelu(fc2(x)))
    assert fc2.weight.shape == (len(alive), 8) and proj2.weight.shape == (8, len(alive))
    torch.testing.assert_close(out, ref)


def test_prune_heads_preserves_output_when_head_is_dead():
    model = tiny_gpt()
    attn = model.blocks[0].attn
    hd = 8
    with torch.no_grad():
        attn.proj.weight[:, 1 * hd:2 * hd] = 0    # head 1 writes nothing
    assert head_importance(attn)[1] == 0
    small = prune_heads(attn, [0, 2, 3])
    x = torch.randn(2, 10, 32)
    torch.testing.assert_close(small(x), attn(x), atol=1e-6, rtol=1e-5)
    full = prune_heads(attn, [0, 1, 2, 3])
    torch.testing.assert_close(full(x), attn(x), atol=1e-6, rtol=1e-5)
    assert small.qkv.weight.shape == (72, 32) and small.proj.weight.shape == (32, 24)


def test_prune_gpt_mlp_and_heads_shrink_parameters():
    model = tiny_gpt()
    idx = torch.randint(0, 32, (2, 16))
    small = prune_gpt_mlp(model, 0.5, multiple=8)
    assert small.blocks[0].mlp.fc.out_features == 64
    d = 32
    assert model.num_params() - small.num_params() == 2 * (64 * d + 64 + 64 * d)
    assert small(idx)[0].shape == (2, 16, 32)
    fewer = prune_gpt_heads(model, 1)
    assert fewer.blocks[1].attn.n_head == 3 and fewer(idx)[0].shape == (2, 16, 32)
    with pytest.raises(ValueError):
        prune_gpt_heads(model, 4)


def test_sparse_storage_bytes_csr_formula():
    w = torch.zeros(10, 20)
    w[0, :5] = 1.0
    w[3, 2] = 2.0
    # 6 values (fp32) + 6 col indices (int64) + 11 row pointers (int64)
    assert sparse_storage_bytes(w, "csr") == 6 * 4 + 6 * 8 + 11 * 8
    assert sparse_storage_bytes(w, "coo") == 6 * 4 + 2 * 6 * 8
    with pytest.raises(ValueError):
        sparse_storage_bytes(w, "bsr")


def test_semi_structured_none_off_gpu():
    w = torch.randn(64, 64)
    assert to_semi_structured(w * nm_mask(w)) is None


def test_bad_input():
    with pytest.raises(ValueError):
        magnitude_mask(torch.randn(3, 3), 1.5)
    with pytest.raises(TypeError):
        magnitude_mask([1, 2], 0.5)
    with pytest.raises(ValueError):
        apply_masks(nn.Linear(2, 2), {"nope": torch.ones(2, 2, dtype=torch.bool)})


def test_median_times_interleaved():
    calls = []
    res = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, "cpu",
                           repeats=3, warmup=1)
    assert set(res) == {"a", "b"} and all(v >= 0 for v in res.values())
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert time_fn(lambda: None, "cpu", repeats=2, warmup=0).median >= 0
    with pytest.raises(ValueError):
        time_interleaved({})
