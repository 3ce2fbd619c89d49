import math

import pytest
import torch
import torch.nn as nn

from vramlib import param_bytes
from vramlib.compress import quant as Q


def test_number_format_table_from_torch():
    f = {x.name: x for x in Q.number_formats()}
    assert f["FP16"].max == 65504.0 and f["BF16"].eps == 2.0 ** -7
    assert f["FP8 E4M3"].max == 448.0 and f["FP8 E5M2"].max == 57344.0
    assert f["INT8"].max == 127 and f["INT4"].max == 7
    assert [x.bits for x in Q.number_formats()] == [32, 16, 16, 8, 8, 32, 16, 8, 4, 4]


def test_bit_layouts_known_answers():
    assert Q.bit_layout(1.0, torch.float32) == "0|01111111|" + "0" * 23
    assert Q.bit_layout(-2.0, torch.bfloat16) == "1|10000000|0000000"
    assert Q.bit_layout(1.5, torch.float16) == "0|01111|1000000000"
    assert Q.bit_layout(448.0, torch.float8_e4m3fn) == "0|1111|110"
    assert Q.bit_layout(-1, torch.int8) == "11111111"
    with pytest.raises(TypeError):
        Q.bit_layout(1.0, torch.float64)


def test_nf4_levels_match_qlora_table():
    lv = Q.nf4_levels()
    ref = torch.tensor([-1.0, -0.6961928, -0.5250731, -0.3949175, -0.2844414, -0.1847734, -0.0910500, 0.0,
                        0.0795803, 0.1609302, 0.2461123, 0.3379152, 0.4407098, 0.5626170, 0.7229568, 1.0])
    torch.testing.assert_close(lv, ref, atol=2e-6, rtol=0)


@pytest.mark.parametrize("dtype,e,m", [(torch.float16, 5, 10), (torch.bfloat16, 8, 7),
                                       (torch.float8_e4m3fn, 4, 3), (torch.float8_e5m2, 5, 2)])
def test_round_to_float_matches_torch_casts(dtype, e, m):
    torch.manual_seed(0)
    fmax = torch.finfo(dtype).max
    x = torch.cat([torch.randn(20000) * s for s in (1e-3, 1.0, 30.0)])
    x = x[x.abs() < fmax]
    ours = Q.round_to_float(x, e, m, max_value=fmax)
    torch.testing.assert_close(ours, x.to(dtype).float(), rtol=0, atol=0)


def test_qrange_and_params():
    assert Q.qrange(8) == (-127, 127) and Q.qrange(8, symmetric=False) == (0, 255)
    assert Q.qrange(4) == (-7, 7)
    s, z = Q.quant_params(torch.tensor(-1.0), torch.tensor(3.0), 8, symmetric=False)
    assert s.item() == pytest.approx(4 / 255) and z.item() == round(1 / (4 / 255))
    s, z = Q.quant_params(torch.tensor(-1.0), torch.tensor(3.0), 8, symmetric=True)
    assert s.item() == pytest.approx(3 / 127) and z.item() == 0
    with pytest.raises(ValueError):
        Q.qrange(1)
    with pytest.raises(ValueError):
        Q.qrange(0, symmetric=False)


def test_round_trip_error_is_at_most_half_a_step():
    torch.manual_seed(0)
    x = torch.randn(64, 256)
    for bits in (2, 4, 8):
        for sym in (True, False):
            qt = Q.quantize_tensor(x, bits, sym, "channel")
            err = (qt.dequantize() - x).abs()
            assert (err <= qt.scale / 2 + 1e-6).all()
            # codes in the declared range
            qmin, qmax = Q.qrange(bits, sym)
            assert qt.q.min() >= qmin and qt.q.max() <= qmax
    # exactly representable values survive unchanged
    grid = torch.arange(-127, 128).float() * 0.01
    torch.testing.assert_close(Q.fake_quantize(grid, 8), grid)


def test_matches_torch_fake_quantize_per_tensor_and_per_channel():
    torch.manual_seed(0)
    x = torch.randn(32, 64) * 3
    qt = Q.quantize_tensor(x, 8, symmetric=False, granularity="tensor")
    ref = torch.fake_quantize_per_tensor_affine(x, qt.scale.item(), int(qt.zero_point.item()), 0, 255)
    torch.testing.assert_close(qt.dequantize(), ref)
    # the integer codes behind torch's fake quantization (torch.quantize_per_tensor, which
    # returned them as a quint8 tensor, is deprecated with torch's quantized tensors)
    ref_q = (ref / qt.scale.item() + int(qt.zero_point.item())).round().int()
    assert torch.equal(qt.q.reshape(x.shape).int(), ref_q)
    qc = Q.quantize_tensor(x, 8, symmetric=True, granularity="channel")
    ref = torch.fake_quantize_per_channel_affine(x, qc.scale.flatten(), qc.zero_point.flatten().int(), 0, -127, 127)
    torch.testing.assert_close(qc.dequantize(), ref)


@pytest.mark.slow
def test_sqnr_gains_six_db_per_bit():
    torch.manual_seed(0)
    x = torch.rand(200_000) * 2 - 1           # full-scale uniform signal: SQNR = 6.02 b dB
    s = [Q.sqnr_db(x, Q.fake_quantize(x, b, symmetric=False)) for b in range(4, 11)]
    slopes = [b - a for a, b in zip(s, s[1:])]
    assert all(abs(d - 20 * math.log10(2)) < 0.3 for d in slopes)
    assert s[4] == pytest.approx(6.02 * 8, abs=0.5)
    assert Q.sqnr_db(x, x) == float("inf")


@pytest.mark.slow
def test_finer_granularity_never_worse_and_calibration_methods():
    torch.manual_seed(0)
    w = torch.randn(64, 128) * torch.logspace(-1, 1, 64).unsqueeze(1)   # rows of very different scale
    e = {g: (Q.fake_quantize(w, 4, granularity=g, group_size=32) - w).pow(2).mean().item()
         for g in ("tensor", "channel", "group")}
    assert e["group"] <= e["channel"] < e["tensor"]
    x = torch.randn(1, 100_000)
    x[0, 0] = 50.0                                                  # one outlier
    lo, hi = Q.observe_range(x, "minmax")
    assert hi.item() == 50.0
    lo_p, hi_p = Q.observe_range(x, "percentile", percentile=99.9)
    assert 2.5 < hi_p.item() < 4.0
    err = {m: (Q.fake_quantize(x, 4, method=m) - x).pow(2).mean().item() for m in ("minmax", "mse")}
    assert err["mse"] < err["minmax"] / 5
    with pytest.raises(ValueError):
        Q.observe_range(x, "entropy")
    with pytest.raises(ValueError):
        Q.fake_quantize(w, 4, granularity="group", group_size=48)


def test_ste_gradient_matches_torch():
    torch.manual_seed(0)
    x1 = (torch.randn(1000) * 2).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    s, z = 0.02, 3
    y1 = Q.FakeQuantSTE.apply(x1, torch.tensor(s), torch.tensor(float(z)), -128, 127)
    y2 = torch.fake_quantize_per_tensor_affine(x2, s, z, -128, 127)
    torch.testing.assert_close(y1, y2)
    g = torch.randn(1000)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad)
    assert 0 < (x1.grad == 0).float().mean() < 1     # some values clipped, some passed


def test_int4_pack_round_trip():
    q = torch.arange(-8, 8).repeat(3, 2)
    p = Q.pack_int4(q)
    assert p.dtype == torch.uint8 and p.shape == (3, 16)
    assert torch.equal(Q.unpack_int4(p).long(), q)
    with pytest.raises(ValueError):
        Q.pack_int4(torch.tensor([[8, 0]]))


@pytest.mark.parametrize("bits,group", [(8, None), (4, 32)])
def test_quant_linear_bytes_and_accuracy(bits, group):
    torch.manual_seed(0)
    lin = nn.Linear(128, 64)
    ql = Q.QuantLinear(lin, bits, group)
    n_scales = 64 * (128 // (group or 128))
    assert param_bytes(ql, buffers=True) == 64 * 128 * bits // 8 + 2 * n_scales + 4 * 64
    x = torch.randn(10, 128)
    rel = ((ql(x) - lin(x)).norm() / lin(x).norm()).item()
    assert rel < (0.01 if bits == 8 else 0.15)
    with pytest.raises(ValueError):
        Q.QuantLinear(lin, bits=3)


def test_quantize_weights_replaces_linears_and_skips_head():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    qm = Q.quantize_weights(m, bits=8, skip=("2",))
    assert isinstance(qm[0], Q.QuantLinear) and type(qm[2]) is nn.Linear
    assert type(m[0]) is nn.Linear                    # the original is untouched


def test_sim_w8a8_is_the_int8_gemm_and_close_to_fp32():
    """The simulation equals torch's int8 GEMM (torch._int_mm) on the same codes, with the
    affine activations' zero point folded into a per-output correction (the PTQ chapter's
    derivation); torch.ao.quantization.quantize_dynamic, deprecated, is not used."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    x = torch.randn(256, 64)
    ref = m(x)
    sim = Q.quantize_sim(m, 8, 8, a_mode="dynamic-token", skip=())
    lin = m[0]
    qw = Q.quantize_tensor(lin.weight, 8, symmetric=True, granularity="channel")
    qx = Q.quantize_tensor(x, 8, symmetric=False, granularity="channel")
    w8 = qw.q.to(torch.int8)
    acc = torch._int_mm((qx.q - 128).to(torch.int8), w8.t())
    acc += (128 - qx.zero_point).round().to(torch.int32) * w8.sum(1, dtype=torch.int32)
    y_int = acc.float() * qx.scale * qw.scale.t() + lin.bias
    with torch.no_grad():
        y_sim = sim[0](x)
        assert ((y_int - y_sim).norm() / y_sim.norm()).item() < 1e-5
        # an error in the zero-point correction is caught: drop it and the two part ways
        bad = (acc - (128 - qx.zero_point).round().to(torch.int32) * w8.sum(1, dtype=torch.int32))
        y_bad = bad.float() * qx.scale * qw.scale.t() + lin.bias
        assert ((y_bad - y_sim).norm() / y_sim.norm()).item() > 1e-2
        assert ((sim(x) - ref).norm() / ref.norm()).item() < 0.02
        tens = Q.quantize_sim(m, 8, 8, a_mode="dynamic-tensor", w_granularity="tensor", skip=())
        assert ((tens(x) - ref).norm() / ref.norm()).item() < 0.02
        stat = Q.quantize_sim(m, 8, 8, a_mode="static", calib=[x[:64]], skip=())
        assert ((stat(x) - ref).norm() / ref.norm()).item() < 0.05


def test_llm_int8_decomposition_rescues_outlier_columns():
    torch.manual_seed(0)
    lin = nn.Linear(256, 64)
    x = torch.randn(32, 256)
    x[:, 7] *= 60                                     # one outlier feature dimension
    ref = lin(x)
    err = lambda y: ((y - ref).norm() / ref.norm()).item()  # noqa: E731
    plain = Q.Int8OutlierLinear(lin, threshold=None)
    dec = Q.Int8OutlierLinear(lin, threshold=6.0)
    e_plain, e_dec = err(plain(x)), err(dec(x))
    assert dec.last_outlier_fraction == pytest.approx(1 / 256)
    assert e_dec < e_plain / 3


def test_qat_linear_trains_and_prepare_qat():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
    qm = Q.prepare_qat(m, w_bits=2, skip=())
    assert all(isinstance(qm[i], Q.QATLinear) for i in (0, 2))
    w = qm[0].quantized_weight()
    assert all(len(torch.unique(r)) <= 3 for r in w)          # 2-bit symmetric: {-s, 0, s} per row
    x = torch.randn(8, 16)
    qm(x).sum().backward()
    assert qm[0].weight.grad is not None and qm[0].weight.grad.abs().sum() > 0


def test_deprecated_quantize_dynamic_is_still_there_and_silenced():
    """The book still times torch's own int8 ``nn.Linear`` on the CPU
    (``torch.ao.quantization.quantize_dynamic``, FBGEMM/oneDNN: bench's
    ``int8-dynamic-linear``, runtime_memory's ``int8 dynamic (CPU)``), deprecated in favour
    of torchao's ``quantize_`` (Part III explains why the successor does not replace it on
    the CPU yet).  This test fails the day a torch release removes it
    (scripts/check_newest.sh runs it on the newest torch), and fails if its warnings escape
    into a chapter's output."""
    import warnings

    from vramlib.hardware import bench
    from vramlib.measure.runtime import runtime_memory
    from vramlib.models import GPTConfig

    from torch.ao.quantization import quantize_dynamic  # noqa: F401  (gone -> ImportError)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = bench.bench_matmul("int8-dynamic-linear", 64, device="cpu", warmup=0, repeats=1,
                               min_seconds=0.0)
        cfg = GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, d_model=32)
        mem = runtime_memory(cfg, 1, "int8 dynamic (CPU)", "cpu")
    assert r.ok, r.note
    assert 0 < mem["model_bytes"] < runtime_memory(cfg, 1, "float", "cpu")["model_bytes"]
    assert not [w for w in caught if "quantiz" in str(w.message)], [str(w.message)
                                                                    for w in caught]
