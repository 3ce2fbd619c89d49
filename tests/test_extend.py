"""`vramlib estimate`'s options beyond the breakdown (vramlib.estimate.extend) and `vramlib
serve` (vramlib.estimate.serving.serve_plan): their numbers are the chapters' functions', the
JSON of an estimate without them is unchanged, and bad input names the field."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import pytest

from vramlib.cli import main
from vramlib.estimate import (CUDA_CONTEXT_BYTES, estimate_inference, estimate_training,
                              load_model_config)
from vramlib.estimate.extend import Extensions, estimate_extensions
from vramlib.estimate.moe import expert_parallel_bytes
from vramlib.estimate.offload import parallel_activation_bytes
from vramlib.estimate.serving import (kv_cache_bytes_at, load_mla_config, mla_kv_bytes_per_token,
                                      quantized_kv_bytes_per_token, serve_plan)
from vramlib.hardware.gpus import get_gpu


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_json_without_options_is_the_breakdown() -> None:
    rc, out, _ = run(["estimate", "llama-3.2-1b", "--json"])
    assert rc == 0 and json.loads(out) == estimate_training("llama-3.2-1b", 1, 2048,
                                                                  weights_dtype="bf16").to_dict()


def test_options_add_a_section_and_change_nothing_else() -> None:
    argv = ["estimate", "mixtral-8x7b", "--gpus", "2", "--tp", "2", "--json"]
    base = json.loads(run(argv)[1])
    rc, out, _ = run(argv + ["--ep", "4", "--capacity-factor", "1.25", "--offload", "all", "--fp8",
                             "--sp", "--cp", "2", "--seq", "4096"])
    got = json.loads(out)
    ext = got.pop("extensions")
    base2 = json.loads(run(argv + ["--seq", "4096"])[1])
    assert rc == 0 and got == base2 and set(base) == set(got)
    assert ext["moe"]["weights_per_gpu"] == expert_parallel_bytes("mixtral-8x7b", 4, 2)["per_gpu"]
    assert ext["moe"]["resident_params"] > ext["moe"]["active_params"]
    pa = ext["parallel_activations"]
    assert pa["book_gpt_bytes"] == parallel_activation_bytes(1, 4096, 4096, 32, tp=2, sp=True, cp=2)
    assert pa["ratio"] == pytest.approx(0.4)
    assert ext["offload"]["host"] > 0 and ext["offload"]["gpu_at_rest"] == 0
    assert ext["fp8"]["weights"] == ext["fp8"]["optimizer"] / 4      # bf16 weights, Adam 8 B


def test_kv_scales() -> None:
    b = estimate_inference("llama-3-8b", kv_dtype="int8")
    head = estimate_extensions(b, load_model_config("llama-3-8b"), Extensions(kv_scales="head"))["kv"]
    assert head["kv_bytes_per_token"] == quantized_kv_bytes_per_token("llama-3-8b", 8, "head")
    assert head["kv_bytes_per_token_codes_only"] * 2 == head["kv_bytes_per_token_bf16"]
    assert head["kv_bytes_per_token"] > head["kv_bytes_per_token_codes_only"]


@pytest.mark.parametrize("argv, words", [
    (["estimate", "llama-3-8b", "--ep", "2"], "has no experts"),
    (["estimate", "mixtral-8x7b", "--ep", "3"], "ep (3) must divide num_experts"),
    (["estimate", "mixtral-8x7b", "--ep", "0"], "ep must be an integer"),
    (["estimate", "mixtral-8x7b", "--capacity-factor", "-1"], "capacity_factor must be a positive"),
    (["estimate", "llama-3-8b", "--sp"], "sp needs tp > 1"),
    (["estimate", "llama-3-8b", "--cp", "3"], "cp (3) must divide seq"),
    (["estimate", "llama-3-8b", "--kv-scales", "head"], "kv_scales applies to generation"),
    (["estimate", "llama-3-8b", "--stage", "inference", "--kv-scales", "token"], "kv_dtype int8 or fp8"),
    (["estimate", "llama-3-8b", "--stage", "inference", "--offload", "all"], "apply to training"),
    (["serve", "deepseek-v3", "--gpu", "h200"], "--weight-bytes"),
    (["serve", "llama-3-70b", "--gpu", "h100-sxm"], "no memory left for the KV cache"),
    (["serve", "llama-3-8b", "--gpu", "h100-sxm", "--gpu-memory-utilization", "1.5"],
     "gpu_memory_utilization must be in"),
    (["serve", "llama-3-8b", "--gpu", "h100-sxm", "--kv-scales", "head"], "kv_dtype int8 or fp8"),
])
def test_bad_input_names_the_field(argv: list[str], words: str) -> None:
    rc, _, err = run(argv)
    assert rc == 2 and words in err, err


def test_serve_plan_is_the_chapters_arithmetic() -> None:
    rc, out, _ = run(["serve", "llama-3-8b", "--gpu", "h100-sxm", "--json"])
    plan = json.loads(out)
    b = estimate_inference("llama-3-8b", 1, 2048, 0)
    budget = 0.9 * get_gpu("h100-sxm").usable_bytes
    pool = budget - b["weights"] - (b.peak - b["weights"] - b["kv cache"]) - CUDA_CONTEXT_BYTES
    seq = kv_cache_bytes_at("llama-3-8b", 1, 4096)
    assert rc == 0 and plan["kv_pool"] == pytest.approx(pool)
    assert plan["max_num_seqs"] == int(pool // (16 * seq / 4096)) // 256
    int8 = serve_plan("llama-3-8b", "h100-sxm", kv_dtype="int8", kv_scales="token")
    assert int8["kv_bytes_per_sequence"] == seq / 2 * (1 + 1 / 256)     # codes + a 4 B scale per 1 KiB row
    assert int8["max_num_seqs"] >= 2 * plan["max_num_seqs"] - 1
    tp2 = serve_plan("llama-3-8b", "h100-sxm", tp=2)
    assert tp2["kv_bytes_per_sequence"] == seq / 2 and tp2["max_num_seqs"] > 2 * plan["max_num_seqs"]


def test_serve_sliding_window_and_mla() -> None:
    long = serve_plan("mistral-7b", "h100-sxm", max_model_len=32768)
    short = serve_plan("mistral-7b", "h100-sxm", max_model_len=4096)
    assert long["kv_bytes_per_sequence"] == short["kv_bytes_per_sequence"]   # capped at the window
    mla = serve_plan("deepseek-v2", "h200", weights=60e9, activations=2e9)
    assert mla["mla"] and mla["kv_bytes_per_sequence"] == 4096 * mla_kv_bytes_per_token(
        load_mla_config("deepseek-v2"))
    assert serve_plan("deepseek-v2", "h200", weights=60e9, activations=2e9, tp=2)[
        "kv_bytes_per_sequence"] == mla["kv_bytes_per_sequence"]          # latents not split by TP


def test_ep_counts_the_weights_format() -> None:
    spec = load_model_config("mixtral-8x7b")
    per = {}
    for fmt in ("bf16", "nf4"):
        b = estimate_inference("mixtral-8x7b", weights=fmt)
        per[fmt] = estimate_extensions(b, spec, Extensions(ep=4))["moe"]["weights_per_gpu"]
    assert per["bf16"] == expert_parallel_bytes(spec, 4, 2)["per_gpu"]
    assert 0.25 < per["nf4"] / per["bf16"] < 0.35          # 4-bit codes + scales, 16-bit rest
