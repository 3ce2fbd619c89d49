"""Gradient accumulation (issue 14, recipe r09): what autograd allocates from the second
micro-batch on, the estimator's phases for it, and the fit's reserve for it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vramlib.core.records import load_record
from vramlib.estimate import estimate_training
from vramlib.estimate.reserve import RESERVE_ACCUM, RESERVE_FLOOR, RESERVE_LARGEST, allocator_reserve, needed_bytes
from vramlib.measure.tracker import StorageTracker

V, D, T = 512, 16, 32
TINY = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "vocab_size": 32000}


class _LM(torch.nn.Module):
    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.emb, self.mlp = torch.nn.Embedding(V, D), torch.nn.Linear(D, D)
        self.head = None if tied else torch.nn.Linear(D, V, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        h = h + self.mlp(h)
        w = self.emb.weight if self.head is None else self.head.weight
        return F.cross_entropy(F.linear(h, w).flatten(0, 1), ids.flatten())


class _EmbeddingSized(StorageTracker):
    """Counts the new V × D storages live at once during one micro-batch."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.mine: set[int] = set()
        self.most = 0

    def on_alloc(self, key, nbytes, op, tensor):
        if tuple(tensor.shape) == (V, D):
            self.mine.add(key)
            self.most = max(self.most, len(self.mine))

    def on_free(self, key, nbytes):
        self.mine.discard(key)


def _micro_batches(tied: bool) -> list[tuple[int, int]]:
    torch.manual_seed(0)
    m, ids = _LM(tied), torch.randint(0, V, (1, T))
    out = []
    for _ in range(3):
        tr = _EmbeddingSized()
        with tr:
            m(ids).backward()
        out.append((tr.most, len(tr.mine)))     # (most live at once, still live after)
    return out


def test_accumulate_grad_adds_fresh_buffers():
    # torch/csrc/autograd/functions/accumulate_grad.h: the first gradient is stolen into .grad,
    # every later one is a fresh buffer added in place (variable_grad += new_grad)
    tied = _micro_batches(tied=True)
    assert tied[0] == (3, 1)                    # head's, embedding's, their sum: the sum is kept
    assert tied[1] == tied[2] == (3, 0)         # the same three, and all freed after the add
    untied = _micro_batches(tied=False)
    assert untied[0] == (2, 2) and untied[1] == untied[2] == (1, 0)


def _bd(accum: int, tied: bool):
    return estimate_training(dict(TINY, tie_word_embeddings=tied), 2, 64, weights_dtype="bf16",
                             grad_accum=accum)


@pytest.mark.parametrize("tied", [True, False])
def test_accumulation_phases(tied):
    from vramlib.estimate import load_model_config
    from vramlib.estimate.params import count_params
    one, two = _bd(1, tied), _bd(2, tied)
    grads = count_params(load_model_config(dict(TINY, tie_word_embeddings=tied))).total * 2   # bf16
    e = 32000 * 64 * 2                                   # one V × d bf16 gradient
    layer = (grads - e * (1 if tied else 2)) // 2        # one layer's gradients (2 layers)
    ph1, ph2 = one.phases, two.phases
    # before the backward, and in the loss's: the accumulated .grad on top, nothing else
    for k in ("forward (loss)", "backward (loss)"):
        assert ph2[k] - ph1[k] == grads
    assert ph2["optimizer step"] == ph1["optimizer step"]
    # the embedding's backward: .grad, then three new V × d buffers (tied) or one (untied);
    # a single micro-batch is counted as .grad plus one V × d (tied) or .grad alone
    assert ph2["backward (embedding)"] - ph1["backward (embedding)"] == (2 * e if tied else e)
    # a layer's backward: .grad, one layer's new gradients, and a tied head's held one
    head = 0 if tied else e
    held = e if tied else 0
    assert ph2["backward (first layer)"] - ph1["backward (first layer)"] == pytest.approx(
        grads + held + layer - head, abs=2)


def test_accumulation_reserve_and_r09():
    one, two = _bd(1, True), _bd(2, True)
    assert two.largest == one.largest > 0
    assert allocator_reserve(two) - allocator_reserve(one) == pytest.approx(RESERVE_ACCUM * two.largest, abs=1)
    assert allocator_reserve(one) == int(RESERVE_LARGEST["none"] * one.largest + RESERVE_FLOOR)
    # r09 (qwen2-0.5b, full bf16, accumulation 2) ran out of memory at the cap the fit asked for;
    # the fit must now ask for more than that cap and more than the run reserved uncapped
    from vramlib.estimate.fitcheck import recipe_estimate
    rec = load_record("recipes_gpu")
    accum = [c for c in rec.results["cases"] if c.get("grad_accum", 1) > 1 and "peak" in c]
    assert {c["name"] for c in accum} >= {"r09", "h09"}
    for c in accum:
        need = needed_bytes(recipe_estimate(c), 0)
        assert need > c["reserved_peak"], c["name"]
        if c["cap_oom"]:
            assert need > c["cap_bytes"], c["name"]
