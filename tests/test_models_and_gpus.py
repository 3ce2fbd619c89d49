import pytest
import torch

from vramlib.hardware.gpus import get_gpu, gpu_catalog, match_gpu
from vramlib.models import GPT, GPTConfig


def expected_params(c: GPTConfig) -> int:
    d, hd = c.d_model, c.head_dim
    kv = c.n_kv_head * hd
    per_block = (2 * 2 * d) + (d * (d + 2 * kv) + d + 2 * kv) + (d * d + d) \
        + (d * c.mlp_ratio * d + c.mlp_ratio * d) + (c.mlp_ratio * d * d + d)
    emb = c.vocab_size * d + c.block_size * d
    head = 0 if c.tie_weights else c.vocab_size * d
    return emb + c.n_layer * per_block + 2 * d + head


@pytest.mark.parametrize("kw", [{}, {"tie_weights": False}, {"n_kv_head": 2}, {"n_layer": 3, "d_model": 96, "n_head": 3}])
def test_parameter_count_matches_formula(kw):
    cfg = GPTConfig(**kw)
    assert GPT(cfg).num_params() == expected_params(cfg)


def test_eager_and_sdpa_attention_agree():
    torch.manual_seed(0)
    m = GPT(GPTConfig(attn="sdpa", n_kv_head=2))
    x = torch.randint(0, 256, (2, 16))
    a = m(x)[0]
    m.cfg.attn = "eager"
    torch.testing.assert_close(m(x)[0], a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw", [{"d_model": 100, "n_head": 3}, {"n_layer": 0}, {"attn": "flash"}, {"n_kv_head": 3}])
def test_bad_config_is_a_value_error(kw):
    with pytest.raises(ValueError):
        GPTConfig(**kw)


def test_gpu_catalog_lookup():
    h100 = get_gpu("H100")
    assert h100.memory_bytes == 85_017_493_504 and h100.memory_kind == "device-reported" and h100.supports("fp8")
    assert match_gpu("NVIDIA H100 80GB HBM3").key == "h100-sxm"
    assert all(g.sources for g in gpu_catalog().values())
    with pytest.raises(ValueError, match="known"):
        get_gpu("GTX 9999")
