"""Low-rank factorization: Eckart–Young errors, exact reconstruction at full rank, parameter
accounting, and agreement with torch.linalg.svd / torch.svd_lowrank."""

import pytest
import torch
import torch.nn as nn

from vramlib.compress.lowrank import (LoRALinear, LowRankLinear, add_lora, breakeven_rank, energy, factorize_linear, factorize_model,
                             lowrank_flops, lowrank_params, rank_for_energy, rank_for_param_ratio,
                             spectrum, truncation_error)


def test_known_spectrum_and_energy_rank():
    U, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    S = torch.tensor([4.0, 3.0, 0.0, 0.0], dtype=torch.float64)
    W = (U[:, :4] * S) @ V.T
    torch.testing.assert_close(spectrum(W).double(), S, atol=1e-5, rtol=0)
    e = energy(torch.tensor([4.0, 3.0, 0.0, 0.0]))
    torch.testing.assert_close(e, torch.tensor([0.64, 1.0, 1.0, 1.0]))
    assert rank_for_energy(torch.tensor([4.0, 3.0, 0.0, 0.0]), 0.6) == 1
    assert rank_for_energy(torch.tensor([4.0, 3.0, 0.0, 0.0]), 0.9) == 2
    assert truncation_error(torch.tensor([4.0, 3.0, 1.0]), 1) == (pytest.approx(10 ** 0.5), 3.0)


@pytest.mark.parametrize("r", [1, 5, 12, 20])
def test_eckart_young_reconstruction_error(r):
    torch.manual_seed(0)
    lin = nn.Linear(20, 30)
    fact = factorize_linear(lin, rank=r)
    W_r = fact.up.weight @ fact.down.weight
    S = torch.linalg.svd(lin.weight.detach(), full_matrices=False).S
    fro, spec = truncation_error(S, r)
    assert torch.linalg.matrix_norm(lin.weight - W_r).item() == pytest.approx(fro, abs=2e-5)
    assert torch.linalg.matrix_norm(lin.weight - W_r, ord=2).item() == pytest.approx(spec, abs=2e-5)
    x = torch.randn(3, 20)
    torch.testing.assert_close(fact(x), x @ W_r.T + lin.bias)


def test_full_rank_is_exact():
    torch.manual_seed(1)
    lin = nn.Linear(16, 8)
    x = torch.randn(4, 16)
    torch.testing.assert_close(factorize_linear(lin, rank=8)(x), lin(x), atol=1e-5, rtol=1e-5)


def test_svd_lowrank_on_a_low_rank_matrix():
    torch.manual_seed(2)
    lin = nn.Linear(40, 50, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(50, 3) @ torch.randn(3, 40))
    fact = factorize_linear(lin, rank=3, method="lowrank")
    torch.testing.assert_close(fact.up.weight @ fact.down.weight, lin.weight, atol=1e-4, rtol=1e-4)


def test_parameter_and_flop_accounting():
    assert lowrank_params(300, 200, 10) == 5000 and lowrank_params(300, 200, 10, bias=True) == 5300
    assert breakeven_rank(300, 200) == 120.0
    r = rank_for_param_ratio(300, 200, 0.5)
    assert r == 60 and lowrank_params(300, 200, r) <= 0.5 * 300 * 200
    assert lowrank_flops(300, 200, None, tokens=2) == 240000
    assert lowrank_flops(300, 200, 60, tokens=2) == 120000
    m = LowRankLinear(200, 300, 60)
    assert sum(p.numel() for p in m.parameters()) == lowrank_params(300, 200, 60, bias=True)


def test_energy_threshold_rank():
    torch.manual_seed(3)
    lin = nn.Linear(32, 32)
    S = spectrum(lin.weight)
    fact = factorize_linear(lin, energy_threshold=0.9)
    assert fact.rank == rank_for_energy(S, 0.9)
    assert energy(S)[fact.rank - 1] >= 0.9 > (energy(S)[fact.rank - 2] if fact.rank > 1 else 0)


def test_factorize_model_replaces_named_layers():
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    new = factorize_model(model, ["0"], param_ratio=0.5)
    assert isinstance(new[0], LowRankLinear) and isinstance(model[0], nn.Linear)
    assert new[0].rank == rank_for_param_ratio(128, 64, 0.5)
    assert new(torch.randn(2, 64)).shape == (2, 10)
    with pytest.raises(ValueError):
        factorize_model(model, ["1"], rank=2)


def test_bad_input():
    with pytest.raises(ValueError):
        factorize_linear(nn.Linear(4, 4))
    with pytest.raises(ValueError):
        factorize_linear(nn.Linear(4, 4), rank=5)
    with pytest.raises(TypeError):
        factorize_linear(nn.Conv1d(4, 4, 1), rank=2)
    with pytest.raises(ValueError):
        spectrum(torch.randn(3))


def test_lora_starts_at_base_merges_exactly_and_has_low_rank():
    torch.manual_seed(4)
    base = nn.Linear(24, 16)
    lora = LoRALinear(base, rank=3, alpha=6.0)
    x = torch.randn(5, 24)
    torch.testing.assert_close(lora(x), base(x))
    with torch.no_grad():
        lora.lora_B.normal_()
    assert torch.linalg.matrix_rank(lora.delta_weight()).item() == 3
    torch.testing.assert_close(lora.merged()(x), lora(x), atol=1e-5, rtol=1e-5)
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert trainable == lowrank_params(16, 24, 3)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    new = add_lora(model, ["0"], rank=2)
    assert isinstance(new[0], LoRALinear)
    assert sum(p.numel() for p in new.parameters() if p.requires_grad) == 2 * (8 + 8)
    with pytest.raises(ValueError):
        LoRALinear(base, rank=17)
