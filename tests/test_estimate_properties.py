"""Properties of the estimator that must hold on every valid scenario (issue 14, item 5):
no component or phase is negative, checkpointing full ≤ selective ≤ none, ZeRO-3 ≤ 2 ≤ 1 ≤ DDP,
and the peak grows with batch and sequence length — over random models, recipes and every
parallel layout.  Hypothesis draws the scenarios; a failure prints the smallest one it found.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vramlib.estimate import dense_transformer, estimate_inference, estimate_training, list_models

EXAMPLES = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
DENSE_LAYERS = 8    # fewer layers than this and FSDP's two gathered layers outweigh what it shards


@st.composite
def models(draw, min_layers: int = 1):
    """A bundled model (any family) or a random dense transformer."""
    if draw(st.booleans()):
        name = draw(st.sampled_from([m for m in list_models() if m not in ("llama-3-70b", "llama-65b")]))
        return name
    heads = draw(st.sampled_from([1, 2, 4, 8, 16]))
    kv = draw(st.sampled_from([h for h in (1, 2, 4, 8, 16) if heads % h == 0]))
    return dense_transformer(hidden_size=heads * draw(st.sampled_from([16, 32, 64])),
                             num_layers=draw(st.integers(min_layers, 24)), num_heads=heads, num_kv_heads=kv,
                             vocab_size=draw(st.sampled_from([512, 32000, 151936])),
                             mlp=draw(st.sampled_from(["gated", "plain"])),
                             tie_embeddings=draw(st.booleans()))


@st.composite
def recipes(draw):
    """Training scenario keywords (a valid combination)."""
    wd = draw(st.sampled_from(["fp32", "bf16", "fp16"]))
    kw = dict(weights_dtype=wd, optimizer=draw(st.sampled_from(["sgd", "momentum", "adam", "adamw", "adam8bit",
                                                                "adafactor"])),
              attention=draw(st.sampled_from(["sdpa", "eager"])), grad_accum=draw(st.sampled_from([1, 2, 4])),
              trainable=draw(st.sampled_from(["all", "last-k", "lora", "qlora"])),
              keep_logits=draw(st.booleans()), device=draw(st.sampled_from(["cuda", "cpu"])))
    if wd == "fp32":
        kw["autocast"] = draw(st.sampled_from(["none", "bf16"]))
    if wd != "fp32":
        kw["master_weights"] = draw(st.booleans())
    if kw["trainable"] == "last-k":
        # with one trained block, full checkpointing keeps its input *and* recomputes it: more
        # than selective; the order below needs at least two checkpointed blocks
        kw["last_k"] = draw(st.integers(2, 4))
    if kw["trainable"] in ("lora", "qlora"):
        kw["lora_targets"] = "attn"          # present in every architecture
        kw["qlora_recipe"] = draw(st.sampled_from(["peft", "bf16"]))
    return kw


@st.composite
def layouts(draw, tensor_parallel: bool = False):
    """num_gpus = dp × tp × pp, every ZeRO stage; ``tensor_parallel`` also draws tp 2 or 4
    (a test then skips models whose KV heads tp does not divide: not a valid layout)."""
    dp = draw(st.sampled_from([1, 2, 4, 8]))
    pp = draw(st.sampled_from([1, 2]))
    tp = draw(st.sampled_from([1, 2, 4])) if tensor_parallel else 1
    return dict(num_gpus=dp * pp * tp, zero=draw(st.sampled_from([0, 1, 2, 3])), tp=tp, pp=pp)


def _train(model, b, s, **kw):
    from vramlib.estimate import load_model_config
    spec = load_model_config(model)
    s = min(s, spec.max_position_embeddings)
    if "last_k" in kw:
        kw = dict(kw, last_k=min(kw["last_k"], spec.num_layers))
    return estimate_training(spec, b, s, **kw)


def _nonnegative(br) -> None:
    assert all(v >= 0 for v in br.components.values()), br.components
    assert all(v >= 0 for v in br.phases.values()), br.phases
    assert br.largest >= 0 and br.peak == max(br.phases.values())


@EXAMPLES
@given(models(), recipes(), layouts(tensor_parallel=True), st.integers(1, 16),
       st.sampled_from([64, 256, 1024, 8192]), st.sampled_from(["none", "selective", "full"]))
def test_no_negative_bytes_in_any_layout(model, kw, lay, b, s, ck):
    from vramlib.estimate import load_model_config
    spec = load_model_config(model)
    if lay["pp"] > spec.num_layers or (spec.num_kv_heads % lay["tp"] and lay["tp"] % spec.num_kv_heads):
        return                                   # not a valid layout for this model
    _nonnegative(_train(model, b, s, checkpointing=ck, **lay, **kw))


@EXAMPLES
@given(st.sampled_from([2, 4, 8]), st.sampled_from([1024, 4096, 8192]), st.sampled_from(["sdpa", "eager"]),
       st.integers(1, 4), st.sampled_from(["none", "selective", "full"]))
def test_tensor_parallel_never_negative(tp, s, attn, b, ck):
    """The reported bug: TP with selective checkpointing subtracted the unsharded attention."""
    br = estimate_training("llama-3-8b", b, s, num_gpus=tp, tp=tp, checkpointing=ck, attention=attn,
                           weights_dtype="bf16")
    _nonnegative(br)


@EXAMPLES
@given(models(min_layers=DENSE_LAYERS), recipes(), layouts(), st.integers(1, 8),
       st.sampled_from([128, 512, 2048]))
def test_checkpointing_order(model, kw, lay, b, s):
    from vramlib.estimate import load_model_config
    if load_model_config(model).num_layers < DENSE_LAYERS or lay["pp"] > 1:
        return
    full, sel, none = (_train(model, b, s, checkpointing=c, **lay, **kw).peak for c in ("full", "selective", "none"))
    # full checkpointing keeps each block's input; while a block is recomputed that input is
    # alive beside the block's activations, so where activations are not what peaks (tiny
    # batches) full can exceed the others by one block input: tokens × d × bytes, no more
    spec = load_model_config(model)
    x = b * min(s, spec.max_position_embeddings) * spec.hidden_size * 4
    assert full <= sel + x and sel <= none, (full, sel, none)


@EXAMPLES
@given(models(min_layers=DENSE_LAYERS), recipes(), layouts(tensor_parallel=True), st.integers(1, 8),
       st.sampled_from([128, 512, 2048]))
def test_checkpointing_order_tensor_and_pipeline_parallel(model, kw, lay, b, s):
    """The same order with TP (2 or 4) and PP (2 stages) in the layout."""
    from vramlib.estimate import load_model_config
    spec = load_model_config(model)
    if (spec.num_layers < DENSE_LAYERS or lay["pp"] > spec.num_layers
            or (spec.num_kv_heads % lay["tp"] and lay["tp"] % spec.num_kv_heads)):
        return                                   # not a valid layout for this model
    full, sel, none = (_train(model, b, s, checkpointing=c, **lay, **kw).peak for c in ("full", "selective", "none"))
    x = b * min(s, spec.max_position_embeddings) * spec.hidden_size * 4
    assert full <= sel + x and sel <= none, (full, sel, none, lay)


@EXAMPLES
@given(models(min_layers=DENSE_LAYERS), recipes(), st.sampled_from([2, 4, 8]), st.integers(1, 8),
       st.sampled_from([128, 1024]))
def test_zero_stages_order(model, kw, dp, b, s):
    from vramlib.estimate import load_model_config
    if load_model_config(model).num_layers < DENSE_LAYERS:
        return
    z3, z2, z1, ddp = (_train(model, b, s, num_gpus=dp, zero=z, **kw).peak for z in (3, 2, 1, 0))
    assert z3 <= z2 <= z1 <= ddp, (z3, z2, z1, ddp)


@EXAMPLES
@given(models(), recipes(), layouts(), st.integers(1, 32), st.sampled_from([64, 256, 1024]),
       st.sampled_from(["none", "selective", "full"]))
def test_monotone_in_batch_and_length(model, kw, lay, b, s, ck):
    from vramlib.estimate import load_model_config
    if lay["pp"] > load_model_config(model).num_layers:
        return
    base = _train(model, b, s, checkpointing=ck, **lay, **kw).peak
    assert _train(model, b + 1, s, checkpointing=ck, **lay, **kw).peak >= base
    longer = min(2 * s, load_model_config(model).max_position_embeddings)
    assert _train(model, b, longer, checkpointing=ck, **lay, **kw).peak >= base


@EXAMPLES
@given(models(), st.integers(1, 64), st.sampled_from([16, 512, 2048]), st.sampled_from([0, 1, 64]),
       st.sampled_from(["bf16", "int8", "int4", "nf4", "fp8"]), st.sampled_from(["dynamic", "static"]))
def test_inference_nonnegative_and_monotone(model, b, p, n, weights, cache):
    from vramlib.estimate import load_model_config
    limit = load_model_config(model).max_position_embeddings
    p = min(p, limit - n - 1)
    if p < 1:
        return
    a = estimate_inference(model, b, p, n, weights=weights, cache=cache)
    _nonnegative(a)
    assert estimate_inference(model, b + 1, p, n, weights=weights, cache=cache).peak >= a.peak
    assert estimate_inference(model, b, p + 1, n, weights=weights, cache=cache).peak >= a.peak
