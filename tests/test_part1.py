"""Known-answer tests of Part I's modules: stagemem, lora, qstore, generate, distributed."""

import dataclasses
import pytest
import torch

from vramlib.estimate import load_model_config
from vramlib.estimate.inference import kv_cache_bytes
from vramlib.measure.generate import KVCache, generate
from vramlib.compress.lora import LoRALinear, apply_lora, lora_param_count, trainable_params
from vramlib.measure.tracker import track_memory
from vramlib.models import GPT, GPTConfig
from vramlib.hardware.lowbit import Int8WeightOnlyLinear
from vramlib.compress.qstore import (NF4_LEVELS, Linear4bit, dequantize_4bit, packed_4bit_bytes,
                            quantize_4bit, quantize_linears)
from vramlib.measure.stagemem import (gpt_activation_bytes, gpt_train_peak_bytes, per_gpu_training_bytes,
                              rule_a6, rule_a7, rule_a9, rule_a11, training_state_bytes)


def small(**kw):
    base = dict(vocab_size=64, block_size=32, n_layer=2, n_head=4, d_model=32)
    base.update(kw)
    return GPTConfig(**base)


# -- stagemem --------------------------------------------------------------------------
def test_training_state_known_answers():
    assert sum(training_state_bytes(10, "fp32", "adam").values()) == 160
    assert sum(training_state_bytes(10, "mixed", "adam").values()) == 160   # 2 + 4 + 2 + 8
    assert sum(training_state_bytes(10, "bf16", "adam").values()) == 80
    assert sum(training_state_bytes(10, "bf16", "adam8bit").values()) == 60
    assert training_state_bytes(10, "fp32", "sgd")["optimizer states"] == 0
    assert training_state_bytes(10, "fp32", "adam", trainable=1)["gradients"] == 4
    with pytest.raises(ValueError, match="optimizer must be"):
        training_state_bytes(10, "fp32", "lion")
    with pytest.raises(ValueError, match="cannot exceed"):
        training_state_bytes(10, trainable=11)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_activation_formula_matches_saved_tensors(attn):
    cfg = small(attn=attn)
    model = GPT(cfg)
    x = torch.randint(0, cfg.vocab_size, (3, 24))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        k = t.untyped_storage().data_ptr()
        if k not in params and k not in seen:
            seen.add(k)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, x)
    assert gpt_activation_bytes(cfg, 3, 24)["total"] == total


def test_train_peak_prediction_close():
    cfg = small(d_model=64)
    model = GPT(cfg)
    x = torch.randint(0, cfg.vocab_size, (8, 32))
    with track_memory("cpu") as rep:
        loss = model(x, x)[1]
        loss.backward()
        del loss
    pred = gpt_train_peak_bytes(cfg, 8, 32, n_params=model.num_params())
    assert abs(pred - rep.peak) / rep.peak < 0.05


def test_eager_peak_at_the_softmax_backward_exact():
    """At long sequences eager attention peaks at the last block's softmax — in backward at
    B = 1 (two (B, h, s, s) gradients next to every layer's saved softmax), in forward at
    B = 2 (three at once): exact on the CPU up to the token ids, which the formula counts
    and the test made before measuring, and far above the start-of-backward candidate."""
    for batch in (1, 2):
        cfg = GPTConfig(vocab_size=64, block_size=256, n_layer=2, n_head=8, d_model=64,
                        attn="eager")
        model = GPT(cfg)
        x = torch.randint(0, cfg.vocab_size, (batch, 256))
        with track_memory("cpu") as rep:
            loss = model(x, x)[1]
            loss.backward()
            del loss
        pred = gpt_train_peak_bytes(cfg, batch, 256, n_params=model.num_params())
        start = (gpt_activation_bytes(cfg, batch, 256)["total"]
                 + 2 * batch * 256 * cfg.vocab_size * 4)
        assert 0 <= pred - rep.peak <= 8 * batch * 256, (batch, pred, rep.peak)
        assert start < 0.9 * rep.peak, batch


def test_source_rules():
    assert rule_a6(10, 2, 5) == 4 * (10 + 10 + 10 + 20)
    from vramlib.estimate import article_training_rule
    assert rule_a6(10, 3, 7) == article_training_rule(10, 3, 7) == 4 * (10 + 21 + 10 + 20)
    assert rule_a7(7, 3) == 84
    assert rule_a9(7_000_000_000) == 14_000_000_000
    assert rule_a11(7_000_000_000, 4) == 3_500_000_000
    with pytest.raises(ValueError):
        rule_a11(10, 5)


def test_per_gpu_ordering():
    P = 1000
    tot = {s: sum(per_gpu_training_bytes(P, 4, s).values()) for s in ("dp", "zero1", "zero2", "zero3")}
    assert tot["dp"] == 16 * P and tot["zero3"] == 4 * P
    assert tot["zero3"] < tot["zero2"] < tot["zero1"] < tot["dp"]
    assert tot["zero1"] == 4 * P + 4 * P + 8 * P // 4
    with pytest.raises(ValueError):
        per_gpu_training_bytes(P, 0)


# -- LoRA ------------------------------------------------------------------------------
def test_lora_trainable_count_matches_formula():
    cfg = small()
    model = GPT(cfg)
    shapes = [tuple(m.weight.shape) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and n.endswith(("qkv", "proj", "fc"))]
    names = apply_lora(model, rank=4)
    assert len(names) == 4 * cfg.n_layer
    assert trainable_params(model) == lora_param_count(shapes, 4)
    assert lora_param_count([(96, 32)], 4) == 4 * (32 + 96)


def test_lora_starts_at_base_and_trains():
    torch.manual_seed(0)
    base = torch.nn.Linear(8, 6)
    x = torch.randn(5, 8)
    ref = base(x)
    lora = LoRALinear(base, rank=2)
    assert torch.allclose(lora(x), ref)
    lora(x).sum().backward()
    assert base.weight.grad is None and lora.lora_B.grad is not None
    with pytest.raises(ValueError):
        LoRALinear(torch.nn.Linear(2, 2), rank=0)
    with pytest.raises(ValueError, match="no linear layer"):
        apply_lora(GPT(small()), 2, targets=("nothing",))


# -- qstore ----------------------------------------------------------------------------
def test_packed_4bit_bytes_and_roundtrip():
    torch.manual_seed(0)
    w = torch.randn(16, 64)
    packed, scales = quantize_4bit(w, 64, "nf4")
    assert packed.dtype == torch.uint8 and packed.numel() == 512
    assert packed.numel() + 4 * scales.numel() == packed_4bit_bytes(1024, 64, 4)
    back = dequantize_4bit(packed, scales, w.shape, "nf4")
    assert (back - w).abs().max() <= scales.max() * 0.2   # half the widest NF4 gap
    exact = NF4_LEVELS[torch.tensor([0, 7, 15])].repeat(64 // 3 + 1)[:64].reshape(1, 64) * 3.0
    p2, s2 = quantize_4bit(exact, 64)
    assert torch.equal(dequantize_4bit(p2, s2, exact.shape), exact)   # levels reproduce exactly


def test_quantized_linears_close_to_fp32():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(4, 64)
    assert torch.allclose(Int8WeightOnlyLinear(lin, fused=False)(x), lin(x), atol=0.02)
    assert (Linear4bit(lin)(x) - lin(x)).abs().max() < 0.3
    model = GPT(small())
    names = quantize_linears(model, "nf4", 32)
    assert len(names) == 4 * 2 and not any(n.endswith("lm_head") for n in names)
    with pytest.raises(ValueError):
        quantize_4bit(torch.randn(10), 4)


# -- generate --------------------------------------------------------------------------
def test_generate_matches_full_forward():
    torch.manual_seed(0)
    for kv in (None, 2):
        cfg = small(n_kv_head=kv)
        model = GPT(cfg).eval()
        idx = torch.randint(0, cfg.vocab_size, (2, 5))
        out = generate(model, idx, 6)
        ref = idx
        with torch.no_grad():
            for _ in range(6):
                nxt = model(ref)[0][:, -1:].argmax(-1)
                ref = torch.cat([ref, nxt], 1)
        assert torch.equal(out, ref)


def test_kv_cache_bytes():
    cfg = small(n_kv_head=2)
    model = GPT(cfg)
    cache = KVCache.allocate(model, 3, 20, torch.bfloat16)
    spec = load_model_config(cfg)
    assert cache.nbytes() == kv_cache_bytes(spec, 3, 20, "bf16") == 2 * 2 * 3 * 2 * 20 * 8 * 2
    with pytest.raises(ValueError, match="exceed block_size"):
        generate(model, torch.zeros(1, 30, dtype=torch.long), 10)


@pytest.mark.parametrize("kw", [
    dict(vocab_size=256, block_size=64, n_layer=2, n_head=4, d_model=128),              # small book GPT
    dict(vocab_size=2048, block_size=256, n_layer=4, n_head=8, d_model=256, n_kv_head=2),  # GQA
    dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, d_model=768),        # GPT-2 small
    dict(vocab_size=50304, block_size=2048, n_layer=12, n_head=12, d_model=768, n_kv_head=4),
])
@pytest.mark.slow
def test_kv_cache_bytes_matches_the_allocated_cache(kw):
    """The estimator's kv_cache_bytes is what KVCache.allocate really allocates."""
    cfg = GPTConfig(**kw)
    spec = load_model_config(cfg)
    model = GPT(GPTConfig(**{**kw, "n_layer": 1}))      # one layer: the cache scales by layers
    for batch, tokens in ((1, 1), (3, 20), (2, cfg.block_size)):
        for dt, torch_dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            cache = KVCache.allocate(model, batch, tokens, torch_dt)
            assert kv_cache_bytes(spec, batch, tokens, dt) == cache.nbytes() * cfg.n_layer


# -- distributed -----------------------------------------------------------------------
@pytest.mark.slow
def test_fsdp_demo_shards_state():
    from vramlib.measure.distributed import run_fsdp_demo

    cfg = small()
    rows = run_fsdp_demo(2, cfg, batch=2, seq=16)
    P = GPT(cfg).num_params()
    assert [r["rank"] for r in rows] == [0, 1]
    for r in rows:
        assert abs(r["param_bytes"] - 4 * P / 2) / (4 * P / 2) < 0.05
        assert abs(r["optimizer_bytes"] - 8 * P / 2) / (8 * P / 2) < 0.05


# -- budget ----------------------------------------------------------------------------
@pytest.mark.slow
def test_budget_tracker_and_largest_batch():
    from vramlib.measure.budget import largest_batch, try_step

    def make(b):
        return lambda: torch.empty(b, 1024, dtype=torch.uint8)      # b KiB

    out = try_step(make(10), budget=8 * 1024)
    assert not out.ok and "out of memory" in out.error
    assert try_step(make(8), budget=8 * 1024).peak == 8 * 1024
    best, log = largest_batch(make, budget=100 * 1024)
    assert best == 100 and log[0][0] == 1
    best, _ = largest_batch(make, budget=100 * 1024, base=50 * 1024)
    assert best == 50
    with pytest.raises(ValueError):
        try_step(make(1))


# -- checkpointing ---------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["none", "full", "selective"])
def test_checkpointing_saved_bytes_and_same_loss(policy):
    from vramlib.measure.checkpointing import checkpoint_saved_bytes, gpt_forward
    from vramlib.measure.stagemem import list_saved_tensors

    cfg = small()
    model = GPT(cfg)
    x = torch.randint(0, cfg.vocab_size, (4, 16))
    saved = sum(r["bytes"] for r in list_saved_tensors(model, lambda: gpt_forward(model, x, x, policy))
                if r["kind"] == "activation")
    assert saved == checkpoint_saved_bytes(cfg, 4, 16, policy) + gpt_activation_bytes(cfg, 4, 16)["head"]
    assert torch.allclose(gpt_forward(model, x, x, policy)[1], model(x, x)[1])
    with pytest.raises(ValueError):
        gpt_forward(model, x, x, "some")


def test_recompute_flops_counted():
    from torch.utils.flop_counter import FlopCounterMode

    from vramlib.measure.checkpointing import gpt_forward, recompute_flops

    cfg = dataclasses.replace(small(), attn="eager")  # every matmul visible to the counter
    model = GPT(cfg)
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    flops = {}
    for policy in ("none", "full", "selective"):
        with FlopCounterMode(display=False) as fc:
            gpt_forward(model, x, x, policy)[1].backward()
        flops[policy] = fc.get_total_flops()
    assert flops["full"] - flops["none"] == recompute_flops(cfg, 2, 16, "full")
    assert flops["selective"] - flops["none"] == recompute_flops(cfg, 2, 16, "selective")


def test_finetune_activation_formula():
    from vramlib.measure.stagemem import finetune_activation_bytes, list_saved_tensors

    cfg = small()
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    m = GPT(cfg)
    apply_lora(m, 4)
    saved = sum(r["bytes"] for r in list_saved_tensors(m, lambda: m(x, x)) if r["kind"] == "activation")
    assert saved == finetune_activation_bytes(cfg, 2, 16, "lora", rank=4)
    with pytest.raises(ValueError):
        finetune_activation_bytes(cfg, 2, 16, "adapter")
