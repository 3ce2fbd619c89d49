"""vramlib.estimate.moe (arithmetic) against vramlib.measure.serving.MoEMLP / moe_gpt, measured."""

import pytest
import torch

from vramlib import track_memory
from vramlib.estimate.config import from_gpt_config
from vramlib.estimate.moe import (dispatch_bytes, expert_capacity, expert_parallel_bytes,
                                  moe_mlp_saved_bytes, moe_params, router_bytes)
from vramlib.models import GPTConfig
from vramlib.measure.serving import MoEMLP, moe_gpt


def test_mixtral_resident_and_active():
    p = moe_params("mixtral-8x7b")
    assert p["resident"] == 46_702_792_704
    assert p["active"] == p["resident"] - 32 * 6 * p["expert"]
    eb = expert_parallel_bytes("mixtral-8x7b", 8, 2)
    assert eb["per_gpu"] == pytest.approx(eb["shared"] + 2 * p["experts"] / 8)
    with pytest.raises(ValueError, match="divide"):
        expert_parallel_bytes("mixtral-8x7b", 3)


def test_capacity_and_buffers():
    assert expert_capacity(1024, 8, 2, 1.0) == 256
    assert expert_capacity(1000, 8, 2, 1.25) == 313
    assert dispatch_bytes(1024, 16, 8, 2, None, 2) == 2 * 1024 * 2 * 16 * 2
    assert dispatch_bytes(1024, 16, 8, 2, 1.0, 2) == 2 * 8 * 256 * 16 * 2
    assert router_bytes(10, 4, 2, 4) == 10 * (2 * 4 * 4 + 2 * 4 + 2 * 8)
    with pytest.raises(ValueError, match="top_k"):
        expert_capacity(10, 2, 3, 1.0)


def test_moe_gpt_params_match_estimator():
    cfg = GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, d_model=32)
    m = moe_gpt(cfg, 4, 2)
    spec = from_gpt_config(cfg).replace(num_experts=4, experts_per_token=2)
    assert sum(p.numel() for p in m.parameters()) == moe_params(spec)["resident"]


def test_moe_layer_saved_bytes_exact():
    torch.manual_seed(0)
    layer = MoEMLP(32, 128, 4, 2)
    x = torch.randn(64, 32, requires_grad=True)
    with track_memory("cpu") as r:
        y = layer(x)
    saved = r.end - y.nbytes                                   # the output itself is not saved
    assert saved == moe_mlp_saved_bytes(64, 32, 128, 4, 2, 4)
    assert sum(layer.last_counts) == 64 * 2


def test_capacity_drops_tokens():
    torch.manual_seed(0)
    layer = MoEMLP(16, 32, 4, 1, capacity_factor=0.5)
    layer(torch.randn(64, 16))
    assert max(layer.last_counts) <= expert_capacity(64, 4, 1, 0.5)
    with pytest.raises(ValueError, match="top_k"):
        MoEMLP(16, 32, 2, 3)


def test_qwen_moe_shared_expert_is_no_routed_expert():
    """Qwen-MoE's shared expert (and its d → 1 gate) sits in every layer's MLP but is not one
    of the routed experts: one expert is a gated MLP of ``moe_intermediate_size``."""
    cfg = {"model_type": "qwen2_moe", "hidden_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 256,
           "moe_intermediate_size": 32, "shared_expert_intermediate_size": 128,
           "num_experts": 8, "num_experts_per_tok": 2, "vocab_size": 100,
           "max_position_embeddings": 64, "tie_word_embeddings": False}
    p = moe_params(cfg)
    assert p["expert"] == 3 * 64 * 32
    assert p["shared"] == 2 * (3 * 64 * 128 + 64)
    assert p["router"] == 2 * 64 * 8
    assert p["resident"] - p["active"] == 2 * (8 - 2) * p["expert"]
