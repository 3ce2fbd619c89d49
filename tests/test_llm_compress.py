"""GPTQ, AWQ, SmoothQuant, Wanda and SparseGPT (vramlib.compress.llm) against their
equations, hand-derived cases and the round-to-nearest / magnitude baselines."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from vramlib.compress import llm as L
from vramlib.compress.prune import is_nm_sparse, magnitude_mask
from vramlib.models.nanogpt import GPT, GPTConfig


def correlated_inputs(n: int = 512, d: int = 64, seed: int = 0) -> torch.Tensor:
    """Inputs with correlated, unequally scaled channels (as real activations have)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d ** 0.5 + torch.eye(d)
    scale = torch.logspace(-1, 1, d)[torch.randperm(d, generator=g)]
    return (torch.randn(n, d, generator=g) @ mix) * scale


def weight(out: int = 32, d: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(out, d, generator=torch.Generator().manual_seed(seed)) * 0.1


def test_output_error_is_the_frobenius_norm_of_the_output_change():
    x, w = correlated_inputs(), weight()
    w_hat = L.rtn_weight(w, 4)
    direct = ((x @ w_hat.T - x @ w.T).double() ** 2).sum().item()
    assert L.output_error(w, w_hat, L.LayerStats.of(x).H) == pytest.approx(direct, rel=1e-4)


def test_gptq_with_uncorrelated_inputs_is_round_to_nearest():
    # H = I: the inverse Hessian has no off-diagonal entries, so no error is propagated.
    w = weight()
    for g in (None, 16):
        assert torch.equal(L.gptq_weight(w, torch.eye(64, dtype=torch.float64), 4, g, damp=0.0),
                           L.rtn_weight(w, 4, g))


def test_gptq_hand_derived_two_columns():
    # One row, two inputs.  After rounding w1 to q1 the optimal change of w2 for
    # tr(ΔW H ΔWᵀ) is  δ2 = (w1 − q1) · H12 / H22   (minimise over δ2 with δ1 = q1 − w1).
    H = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    w = torch.tensor([[0.30, 0.70]])
    quant = L._group_quantizer(w.double(), 3)          # grid from the initial row: step 0.7/3
    q1 = quant(torch.tensor([0.30], dtype=torch.float64)).item()
    w2 = 0.70 + (0.30 - q1) * 1.0 / 2.0
    q2 = quant(torch.tensor([w2], dtype=torch.float64)).item()
    got = L.gptq_weight(w, H, 3, damp=0.0)
    assert got[0, 0].item() == pytest.approx(q1)
    assert got[0, 1].item() == pytest.approx(q2)
    assert q1 == pytest.approx(0.7 / 3)                # 0.30 rounds to one step


@pytest.mark.parametrize("bits,g", [(4, None), (3, 16), (4, 16)])
def test_gptq_beats_round_to_nearest_on_the_output(bits, g):
    x, w = correlated_inputs(), weight()
    st = L.LayerStats.of(x)
    rtn = L.output_error(w, L.rtn_weight(w, bits, g), st.H)
    gptq = L.output_error(w, L.gptq_weight(w, st.H, bits, g), st.H)
    assert gptq < 0.9 * rtn          # at least 10 % less output error


def test_gptq_values_lie_on_a_grid():
    x, w = correlated_inputs(), weight()
    q = L.gptq_weight(w, L.LayerStats.of(x).H, 3, None)
    assert all(len(torch.unique(row)) <= 7 for row in q)     # 3-bit symmetric: 7 levels


def test_awq_alpha_zero_is_rtn_and_search_never_worse():
    x, w = correlated_inputs(), weight()
    st = L.LayerStats.of(x)
    w_awq, alpha = L.awq_weight(w, st, 4, 16)
    assert 0.0 <= alpha <= 1.0
    assert L.output_error(w, w_awq, st.H) <= L.output_error(w, L.rtn_weight(w, 4, 16), st.H)
    w0, _ = L.awq_weight(w, st, 4, 16, grid=0)                 # only α = 0: s = 1
    assert torch.allclose(w0, L.rtn_weight(w, 4, 16))


def test_smoothquant_scales_formula_and_invariance():
    x, w = correlated_inputs(), weight()
    amax = x.abs().amax(0)
    s = L.smoothquant_scales(w, amax, 0.5)
    assert torch.allclose(s, amax.sqrt() / w.abs().amax(0).sqrt())
    assert torch.allclose((x / s) @ (w * s).T, x @ w.T, atol=1e-4)   # the product is unchanged
    # migration: after smoothing, activation and weight channel maxima are equal at α = 0.5
    assert torch.allclose((x / s).abs().amax(0), (w * s).abs().amax(0), rtol=1e-4)
    with pytest.raises(ValueError, match="alpha"):
        L.smoothquant_scales(w, amax, 1.5)


def test_wanda_equals_magnitude_per_row_when_inputs_are_alike():
    w = weight()
    st = L.LayerStats.of(torch.ones(10, 64))             # every input channel the same norm
    keep = L.wanda_mask(w, st, 0.5)
    assert (keep.sum(1) == 32).all()                     # exactly half of every row
    for row, k in zip(w, keep):
        assert torch.equal(k, magnitude_mask(row.unsqueeze(0), 0.5)[0])


def test_wanda_keeps_small_weights_on_loud_inputs():
    w = torch.tensor([[0.1, 1.0]])
    st = L.LayerStats.of(torch.tensor([[100.0, 1.0]]))
    assert L.wanda_mask(w, st, 0.5).tolist() == [[True, False]]


@pytest.mark.parametrize("n_m", [None, (2, 4)])
def test_sparsegpt_and_wanda_beat_magnitude_on_the_output(n_m):
    x, w = correlated_inputs(), weight()
    st = L.LayerStats.of(x)
    mag = w * (L.nm_mask(w, *n_m) if n_m else magnitude_mask(w, 0.5))
    wanda = w * L.wanda_mask(w, st, 0.5, n_m)
    sgpt = L.sparsegpt_weight(w, st.H, 0.5, n_m)
    e = {k: L.output_error(w, v, st.H) for k, v in
         {"mag": mag, "wanda": wanda, "sparsegpt": sgpt}.items()}
    assert e["wanda"] < e["mag"] and e["sparsegpt"] < e["wanda"]
    assert (sgpt == 0).double().mean().item() == pytest.approx(0.5, abs=0.01)
    if n_m:
        assert is_nm_sparse(sgpt) and is_nm_sparse(wanda)


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, d_model=32)).eval()


@pytest.mark.parametrize("method,kw", [("rtn", dict(bits=4, group_size=16)),
                                       ("gptq", dict(bits=4, group_size=16)),
                                       ("awq", dict(bits=4, group_size=16)),
                                       ("wanda", dict(sparsity=0.5)),
                                       ("sparsegpt", dict(n_m=(2, 4))),
                                       ("magnitude", dict(sparsity=0.5))])
def test_compress_gpt_changes_only_block_linears(method, kw):
    model = tiny_gpt()
    calib = torch.randint(0, 32, (8, 16), generator=torch.Generator().manual_seed(0))
    out = L.compress_gpt(model, calib, method, **kw)
    for (n, p), (_, q) in zip(model.named_parameters(), out.named_parameters()):
        linear_weight = n.startswith("blocks.") and n.endswith("weight") and ".ln" not in n
        assert torch.equal(p, q) != linear_weight, n
    if method in ("wanda", "sparsegpt", "magnitude"):
        assert (out.blocks[0].mlp.fc.weight == 0).double().mean().item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="method"):
        L.compress_gpt(model, calib, "nope")


def test_smoothquant_gpt_runs_and_alpha_zero_is_plain_w8a8():
    model = tiny_gpt()
    calib = torch.randint(0, 32, (8, 16), generator=torch.Generator().manual_seed(0))
    sq = L.smoothquant_gpt(model, calib, alpha=0.5)
    assert isinstance(sq.blocks[0].attn.qkv, L.SmoothLinear)
    logits = sq(calib)[0]
    assert torch.allclose(logits, model(calib)[0], atol=0.1)
    plain = L.smoothquant_gpt(model, calib, alpha=0.0)
    assert not torch.equal(plain.blocks[0].mlp.fc.inv_s, sq.blocks[0].mlp.fc.inv_s)
