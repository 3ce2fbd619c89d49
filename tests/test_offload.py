"""Offload, FP8 and sequence/context parallelism: the estimator's arithmetic and the
save_on_cpu prediction for the book's GPT, checked against what the hook really copies."""

from __future__ import annotations

import pytest
import torch

from vramlib.estimate.offload import (fp8_training_bytes, fsdp_offload_bytes,
                                      parallel_activation_bytes, save_on_cpu_bytes)
from vramlib.measure.offload import gpt_saved_tensor_bytes, measure_save_on_cpu
from vramlib.models import GPT, GPTConfig


def test_fsdp_offload_moves_the_whole_state_to_the_host():
    on = fsdp_offload_bytes(1000, 1, cpu_offload=True, layer_params=100)
    off = fsdp_offload_bytes(1000, 1, cpu_offload=False, layer_params=100)
    assert on["state"] == off["state"] == 16 * 1000
    assert on["gpu_at_rest"] == 0 and on["host"] == 16 * 1000
    assert off["gpu_at_rest"] == 16 * 1000 and off["host"] == 0
    assert on["gpu_gathered"] == off["gpu_gathered"] == 2 * 100 * 2
    assert fsdp_offload_bytes(1000, 4)["host"] == 4 * 1000


@pytest.mark.parametrize("bad", [dict(n_params=0), dict(n_params=10, world_size=0),
                                 dict(n_params=10, optim_bytes=-1),
                                 dict(n_params=10, layer_params=1.5)])
def test_fsdp_offload_rejects_bad_input(bad):
    with pytest.raises(ValueError, match=next(iter(bad)) if len(bad) == 1 else list(bad)[-1]):
        fsdp_offload_bytes(**bad)


def test_save_on_cpu_bytes():
    r = save_on_cpu_bytes(800, 200, 4)
    assert r == {"host": 1000, "gpu_saved": 0, "gpu_one_layer": 200}
    with pytest.raises(ValueError, match="num_layers"):
        save_on_cpu_bytes(1, 1, 0)


def test_fp8_keeps_weights_and_optimizer():
    r = fp8_training_bytes(1000, 800, linear_input_elems=50)
    assert r["weights"] == 2000 and r["optimizer"] == 4000
    assert r["fp8_weight_copies"] == 800 and r["saved_linear_inputs"] == 100
    assert fp8_training_bytes(1000, 800, linear_input_elems=50,
                              saves_fp8_inputs=True)["saved_linear_inputs"] == 50
    with pytest.raises(ValueError, match="linear_params"):
        fp8_training_bytes(10, 11)


def test_parallel_activations_split():
    base = parallel_activation_bytes(2, 1024, 512, 4)
    assert base == 16 * 4 * 2 * 1024 * 512 * 2
    tp = parallel_activation_bytes(2, 1024, 512, 4, tp=4)
    assert tp == base * (4 + 3) / 16                      # LN tensors stay whole
    assert parallel_activation_bytes(2, 1024, 512, 4, tp=4, sp=True) == base / 4
    assert parallel_activation_bytes(2, 1024, 512, 4, cp=2) == base / 2
    with pytest.raises(ValueError, match="sp=True needs tp"):
        parallel_activation_bytes(2, 1024, 512, 4, sp=True)
    with pytest.raises(ValueError, match="cp"):
        parallel_activation_bytes(2, 1000, 512, 4, cp=3)


@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_gpt_saved_tensor_bytes_matches_the_hook(n_kv_head):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=128, block_size=32, n_layer=2, n_head=4, d_model=64,
                    n_kv_head=n_kv_head)
    model = GPT(cfg)
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    got = measure_save_on_cpu(model, x)
    pred = gpt_saved_tensor_bytes(cfg, 2, 32, 4, 4)
    assert got["host"]["activations"] == pred["activations"]
    assert got["host"]["parameters"] == pred["parameters"]
    plain = measure_save_on_cpu(model, x, offload=False)
    assert plain["host"] is None and plain["peak"] > 0


def test_int8_kv_cache_in_the_inference_estimate():
    from vramlib.estimate import estimate_inference
    from vramlib.estimate.inference import kv_cache_bytes
    from vramlib.estimate import load_model_config
    spec = load_model_config("llama-3-8b")
    assert kv_cache_bytes(spec, 1, 1000, "int8") == kv_cache_bytes(spec, 1, 1000, "bf16") / 2
    i8 = estimate_inference("llama-3-8b", 8, 4096, 128, kv_dtype="int8")
    f8 = estimate_inference("llama-3-8b", 8, 4096, 128, kv_dtype="fp8")
    b16 = estimate_inference("llama-3-8b", 8, 4096, 128)
    assert i8.peak == f8.peak < b16.peak
    with pytest.raises(ValueError, match="kv_dtype"):
        estimate_inference("llama-3-8b", 1, 16, 1, kv_dtype="int4")
