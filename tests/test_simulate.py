"""vramlib.measure.simulate: fake-tensor simulation against known byte counts and against the exact
storage accounting of the same step run for real on the CPU."""

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from vramlib.measure import measure  # noqa: E402
from vramlib.models import GPT, GPTConfig  # noqa: E402
from vramlib.measure.simulate import CATEGORIES, Simulator, decode_loop, mark, phase, simulate  # noqa: E402
from vramlib.measure.simulate import _takes  # noqa: E402


def test_forward_of_a_linear_layer_exact_bytes():
    def fwd():
        lin = torch.nn.Linear(256, 512)            # W 512x256 fp32 = 524288 B, b = 2048 B
        x = torch.empty(8, 256)                    # 8192 B
        with torch.no_grad():
            return lin(x)                          # 8x512 fp32 = 16384 B
    res = simulate(fwd)
    assert res.peak == 524288 + 2048 + 8192 + 16384
    assert res.breakdown["parameters"] == 524288 + 2048
    assert res.breakdown["temporaries"] == 8192 + 16384
    assert res.end == 16384                        # only the returned output survives
    assert tuple(res.result.shape) == (8, 512)


def test_linear_backward_saved_input_and_gradients():
    def step():
        lin = torch.nn.Linear(256, 512)
        x = torch.empty(8, 256)
        y = lin(x)                                 # saves x (an activation) and W (a parameter)
        y.sum().backward()
        return lin
    res = simulate(step)
    s = Simulator()
    with s:
        lin = torch.nn.Linear(256, 512)
        x = torch.empty(8, 256)
        y = lin(x)
        r = s.result()
        assert r.breakdown["activations"] == 8192  # x, saved for the weight gradient
        assert r.breakdown["parameters"] == 524288 + 2048
        y.sum().backward()
        r = s.result()
        assert r.breakdown["gradients"] == 524288 + 2048
    # peak: W, b, x, y, the loss and its 4-byte seed gradient, dW, db (dy is an expand of
    # the seed: no storage of its own)
    assert res.peak == 524288 + 2048 + 8192 + 16384 + 4 + 4 + 524288 + 2048
    assert res.peak == measure(step, device="cpu").peak


def _gpt_train(cfg, steps=2, autocast=False, ckpt=False):
    def step():
        torch.manual_seed(0)
        model = GPT(cfg)
        opt = torch.optim.AdamW(model.parameters(), foreach=False)
        x = torch.randint(0, cfg.vocab_size, (4, cfg.block_size))
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                if ckpt:
                    h = model.drop(model.wte(x) + model.wpe(torch.arange(x.shape[1])))
                    for b in model.blocks:
                        h = torch.utils.checkpoint.checkpoint(b, h, use_reentrant=False)
                    logits = model.lm_head(model.ln_f(h))
                    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), x.view(-1))
                else:
                    loss = model(x, x)[1]
            loss.backward()
            opt.step()
            opt.zero_grad()
        return model, opt
    return step


@pytest.mark.slow
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", ["fp32", "autocast", "ckpt"])
def test_gpt_training_simulated_equals_measured(attn, mode):
    cfg = GPTConfig(vocab_size=128, block_size=32, n_layer=2, n_head=2, d_model=64, attn=attn)
    fn = _gpt_train(cfg, autocast=mode == "autocast", ckpt=mode == "ckpt")
    sim, real = simulate(fn), measure(fn, device="cpu")
    assert sim.peak == real.peak
    assert sim.end == real.end


@pytest.mark.slow
def test_training_categories_and_phases():
    cfg = GPTConfig(vocab_size=128, block_size=32, n_layer=2, n_head=2, d_model=64)
    res = simulate(_gpt_train(cfg))
    model, opt = res.result
    P = model.num_params()
    phases = [p for p, _, _ in res.phases()]
    for p in ("setup", "forward 1", "backward 1", "optimizer step 1", "forward 2", "backward 2", "optimizer step 2"):
        assert p in phases
    # after the step: parameters, AdamW's two moments (+ a 4-byte step counter per tensor)
    last = res.events[-1][2]
    assert last["parameters"] == 4 * P
    assert last["optimizer"] == 8 * P + 4 * len(list(model.parameters()))
    assert last["gradients"] == 0            # zero_grad() set them to None
    assert sum(res.breakdown.values()) == res.peak
    assert sum(res.by_module.values()) == res.peak
    assert res.peak_phase in phases
    # backward of step 1 holds the gradients at its end
    assert max(ev[2]["gradients"] for ev in res.events) == 4 * P


def test_modules_are_named_and_activations_attributed():
    def fwd():
        net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 8))
        x = torch.empty(16, 64)
        return net(x)
    res = simulate(fwd)
    assert res.by_module["Sequential.0"] == 128 * 64 * 4 + 128 * 4 + 16 * 128 * 4  # W, b, and its output
    # saved for backward: the input (for the 1st weight's gradient) and ReLU's output (for
    # ReLU's backward and the 2nd weight's gradient: one storage, counted once)
    assert res.breakdown["activations"] == 16 * 64 * 4 + 16 * 128 * 4


def test_round_to_mimics_the_cuda_allocator():
    def f():
        a = torch.empty(10)        # 40 B -> 512
        b = torch.empty(200)       # 800 B -> 1024
        return a, b
    assert simulate(f).peak == 840
    assert simulate(f, round_to=512).peak == 512 + 1024


def test_mark_phase_and_plot():
    def f():
        with phase("prefill"):
            cache = torch.empty(1024)
            mark(cache, "kv_cache")
            tmp = torch.empty(512)
            del tmp
        return cache
    res = simulate(f)
    assert res.breakdown == {**{c: 0 for c in CATEGORIES}, "kv_cache": 4096, "temporaries": 2048}
    assert res.peak_phase == "prefill"
    ax = res.plot(unit="KiB")
    assert ax.get_ylabel() == "live tensor memory (KiB)"
    assert "kv_cache" in res.summary() and "prefill" in str(res)


def test_outside_a_simulation_mark_and_phase_do_nothing():
    t = torch.zeros(3)
    assert mark(t, "activations") is None
    with phase("x"):
        t.add_(1)
    assert torch.equal(t, torch.ones(3))                      # the block ran, unchanged
    with pytest.raises(ValueError, match="unknown category"):   # still checked outside
        mark(t, "kv cache")

    def step(label):
        x = torch.zeros(1024)
        if label:
            mark(x, "kv_cache")
        with phase("use"):
            return x + 1

    inside = simulate(lambda: step(True), device="cpu")
    plain = simulate(lambda: step(False), device="cpu")
    assert inside.breakdown["kv_cache"] == 4096 and plain.breakdown["kv_cache"] == 0


def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="callable"):
        simulate(3)
    with pytest.raises(ValueError, match="round_to"):
        simulate(lambda: None, round_to=0)
    with pytest.raises(ValueError, match="device"):
        simulate(lambda: None, device="mps")
    with pytest.raises(ValueError, match="category"):
        mark(torch.zeros(1), "weights")
    with pytest.raises(ValueError, match="phase"):
        with phase(""):
            pass


def test_patches_are_undone():
    import torch.optim.optimizer as o
    from torch._subclasses.fake_tensor import FakeTensor
    swap = torch.utils.swap_tensors
    simulate(lambda: torch.nn.Linear(4, 4).to(torch.bfloat16))
    assert FakeTensor not in o._foreach_supported_types and torch.utils.swap_tensors is swap
    assert type(torch.empty(1)) is torch.Tensor   # fake mode left


# -- Hugging Face transformers models, built from configs (random weights, no download) --------

transformers = pytest.importorskip("transformers")


def _llama_cfg(**kw):
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                                   max_position_embeddings=256, **kw)
    cfg._attn_implementation = "sdpa"
    return cfg


def _hf_train(cfg, dtype=torch.float32, autocast=False, ckpt=False):
    def step():
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(cfg).to(dtype)
        if ckpt:  # transformers 5.24+ name it activation_checkpointing_enable
            getattr(model, "activation_checkpointing_enable",
                    model.gradient_checkpointing_enable)()
        model.train()
        opt = torch.optim.AdamW(model.parameters())
        x = torch.randint(0, cfg.vocab_size, (2, 64))
        for _ in range(2):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(input_ids=x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    return step


@pytest.mark.slow
@pytest.mark.parametrize("case", ["fp32", "bf16", "autocast", "ckpt", "use_cache", "gpt2", "qwen2"])
def test_hf_training_simulated_equals_measured(case):
    if case == "gpt2":
        cfg = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=500, n_positions=128)
        cfg._attn_implementation = "sdpa"
    elif case == "qwen2":
        cfg = transformers.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=500, use_cache=False)
        cfg._attn_implementation = "sdpa"
    else:
        cfg = _llama_cfg(use_cache=case == "use_cache")
    fn = _hf_train(cfg, dtype=torch.bfloat16 if case == "bf16" else torch.float32,
                   autocast=case == "autocast", ckpt=case == "ckpt")
    assert simulate(fn).peak == measure(fn, device="cpu").peak


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_hf_decode_loop_simulated_equals_measured(cache):
    def gen():
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(_llama_cfg()).eval()
        x = torch.randint(0, 1000, (3, 40))
        return decode_loop(model, x, 6, cache=cache)
    sim, real = simulate(gen), measure(gen, device="cpu")
    assert sim.peak == real.peak
    assert tuple(sim.result.shape) == tuple(real.result.shape) == (3, 46)
    assert sim.breakdown["kv_cache"] > 0
    assert {"prefill", "decode"} <= {p for p, _, _ in sim.phases()}


def test_decode_loop_bad_input():
    with pytest.raises(ValueError, match="cache"):
        decode_loop(torch.nn.Linear(1, 1), torch.zeros(1, 1, dtype=torch.long), 2, cache="paged")


@pytest.mark.slow
def test_validation_script_runs_on_cpu(tmp_path):
    import json
    import sys
    sys.path.insert(0, "benchmarks")
    from validate_simulate import main
    out = tmp_path / "v.json"
    res = main(["--device", "cpu", "--small", "--only", "train llama-tiny    autocast-bf16 ckpt=y", "--out", str(out)])
    row, = res["rows"]
    assert row["rel_error"] == 0 and row["real_peak"] == row["sim_peak"] > 0
    saved = json.loads(out.read_text())
    assert saved["schema_version"] == 1 and saved["provenance"]["torch"] == torch.__version__
    assert saved["results"]["summary"]["within_3_percent"] == 1


# -- against torch's own MemTracker -----------------------------------------------------
def _memtracker_peak(make_step):
    from torch.distributed._tools.mem_tracker import MemTracker

    model, opt, step = make_step()
    mt = MemTracker()
    mt.track_external(model, opt)
    with mt:
        step()                                   # first step: creates the optimizer states
        mt.reset_mod_stats()                     # MemTracker's per-module stats are per step
        step()
    return mt.get_tracker_snapshot("peak")[torch.device("cpu")]


def _gpt_training(optimizer: str):
    def make_step():
        torch.manual_seed(0)
        cfg = GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=4, d_model=32)
        model = GPT(cfg)
        opt = (torch.optim.Adam(model.parameters(), foreach=False) if optimizer == "adam"
               else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=False))
        x = torch.randint(0, 64, (2, 32))

        def step():
            loss = model(x, x)[1]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return model, opt, step
    return make_step


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "sgd-momentum"])
def test_simulator_agrees_with_torch_memtracker(optimizer):
    """vramlib.measure.simulate and torch.distributed._tools.mem_tracker.MemTracker on a CPU training
    step of the book's GPT: the same peak to the byte, and the same weights and optimizer
    states; activations and temporaries together the same (the two split a few bytes of
    autograd's bookkeeping differently)."""
    from torch.distributed._tools.mem_tracker import _MemRefType as R

    make_step = _gpt_training(optimizer)
    ref = _memtracker_peak(make_step)

    def run():
        step = make_step()[2]
        step()
        step()
    sim = simulate(run, device="cpu")
    assert ref["Total"] > 100_000 and ref[R.OPT] > 0
    assert sim.peak == ref["Total"]
    assert sim.breakdown["parameters"] == ref[R.PARAM]
    assert sim.breakdown["optimizer"] == ref[R.OPT]
    assert sim.breakdown["gradients"] == ref[R.GRAD]
    assert (sim.breakdown["activations"] + sim.breakdown["temporaries"]
            == ref[R.ACT] + ref[R.TEMP])


def test_decode_loop_passes_the_cache_under_the_name_forward_declares():
    """transformers removes ``past_key_values=`` (5.40) for ``cache=``: decode_loop must pass
    the cache as ``cache=`` to a model whose forward declares it, and generate the same ids."""
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(_llama_cfg()).eval()

    class NewAPI(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config, self.dtype, self.seen = inner, inner.config, inner.dtype, []

        def forward(self, input_ids, attention_mask, position_ids, use_cache, cache_position,
                    logits_to_keep, cache):
            self.seen.append(cache)
            # the inner model takes the cache under its own name (5.24+: ``cache``)
            name = "cache" if _takes(self.inner.forward, "cache") else "past_key_values"
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids, use_cache=use_cache,
                              cache_position=cache_position, logits_to_keep=logits_to_keep,
                              **{name: cache})

    x = torch.randint(0, 1000, (2, 12))
    wrapped = NewAPI(model)
    assert torch.equal(decode_loop(wrapped, x, 4), decode_loop(model, x, 4))
    assert len(wrapped.seen) == 4 and all(c is wrapped.seen[0] for c in wrapped.seen)
