"""Parameter counts of vramlib.estimate equal those of the real torch modules (Part I, "Anatomy of memory")."""

import importlib.util

import pytest
import torch

from vramlib.estimate import count_params, list_models, load_model_config, num_params
from vramlib.estimate.config import _bundled
from vramlib.models import GPT, GPTConfig


@pytest.mark.parametrize("kw", [
    dict(), dict(tie_weights=False), dict(n_kv_head=2), dict(bias=False), dict(n_layer=3, d_model=96, n_head=6, n_kv_head=3),
    dict(mlp_ratio=3, vocab_size=1000, block_size=64, tie_weights=False, bias=False),
])
def test_book_gpt_counts_match_torch(kw):
    cfg = GPTConfig(**kw)
    with torch.device("meta"):
        model = GPT(cfg)
    assert count_params(load_model_config(cfg)).total == model.num_params()
    assert num_params(model) == model.num_params()


def test_published_counts():
    # the figures the model cards quote, to the parameter
    assert num_params("gpt2") == 124_439_808
    assert num_params("llama-2-7b") == 6_738_415_616
    assert num_params("llama-3-8b") == 8_030_261_248
    assert num_params("mistral-7b") == 7_241_732_096
    assert num_params("mixtral-8x7b") == 46_702_792_704


def test_moe_active_params():
    pc = count_params(load_model_config("mixtral-8x7b"))
    assert 12.8e9 < pc.active < 13.0e9          # "12.9B active parameters"


def test_bundled_configs_name_their_source():
    for name in list_models():
        assert _bundled()[name]["_source"].startswith("https://huggingface.co/"), name
    assert len(list_models()) >= 15


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers not installed")
@pytest.mark.parametrize("name", ["gpt2", "pythia-160m", "qwen2-0.5b", "llama-3.2-1b", "mistral-7b", "mixtral-8x7b",
                                  "gemma-2b", "gemma-2-9b", "phi-3-mini"])   # one per family (all: the harness)
@pytest.mark.slow
def test_hf_counts_match_transformers_on_meta(name):
    import transformers

    cfg = transformers.AutoConfig.for_model(**{k: v for k, v in _bundled()[name].items() if not k.startswith("_")})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    assert count_params(load_model_config(name)).total == sum(p.numel() for p in model.parameters())
