"""The 2-GPU layouts of ``vramlib.estimate.parallel.estimate_layout`` (Part I, "Beyond one
GPU"): properties over random models and shapes, and the terms each layout adds."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vramlib.estimate import dense_transformer
from vramlib.estimate.parallel import LAYOUTS, estimate_layout, layout_check, offload_host_bytes

EXAMPLES = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
LLAMA = {"model_type": "llama", "hidden_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16,
         "num_key_value_heads": 4, "intermediate_size": 2816, "vocab_size": 32000,
         "max_position_embeddings": 4096, "tie_word_embeddings": False}


@st.composite
def dense(draw):
    heads = draw(st.sampled_from([2, 4, 8, 16]))
    kv = draw(st.sampled_from([h for h in (2, 4, 8, 16) if heads % h == 0]))
    return dense_transformer(hidden_size=heads * draw(st.sampled_from([16, 64])),
                             num_layers=draw(st.sampled_from([2, 4, 8, 16])), num_heads=heads,
                             num_kv_heads=kv, vocab_size=draw(st.sampled_from([512, 32000])),
                             mlp=draw(st.sampled_from(["gated", "plain"])),
                             tie_embeddings=draw(st.booleans()))


def _peaks(model, layout, b, s, **kw):
    return [r["peak"] for r in estimate_layout(model, layout, b, s, weights_dtype="bf16", **kw)]


@EXAMPLES
@given(dense(), st.sampled_from(LAYOUTS), st.integers(1, 8), st.sampled_from([64, 512, 2048]),
       st.sampled_from([2, 4, 8]))
def test_no_negative_term_and_monotone(model, layout, b, s, n):
    rows = estimate_layout(model, layout, b, s, micro_batches=n, weights_dtype="bf16")
    for r in rows:
        assert all(v >= 0 for v in r["components"].values()), r
        assert all(v >= 0 for v in r["phases"].values()), r
    bigger = estimate_layout(model, layout, b + 1, s, micro_batches=n, weights_dtype="bf16")
    assert all(x["peak"] >= y["peak"] for x, y in zip(bigger, rows))


@EXAMPLES
@given(dense(), st.integers(1, 8), st.sampled_from([64, 512, 2048]))
def test_layout_order(model, b, s):
    """Sharding never costs: FSDP2 ≤ HSDP (2, 1) ≤ DDP and offload ≤ FSDP2 on the GPU;
    (1, 2) is FSDP2; 1F1B never holds more than GPipe on any stage."""
    single = _peaks(model, "single", b, s)[0]
    ddp, fsdp = _peaks(model, "ddp", b, s)[0], _peaks(model, "fsdp", b, s)[0]
    assert _peaks(model, "hsdp-1x2", b, s) == _peaks(model, "fsdp", b, s)
    assert _peaks(model, "fsdp-offload", b, s)[0] <= fsdp <= _peaks(model, "hsdp-2x1", b, s)[0]
    assert single < ddp and _peaks(model, "tp", b, s)[0] <= single
    for g, f in zip(_peaks(model, "pp-gpipe", b, s), _peaks(model, "pp-1f1b", b, s)):
        assert f <= g


def test_terms_of_each_layout():
    """DDP adds exactly one bf16 gradient copy; FSDP2 and offload differ by the sharded state."""
    single = estimate_layout(LLAMA, "single", 4, 1024, weights_dtype="bf16")[0]
    ddp = estimate_layout(LLAMA, "ddp", 4, 1024, weights_dtype="bf16")[0]
    d, L, I, V, kv = 1024, 16, 2816, 32000, 256
    P = L * (2 * d * d + 2 * d * kv + 3 * d * I + 2 * d) + 2 * V * d + d     # counted by hand
    assert ddp["peak"] - single["peak"] == 2 * P
    host = offload_host_bytes(dense_transformer(hidden_size=d, num_layers=L, num_heads=16, num_kv_heads=4,
                                                intermediate_size=I, vocab_size=V), 2)
    assert host["params"] == host["grads"] == P and host["optimizer"] == 2 * P
    gpipe = estimate_layout(LLAMA, "pp-gpipe", 2, 1024, micro_batches=4, weights_dtype="bf16")
    one = estimate_layout(LLAMA, "pp-1f1b", 2, 1024, micro_batches=4, weights_dtype="bf16")
    assert [r["phase"] for r in gpipe] == ["backward (first micro-batch)"] * 2
    assert one[0]["peak"] < gpipe[0]["peak"] and one[1]["peak"] < one[0]["peak"] + 2**30


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="layout"):
        estimate_layout(LLAMA, "zero-4", 1, 128)
    with pytest.raises(ValueError, match="trainable"):
        estimate_layout(LLAMA, "pp-1f1b", 1, 128, trainable="lora")
    with pytest.raises(ValueError, match="micro_batches"):
        estimate_layout(LLAMA, "pp-gpipe", 1, 128, micro_batches=0)


class _Rec:
    def __init__(self, config, results):
        self.config, self.results = config, results


def test_layout_check_reads_a_record():
    """A record whose peaks are the estimator's own gives zero error; a skipped case is left out."""
    est = estimate_layout(LLAMA, "ddp", 4, 1024, weights_dtype="bf16")
    meas = _Rec(LLAMA, {"micro_batches": 4, "cases": [
        {"name": "ddp-b4s1024", "layout": "ddp", "batch": 4, "seq_len": 1024, "world": 2,
         "ranks": [{"rank": r["rank"], "peak": r["peak"]} for r in est]},
        {"name": "tp-b4s1024", "layout": "tp", "batch": 4, "seq_len": 1024, "world": 2,
         "skipped": "no", "ranks": []}]})
    pred = _Rec(LLAMA, {"cases": [{"name": "ddp-b4s1024", "ranks": [{"peak": 2 * r["peak"]} for r in est]}]})
    rows = layout_check(meas, pred)
    assert [r["case"] for r in rows] == ["ddp-b4s1024"] * 2
    assert all(r["err"] == 0 and r["err_pre"] == 1.0 and r["target"] == 0.05 for r in rows)
