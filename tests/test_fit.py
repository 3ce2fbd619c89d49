"""Will it fit? Capacities in device bytes, the never-optimistic solver against the recorded
OOM boundaries, the ``vramlib fit`` command, and clear errors on bad input (issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vramlib.estimate import (CUDA_CONTEXT_BYTES, capacity_bytes, estimate_training, fit, load_model_config,
                              max_batch, needed_bytes)
from vramlib.hardware.gpus import get_gpu, gpu_catalog
from vramlib.core.records import load_record


def test_capacities_are_device_bytes():
    # the book's own recorded runs (benchmarks/results/cuda_context_h100.json, ..._h200.json)
    for key, rec in (("h100-sxm", "cuda_context_h100"), ("h200-sxm", "cuda_context_h200")):
        g = get_gpu(key)
        recorded = load_record(rec).provenance.memory_bytes
        assert g.memory_bytes == g.usable_bytes == recorded and g.memory_kind == "device-reported"
    assert get_gpu("h100-sxm").usable_bytes == 85_017_493_504
    assert get_gpu("H200").usable_bytes == 150_109_880_320
    for g in gpu_catalog().values():
        assert g.memory_label and "memory_bytes" in g.sources and g.usable_bytes <= g.memory_bytes
        if g.memory_kind == "vendor-binary":   # discounted below the vendor's GiB figure
            assert g.usable_bytes < g.memory_bytes
    for name in ("RTX 3090", "RTX 4090", "RTX 5090", "RTX PRO 6000", "A10G", "L4", "L40S", "A100-SXM4-40GB",
                 "A100 80GB PCIe",
                 "H100 NVL", "MI300X", "B200", "T4"):
        assert get_gpu(name).usable_bytes > 0
    # a "16 GB" T4 holds less than 16·10⁹ B, let alone 16 GiB: ECC and the driver take their share
    assert get_gpu("t4").usable_bytes < 16 * 10**9 < 16 * 2**30
    assert not get_gpu("rtx-3090").rates_known and get_gpu("h100-sxm").rates_known


def test_fits_uses_usable_bytes():
    from vramlib.estimate.reserve import estimate_margin
    b = estimate_training("llama-3.2-1b", 2, 1024, weights_dtype="bf16")
    need = needed_bytes(b, CUDA_CONTEXT_BYTES)
    assert need == b.total_reserved + estimate_margin(b)     # fits() and the solver agree
    assert b.fits(need) and not b.fits(need - 1)
    with pytest.raises(ValueError, match="capacity"):
        b.fits(0)


def test_solver_never_optimistic_on_recorded_boundaries():
    from vramlib.estimate.fitcheck import fit_check, merge_records
    rec = merge_records(load_record("fit_gpu"), load_record("fit_gpu_dynamic"), keep_repeats=True)
    assert rec and rec.provenance.device.startswith("NVIDIA")
    out = fit_check(rec)
    assert len(out["rows"]) >= 20
    for r in out["rows"]:
        assert r["pred"] <= r["true"], r          # never above the true largest batch
    assert out["tuning"]["optimistic"] == out["held-out"]["optimistic"] == 0
    assert min(r["ratio"] for r in out["rows"]) > 0.6
    trained = [r for r in out["rows"] if not r["recipe"].startswith("gen-")]
    assert max(abs(r["peak_err"]) for r in trained) < 0.05


def test_fit_answer_and_margin():
    a = fit("llama-3-8b", "h100-sxm", weights_dtype="bf16", trainable="lora", checkpointing="full")
    assert a.value > 0 and 0 <= a.margin < a.capacity and a.needed <= a.capacity < a.next_needed
    assert "largest batch" in a.line()
    none = fit("llama-3-70b", "t4", weights_dtype="bf16")
    assert none.value == 0 and "does not fit" in none.line()
    ctx = fit("llama-3.2-1b", "rtx-4090", stage="inference", what="context", batch=2, new_tokens=64)
    assert ctx.value > 1000


def test_cli_fit_and_estimate():
    run = lambda *a: subprocess.run([sys.executable, "-m", "vramlib", *a], capture_output=True, text=True)  # noqa: E731
    r = run("fit", "llama-3-8b", "--gpu", "h100-sxm", "--trainable", "qlora", "--checkpointing", "full", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["value"] > 0 and d["needed"] <= d["capacity"] == get_gpu("h100-sxm").usable_bytes
    # the reported bug: TP 8 + selective checkpointing printed phases of -340 GB
    r = run("estimate", "llama-3-8b", "--gpus", "8", "--tp", "8", "--checkpointing", "selective", "--attention",
            "eager", "--seq", "8192", "--json")
    assert r.returncode == 0 and min(json.loads(r.stdout)["phases"].values()) > 0
    r = run("fit", "gpt2", "--gpu", "t4", "--trainable", "lora", "--lora-targets", "gate", "--seq", "512")
    assert r.returncode == 2 and "lora_targets" in r.stderr and "Traceback" not in r.stderr
    r = run("estimate", "gpt2", "--seq", "128", "--batch", str(10**30))
    assert r.returncode == 2 and "batch" in r.stderr and "Traceback" not in r.stderr


def test_bad_configs_give_clear_errors(tmp_path):
    base = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 128, "vocab_size": 100}
    assert load_model_config({**base, "tie_word_embeddings": "false"}).tie_embeddings is False
    assert load_model_config({**base, "tie_word_embeddings": "True"}).tie_embeddings is True
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        load_model_config({**base, "tie_word_embeddings": "yes"})
    with pytest.raises(ValueError, match="hidden_size"):
        load_model_config({**base, "hidden_size": 10**400})
    with pytest.raises(ValueError, match="hidden_size"):
        load_model_config({**base, "hidden_size": 1e308})
    deep = tmp_path / "config.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested"):
        load_model_config(str(deep))
    with pytest.raises(ValueError, match="lora_targets"):
        estimate_training("gpt2", 1, 128, trainable="lora", lora_targets="gate")


def test_needed_bytes_adds_reserve_and_context():
    b = estimate_training("qwen2-0.5b", 4, 512, weights_dtype="bf16")
    assert needed_bytes(b, 0) > b.peak
    assert needed_bytes(b, CUDA_CONTEXT_BYTES) - needed_bytes(b, 0) == CUDA_CONTEXT_BYTES
    assert capacity_bytes(123) == 123 and capacity_bytes("h200-sxm") == 150_109_880_320


def test_reserve_coefficients_follow_the_tuning_brackets():
    """Each training coefficient is the largest lower end of the tuning half's brackets,
    rounded up to 0.05 (the rule stated in ``reserve.py`` and the chapter)."""
    import math

    from vramlib.estimate.fitcheck import reserve_brackets
    from vramlib.estimate.reserve import RESERVE_LARGEST
    rows = reserve_brackets(load_record("fit_gpu"))
    assert all(r["lo"] < r["hi"] for r in rows)
    for ck in ("none", "full"):
        lo = max(r["lo"] for r in rows if r["split"] == "tuning" and r["pattern"] == f"train, {ck}")
        assert RESERVE_LARGEST[ck] == pytest.approx(math.ceil(lo / 0.05 - 1e-9) * 0.05), (ck, lo)


def test_recipe_scenarios_and_check():
    from types import SimpleNamespace

    from vramlib.estimate.fitcheck import recipe_check, recipe_estimate, recipe_scenario
    assert recipe_scenario("qlora")["checkpointing"] == "full"          # peft's default
    assert recipe_scenario("qlora-nockpt")["checkpointing"] == "none"
    assert recipe_scenario("lora-ckpt")["trainable"] == "lora"
    assert recipe_scenario("full-bf16", "paged-adamw8bit", 2) == dict(
        weights_dtype="bf16", checkpointing="none", optimizer="paged-adam8bit", grad_accum=2)
    assert recipe_scenario("gen-ao-int4")["weights"] == "int4"
    tiny = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 128, "vocab_size": 100}
    case = dict(name="a", split="tuning", model="tiny", recipe="full-bf16", optimizer="sgd", grad_accum=1,
                batch=2, length=64, new_tokens=8, hf_config=tiny)
    est = recipe_estimate(case).peak
    rec = SimpleNamespace(results={"cases": [
        dict(case, peak=est), dict(case, name="b", split="held-out", peak=round(est * 1.25)),
        dict(case, name="c", recipe="gen-dynamic", hf_config=dict(tiny, model_type="jamba"), peak=1),
        dict(case, name="d", skipped="no CUDA")]})
    out = recipe_check(rec)
    assert [r["name"] for r in out["rows"]] == ["a", "b", "c"]
    assert out["tuning"]["median_abs"] == 0 and out["tuning"]["unsupported"] == 1
    assert out["held-out"]["worst_under"] == pytest.approx(1 / 1.25 - 1, abs=1e-6)
    assert out["rows"][2]["estimate"] is None and "jamba" in out["rows"][2]["estimate_error"]


def test_qwen2_moe_is_described():
    """Qwen-MoE: the shared expert and its gate are counted (parameters, activations), a config
    whose some layers are dense is refused naming the field, a missing expert count too."""
    from vramlib.estimate import estimate_inference, estimate_training, load_model_config
    from vramlib.estimate.params import count_params
    cfg = {"model_type": "qwen2_moe", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "intermediate_size": 256, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 128,
           "num_experts": 8, "num_experts_per_tok": 2, "vocab_size": 100}
    spec = load_model_config(cfg)
    assert (spec.intermediate_size, spec.shared_expert_size, spec.num_experts) == (32, 128, 8)
    pc = count_params(spec)
    one = 3 * 64 * 32
    assert pc.mlp_per_layer == 8 * one + 64 * 8 + 3 * 64 * 128 + 64
    assert pc.active_mlp_per_layer == 2 * one + 64 * 8 + 3 * 64 * 128 + 64
    no_shared = load_model_config(dict(cfg, shared_expert_intermediate_size=0))
    assert estimate_training(spec, 2, 64).components["activations"] > \
        estimate_training(no_shared, 2, 64).components["activations"]
    assert estimate_inference(spec, 2, prompt_len=64, new_tokens=4).peak > 0
    for bad, field in ((dict(cfg, decoder_sparse_step=2), "decoder_sparse_step"),
                       (dict(cfg, mlp_only_layers=[0]), "mlp_only_layers")):
        with pytest.raises(ValueError, match=field):
            load_model_config(bad)
    with pytest.raises(ValueError, match="num_experts"):
        load_model_config({k: v for k, v in cfg.items() if k != "num_experts"})


def test_bitsandbytes_optimizer_states():
    from vramlib.estimate import num_params
    opt = lambda o: estimate_training("llama-3.2-1b", 1, 512, weights_dtype="bf16",  # noqa: E731
                                      optimizer=o).components["optimizer states"]
    P = num_params("llama-3.2-1b")
    assert opt("paged-adamw") < opt("paged-adam8bit") < opt("adam8bit") < opt("adamw") == 4 * P
    assert 2 * P < opt("adam8bit") < 2.05 * P          # 1-byte states + block absmax (+ fp32 norms)
    assert opt("paged-adamw") < 0.001 * P               # only the norms' states stay in torch


def test_merge_records_later_case_replaces_earlier():
    from types import SimpleNamespace

    from vramlib.estimate.fitcheck import merge_records
    a = SimpleNamespace(name="a", provenance="pa", config={}, results={"cases": [
        dict(name="x", peak=1), dict(name="y", peak=2)]})
    b = SimpleNamespace(name="b", provenance="pb", config={}, results={"cases": [
        dict(name="y", peak=3), dict(name="x", skipped="time budget spent")]})
    m = merge_records(a, None, b)
    assert {c["name"]: c["peak"] for c in m.results["cases"]} == {"x": 1, "y": 3}
    assert m.provenance == "pb" and m.name == "a+b"
    with pytest.raises(ValueError, match="at least one"):
        merge_records(None)


def test_quantized_generation_terms_from_the_libraries_code():
    """torchao quantizes the (tied) LM head too and pads int4 in-features to 1024; its int8
    linear casts the weight per call (decode: the head's copy); bitsandbytes nf4 keeps an fp32
    absmax per 64 and LLM.int8 an int32 product.  Each term checked against its formula."""
    from vramlib.estimate import estimate_inference, load_model_config
    from vramlib.estimate.inference import InferenceScenario, quant_temporary_bytes, weight_bytes
    from vramlib.estimate.params import count_params
    spec = load_model_config("qwen2-0.5b")                  # tied head, hidden 896
    pc, V, d = count_params(spec), spec.vocab_size, spec.hidden_size
    auto = weight_bytes(pc, spec, "int8", scale_bytes=2)
    ao = weight_bytes(pc, spec, "int8", scale_bytes=2, quant_library="torchao")
    # the head's int8 copy and its row scales, and the q/k/v biases torchao leaves 16-bit
    assert ao - auto == V * d + V * 2 + spec.num_layers * (spec.q_dim + 2 * spec.kv_dim)
    ao4 = weight_bytes(pc, spec, "int4", group_size=128, scale_bytes=4, quant_library="torchao")
    auto4 = weight_bytes(pc, spec, "int4", group_size=128, scale_bytes=4)
    assert ao4 > auto4 + V * 1024 / 2                       # the head, padded 896 -> 1024
    nf4 = weight_bytes(pc, spec, "nf4", group_size=64, scale_bytes=4, quant_library="bitsandbytes")
    assert nf4 - weight_bytes(pc, spec, "nf4") == pytest.approx(pc.linear_weights / 64 * (4 - 1 - 4 / 256))
    sc = InferenceScenario(batch=8, prompt_len=512, new_tokens=64, weights="int8", quant_library="torchao")
    assert quant_temporary_bytes(spec, sc)[1] == V * d * 2 + 8 * V * 2
    bnb = InferenceScenario(batch=8, prompt_len=512, new_tokens=64, weights="int8", quant_library="bitsandbytes")
    assert quant_temporary_bytes(spec, bnb)[0] == 8 * 512 * (4 * spec.intermediate_size + 3 * d)
    assert quant_temporary_bytes(spec, InferenceScenario(weights="int8")) == (0.0, 0.0)
    with pytest.raises(ValueError, match="quant_library"):
        estimate_inference(spec, 1, weights="int4", quant_library="bitsandbytes")
    with pytest.raises(ValueError, match="Conv1D"):
        estimate_inference("gpt2", 1, weights="int8", quant_library="torchao")


def test_training_terms_from_the_libraries_code():
    """Gemma-2's soft-capping keeps tanh's output (tokens × vocab × 2 more in the loss phases);
    the fp32 QLoRA recipe with grouped-query attention keeps the math kernel's softmax."""
    from vramlib.estimate import estimate_training, load_model_config
    g = load_model_config("gemma-2b").replace(family="gemma2", norms_per_layer=4)
    capped, plain = g.replace(logit_softcapping=True), g.replace(logit_softcapping=False)
    a, b = (estimate_training(m, 2, 256, weights_dtype="bf16") for m in (capped, plain))
    assert a.phases["backward (loss)"] - b.phases["backward (loss)"] == 2 * 256 * g.vocab_size * 2
    assert load_model_config("gemma-2-9b").logit_softcapping
    q = dict(weights_dtype="bf16", trainable="qlora", checkpointing="none")
    s1, s2 = (estimate_training("tinyllama-1.1b", 1, s, **q).components["activations"] for s in (512, 1024))
    spec = load_model_config("tinyllama-1.1b")
    # doubling s doubles the tokens and the per-token (h, s) softmax term: 4·h·s bytes per layer
    per_tok_s = 4 * spec.num_heads * spec.num_layers
    assert s2 - 2 * s1 == pytest.approx(1024 * per_tok_s * (1024 - 512), rel=0.02)
