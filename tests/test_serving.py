"""vramlib.estimate.serving (arithmetic) and vramlib.measure.serving (paged and quantized KV caches)."""

import pytest
import torch

from vramlib.estimate.serving import (kv_allocation, kv_bytes_per_token, load_mla_config,
                                      mla_kv_bytes_per_token, mla_uncompressed_kv_bytes_per_token,
                                      paged_tokens, prefix_cache_blocks, quantized_kv_bytes_per_token,
                                      request_lengths, serving_memory_plan, simulate_batching,
                                      speculative_extra_bytes, decode_time_per_token)
from vramlib.measure.generate import KVCache, decode_step, prefill
from vramlib.models import GPT, GPTConfig
from vramlib.measure.serving import BlockPool, PagedKVCache, QuantizedKVCache, dequantize_kv, quantize_kv


def small_gpt(n_kv_head=2):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, block_size=64, n_layer=2, n_head=4, d_model=32,
                         n_kv_head=n_kv_head)).eval()


def test_kv_per_token_matches_hand_count():
    assert kv_bytes_per_token("llama-3-8b") == 2 * 32 * 8 * 128 * 2
    v3 = load_mla_config("deepseek-v3")
    assert mla_kv_bytes_per_token(v3) == 61 * (512 + 64) * 2
    assert mla_uncompressed_kv_bytes_per_token(v3) == 61 * 128 * (128 + 64 + 128) * 2
    with pytest.raises(ValueError, match="unknown MLA model"):
        load_mla_config("nope")


def test_paging_waste_and_prefix_blocks():
    assert paged_tokens(17, 16) == 32 and paged_tokens(16, 16) == 16
    a = kv_allocation([10, 30], 64, 16)
    assert (a["used"], a["contiguous"], a["paged"]) == (40, 128, 48)
    with pytest.raises(ValueError, match="max_len"):
        kv_allocation([100], 64)
    pc = prefix_cache_blocks(40, [8, 8], 16)      # 2 full shared blocks, 8-token tail + 8 each
    assert pc == {"without": 6, "with": 4, "shared_blocks": 2}


def test_memory_plan_and_errors():
    p = serving_memory_plan(100.0, 50.0, 10.0, 1.0, 0.9, 0.0, block_size=2, max_model_len=10)
    assert p.kv_pool == pytest.approx(30.0) and p.num_blocks == 15 and p.max_concurrency == 3.0
    with pytest.raises(ValueError, match="no memory left"):
        serving_memory_plan(100.0, 95.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        serving_memory_plan(100.0, 1.0, 0.0, 1.0, gpu_memory_utilization=1.5)


def test_continuous_batching_beats_static():
    mix = request_lengths(40, seed=3, max_len=512)
    p, o = [a for a, _ in mix], [b for _, b in mix]
    st, co = (simulate_batching(p, o, 2048, 16, c) for c in (False, True))
    assert co["steps"] < st["steps"]
    assert max(co["running"]) >= 1
    assert request_lengths(5, seed=1) == request_lengths(5, seed=1)


def test_quantized_bytes_speculative_and_time():
    spec_bytes = quantized_kv_bytes_per_token("llama-3-8b", 8, "head", 4)
    assert spec_bytes == 2 * 32 * (8 * 128 + 8 * 4)
    sp = speculative_extra_bytes("llama-3.2-1b", "llama-3-8b", 2, 100, 4)
    assert sp["total"] == pytest.approx(sum(v for k, v in sp.items() if k != "total"))
    assert decode_time_per_token(3e12, 3e12) == 1.0
    with pytest.raises(ValueError, match="bandwidth"):
        decode_time_per_token(1.0, 0)


def test_paged_cache_reproduces_contiguous_generation():
    m = small_gpt()
    idx = torch.randint(0, 64, (1, 21))
    c = KVCache.allocate(m, 1, 40)
    pool = BlockPool(m, 4, 8)
    pc = PagedKVCache(pool)
    a, b = prefill(m, idx, c, True), prefill(m, idx, pc, True)
    assert torch.equal(a, b)
    tok = a[:, -1:].argmax(-1)
    for _ in range(5):
        a, b = decode_step(m, tok, c), decode_step(m, tok, pc)
        assert torch.equal(a, b)
        tok = a.argmax(-1)
    assert pool.used == 4 and pc.nbytes() == 4 * pool.block_bytes()   # 26 tokens, blocks of 8
    pc.release()
    assert pool.used == 0
    other = PagedKVCache(pool)
    with pytest.raises(RuntimeError, match="exhausted"):
        other.reserve(8 * 5)


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("gran", ["token", "head"])
def test_kv_quantization_roundtrip_and_bytes(kind, gran):
    x = torch.randn(2, 3, 5, 8)
    codes, scales = quantize_kv(x, kind, gran)
    err = (dequantize_kv(codes, scales) - x).abs().max().item()
    assert err < (0.02 if kind == "int8" else 0.2) * x.abs().max().item()
    assert scales.shape == ((2, 1, 5, 1) if gran == "token" else (2, 3, 5, 1))
    m = small_gpt()
    q = QuantizedKVCache.allocate(m, 2, 10, kind, gran)
    g = 1 if gran == "token" else 2
    assert q.nbytes() == 2 * 2 * 2 * 10 * (2 * 8 + g * 4)


def test_quantize_kv_rejects_bad_input():
    with pytest.raises(ValueError, match="kind"):
        quantize_kv(torch.randn(1, 1, 1, 4), "int4")
    with pytest.raises(ValueError, match="granularity"):
        quantize_kv(torch.randn(1, 1, 1, 4), "int8", "channel")
