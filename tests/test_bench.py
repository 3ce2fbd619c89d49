import math
import time

import pytest
import torch

from vramlib.hardware import bench as B
from vramlib.hardware.gpus import get_gpu, gpu_catalog, match_gpu


def test_matmul_flops_and_intensity_known_answers():
    assert B.matmul_flops(2, 3, 4) == 48
    # square bf16 product: 2n^3 / (3 n^2 * 2 B) = n/3 FLOP/B
    assert B.matmul_intensity(1024, 1024, 1024, 2) == pytest.approx(1024 / 3)
    # decode GEMV, bf16 weights: 2nk / (2k + 2nk + 2n) ~ 1 FLOP/B
    assert B.matmul_intensity(1, 4096, 4096, 2) == pytest.approx(2 * 4096 * 4096 / (2 * 4096 + 2 * 4096 * 4096 + 2 * 4096))
    with pytest.raises(ValueError):
        B.matmul_flops(0, 1, 1)
    with pytest.raises(ValueError):
        B.matmul_intensity(2, 2, 2, 0)


def test_roofline_is_min_of_roof_and_slope():
    h100 = get_gpu("H100")
    bw, peak = h100.bandwidth, h100.peak_flops["bf16"]
    ridge = peak / bw  # ~295 FLOP/B
    assert ridge == pytest.approx(989.5e12 / 3.35e12)
    assert B.attainable_flops(1.0, peak, bw) == pytest.approx(3.35e12)
    assert B.attainable_flops(10 * ridge, peak, bw) == peak
    with pytest.raises(ValueError):
        B.attainable_flops(1.0, 0.0, bw)


def test_percent_of_peak_uses_catalog_dtype():
    h100 = get_gpu("H100")
    r = B.BenchResult("m", "bf16", (1, 1, 1), work=989.5e12 / 2, seconds=1.0)
    assert B.percent_of_peak(r, h100) == pytest.approx(50.0)
    r8 = B.BenchResult("m", "int8-rowmajor-b", (1, 1, 1), work=1979e12, seconds=1.0)
    assert B.percent_of_peak(r8, h100) == pytest.approx(100.0)
    assert B.percent_of_peak(B.BenchResult("m", "fp8", work=1.0, seconds=1.0), get_gpu("A100")) is None  # A100 has no fp8
    assert B.percent_of_peak(r, None) is None
    with pytest.raises(ValueError, match="known"):
        B.catalog_dtype("int3")


def test_time_fn_measures_a_known_sleep():
    t = B.time_fn(lambda: time.sleep(0.01), "cpu", warmup=0, repeats=3, min_seconds=0)
    assert t.inner == 1 and len(t.times) == 3
    assert 0.009 < t.median < 0.05
    with pytest.raises(ValueError):
        B.time_fn(lambda: None, "cpu", repeats=0)
    with pytest.raises(TypeError):
        B.time_fn(3, "cpu")


def test_bench_matmul_runs_fp32_and_skips_gpu_only_kinds_on_cpu():
    r = B.bench_matmul("fp32", 64, device="cpu", warmup=0, repeats=1, min_seconds=0)
    assert r.ok and r.work == 2 * 64**3 and r.rate > 0
    for kind, why in (("tf32", "TF32"), ("sparse24-fp16", "2:4")):
        s = B.bench_matmul(kind, 64, device="cpu")
        assert not s.ok and why in s.note and math.isnan(s.rate)
    fp8 = B.bench_matmul("fp8", 64, device="cpu", warmup=0, repeats=1, min_seconds=0)
    assert (fp8.ok and "emulated" in fp8.note) or (not fp8.ok and "skipped" in fp8.note)
    small = B.bench_matmul("int8", 16, 64, 64, device="cpu")  # torch._int_mm needs m > 16
    assert not small.ok and "m > 16" in small.note
    with pytest.raises(ValueError, match="known"):
        B.bench_matmul("int2", 64, device="cpu")


def test_int8_both_layouts_agree_with_float_product():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-64, 64, (32, 64), generator=g, dtype=torch.int8)
    w = torch.randint(-64, 64, (48, 64), generator=g, dtype=torch.int8)
    ref = a.long() @ w.long().t()
    assert torch.equal(torch._int_mm(a, w.t()).long(), ref)
    assert torch.equal(torch._int_mm(a, w.t().contiguous()).long(), ref)


def test_int4_packing_matches_manual_dequantization():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=g)
    packed, sz, mm = B._int4_pack(w, 128, torch.device("cpu"))
    x = torch.randn(4, 256, generator=g).bfloat16()
    # manual: q in 0..15 per group of 128, w ~ q*scale + min
    wg = w.reshape(64, 2, 128)
    lo, hi = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
    scale = (hi - lo) / 15
    deq = (((wg - lo) / scale).round() * scale + lo).reshape(64, 256)
    ref = x.float() @ deq.t()
    out = mm(x, packed, 128, sz).float()
    assert ((out - ref).norm() / ref.norm()).item() < 0.02
    # and 4-bit quantization is coarse: ~10 % relative error against the unquantized W
    err = ((out - x.float() @ w.t()).norm() / (x.float() @ w.t()).norm()).item()
    assert 0.03 < err < 0.2


def test_copy_bandwidth_counts_read_plus_write():
    r = B.copy_bandwidth(1 << 20, "cpu", warmup=0, repeats=1, min_seconds=0)
    assert r.ok and r.work == 2 * (1 << 20)
    with pytest.raises(ValueError):
        B.copy_bandwidth(10, "cpu")


def test_quant_overhead_and_weight_only_shapes():
    parts = B.quant_overhead(32, 64, 64, "cpu", warmup=0, repeats=1, min_seconds=0)
    assert set(parts) == {"float", "quantize x", "cast x", "int8 matmul", "dequantize y", "int8 total"}
    assert parts["float"].work == 2 * 32 * 64 * 64 and all(p.ok for p in parts.values())
    rows = B.weight_only_matmul([1, 4], 64, 128, "cpu", group=128, warmup=0, repeats=1, min_seconds=0)
    assert [r["m"] for r in rows] == [1, 4]
    assert rows[0]["weight_bytes"]["bf16"] == 64 * 128 * 2
    assert rows[0]["weight_bytes"]["int4 weight-only"] == 64 * 128 // 2 + 64 * 2 * 2
    assert all(s > 0 for s in rows[0]["seconds"].values())
    with pytest.raises(ValueError, match="multiple"):
        B.weight_only_matmul([1], 64, 100, "cpu")


def test_cpu_features_reports_capability():
    f = B.cpu_features()
    assert isinstance(f["capability"], str) and f["capability"]
    assert f["avx2"] in (True, False, None) and "quantized_engine" in f


def test_recorded_results_come_from_the_package_records(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                       # any working directory
    got = B.load_recorded_results("hardware")
    assert [r.file for r in got] == ["hardware_h100.json", "hardware_h200.json"]
    assert all(r.provenance.kind == "cuda" and "matmul" in r.results for r in got)
    assert B.load_recorded_results("estimator", cuda_only=False)[0].name == "estimator_cpu"
    with pytest.raises(ValueError):
        B.load_recorded_results("")


def test_catalog_every_figure_is_sourced_and_dense():
    for g in gpu_catalog().values():
        for dt in g.peak_flops:
            assert dt in g.sources or "all" in g.sources, (g.key, dt)
        assert "memory_gb" in g.sources and "bandwidth_gb_s" in g.sources
        # tensor-core rates are at least the CUDA-core fp32 rate
        if "fp32" in g.peak_flops:
            assert all(g.peak_flops[d] >= g.peak_flops["fp32"] for d in ("fp16", "bf16", "int8") if d in g.peak_flops)
    # B11: "8-bit" means different things on different chips
    assert get_gpu("T4").supports("int8") and not get_gpu("T4").supports("fp8")
    assert get_gpu("H100").supports("fp8") and not get_gpu("H100").supports("int4")
    assert not get_gpu("V100").supports("int8") and not get_gpu("V100").supports("bf16")
    assert get_gpu("B200").supports("fp4")
    # no figure is not "no": the B200's brief quotes no FP32 rate, a capacity-only entry none
    assert get_gpu("B200").supports("fp32") is None and get_gpu("T4").supports("fp64") is None
    assert get_gpu("RTX 3090").supports("int8") is None and get_gpu("H100").supports("fp32")
    assert get_gpu("V100").supports("int8") is False
    # H100 SXM datasheet: 3,958 TFLOPS FP8 with sparsity -> 1,979 dense
    assert get_gpu("H100").peak_flops["fp8"] == 1979e12


@pytest.mark.parametrize("name,key", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100 PCIe", "h100-pcie"), ("NVIDIA H200", "h200-sxm"),
    ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb"), ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"),
    ("Tesla T4", "t4"), ("Tesla V100-SXM2-32GB", "v100-sxm2"), ("NVIDIA L4", "l4"),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"), ("NVIDIA B200", "b200"), ("NVIDIA GeForce GTX 1080", None),
])
def test_match_gpu_device_names(name, key):
    g = match_gpu(name)
    assert (g.key if g else None) == key


@pytest.mark.slow
def test_int8_weight_only_linear_fused_and_unfused_agree():
    from vramlib.hardware.lowbit import Int8WeightOnlyLinear, fused_int8_available, quantize_linears_int8
    from vramlib.models import GPT, GPTConfig

    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(5, 3, 64)
    ref = lin(x)
    a = Int8WeightOnlyLinear(lin, fused=False)
    torch.testing.assert_close(a(x), torch.nn.functional.linear(x, a.dequantized_weight(), lin.bias))
    assert ((a(x) - ref).norm() / ref.norm()) < 0.02  # 8-bit per-row rounding: ~0.5 % error
    if fused_int8_available("cpu", torch.float32):
        b = Int8WeightOnlyLinear(lin, fused=True)
        torch.testing.assert_close(b(x), a(x), rtol=1e-4, atol=1e-5)
    assert a.weight_int8.dtype == torch.int8 and a.weight_int8.numel() == 64 * 32
    m = quantize_linears_int8(GPT(GPTConfig()))
    n_q = sum(isinstance(mm, Int8WeightOnlyLinear) for mm in m.modules())
    assert n_q == 2 * 4 and isinstance(m.lm_head, torch.nn.Linear)  # qkv, proj, fc, proj per block; head kept
    with pytest.raises(TypeError):
        Int8WeightOnlyLinear(torch.nn.Conv1d(2, 2, 1))


@pytest.mark.slow
def test_runtime_memory_weights_exact_and_activations_unchanged():
    from vramlib.measure.runtime import runtime_memory
    from vramlib.models import GPT, GPTConfig

    cfg = GPTConfig(n_layer=1, d_model=64, n_head=2, block_size=16)
    P = GPT(cfg).num_params()
    lin = 64 * 192 + 64 * 64 + 64 * 256 + 256 * 64  # qkv, attn proj, fc, mlp proj
    rows = 192 + 64 + 256 + 64
    f = runtime_memory(cfg, 2, "float", "cpu")
    q = runtime_memory(cfg, 2, "int8 unfused", "cpu")
    assert f["model_bytes"] == 4 * P
    assert q["model_bytes"] == 4 * P - 3 * lin + 4 * rows
    assert q["model_bytes"] < f["model_bytes"]
    # decode: the unfused layer's dequantized weight (largest: 64x256 fp32 = 64 KiB) dominates the peak
    d = runtime_memory(cfg, 1, "int8 unfused", "cpu", seq=2)
    assert d["forward_peak"] >= 64 * 256 * 4
    with pytest.raises(ValueError, match="variant"):
        runtime_memory(cfg, 1, "int3", "cpu")


def test_percent_of_peak_compares_sparse_rates_with_the_sparse_peak():
    from vramlib.hardware.bench import BenchResult, percent_of_peak
    from vramlib.hardware.gpus import get_gpu

    h100 = get_gpu("h100-sxm")
    dense = BenchResult(name="bf16", kind="bf16", work=989.5e12, seconds=1.0)
    sparse = BenchResult(name="2:4 bf16", kind="sparse24-bf16", work=989.5e12, seconds=1.0)
    assert abs(percent_of_peak(dense, h100) - 100.0) < 1e-9
    assert abs(percent_of_peak(sparse, h100) - 50.0) < 1e-9  # sparse peak = 2 x dense
