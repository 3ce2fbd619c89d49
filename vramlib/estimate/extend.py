"""The serving, MoE and beyond-the-basics training options of ``vramlib estimate`` and the
live calculator: expert parallelism and capacity factor, quantized KV caches with scales,
CPU offload, FP8 training, sequence and context parallelism.

Each option is computed by the function of the chapter that derives it
(:mod:`~vramlib.estimate.moe`, :mod:`~vramlib.estimate.serving`,
:mod:`~vramlib.estimate.offload`) for the scenario of a :class:`~vramlib.estimate.Breakdown`,
and returned as an ``extensions`` section *beside* the breakdown: the breakdown's components
and peak are not changed (folding these into the peak needs the training and inference
estimators' phases; until then the section says what each option moves or adds).  An estimate
without any of these options has no ``extensions`` key, so its JSON is what it always was.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ._common import DTYPE_BYTES
from .config import ModelSpec
from .inference import weight_bytes
from .moe import dispatch_bytes, expert_parallel_bytes, moe_params, router_bytes
from .offload import fp8_training_bytes, fsdp_offload_bytes, parallel_activation_bytes
from .params import count_params
from .serving import kv_bytes_per_token, quantized_kv_bytes_per_token

__all__ = ["Extensions", "estimate_extensions"]

_OFFLOAD = ("none", "optimizer", "all")
_KV_SCALES = ("none", "token", "head")
#: Optimizer-state bytes per trained parameter (fp32 states; bitsandbytes' 8-bit states 2 B;
#: Adafactor's factored states are a few values per row and column, counted as 0 per parameter).
_OPTIM_BYTES = {"sgd": 0, "momentum": 4, "adam": 8, "adamw": 8, "adam8bit": 2, "paged-adamw": 8,
                "paged-adam8bit": 2, "adafactor": 0}


def _int(v: Any, what: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{what} must be an integer ≥ {lo}; got {v!r}")
    return v


@dataclass(frozen=True)
class Extensions:
    """The options; defaults mean "not used".  ``ep``: expert-parallel degree (MoE);
    ``capacity_factor``: fixed-capacity dispatch (MoE; ``None`` = dropless); ``kv_scales``:
    one fp32 scale per token (``"token"``) or per token and KV head (``"head"``) for an int8
    or fp8 cache; ``offload``: the training state kept in host memory (``"optimizer"``: the
    optimizer states; ``"all"``: FSDP2's ``CPUOffloadPolicy``, parameters, gradients and
    optimizer states); ``fp8``: torchao float8 linears; ``sp``: sequence parallelism over
    the TP group; ``cp``: context-parallel degree.

    Defined in Part I, "Offload, FP8 and sequence parallelism"."""

    ep: int = 1
    capacity_factor: float | None = None
    kv_scales: str = "none"
    offload: str = "none"
    fp8: bool = False
    sp: bool = False
    cp: int = 1

    def __post_init__(self) -> None:
        _int(self.ep, "ep")
        _int(self.cp, "cp")
        cf = self.capacity_factor
        if cf is not None and (isinstance(cf, bool) or not isinstance(cf, (int, float)) or cf <= 0):
            raise ValueError(f"capacity_factor must be a positive number or None; got {cf!r}")
        if self.kv_scales not in _KV_SCALES:
            raise ValueError(f"kv_scales must be one of {', '.join(_KV_SCALES)}; got {self.kv_scales!r}")
        if self.offload not in _OFFLOAD:
            raise ValueError(f"offload must be one of {', '.join(_OFFLOAD)}; got {self.offload!r}")
        for name in ("fp8", "sp"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False; got {getattr(self, name)!r}")

    @property
    def used(self) -> bool:
        return self != Extensions()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _moe(spec: ModelSpec, ext: Extensions, tokens: int, wbytes: float) -> dict[str, Any]:
    """Resident/active parameters, weights per GPU under ``ep``, router and dispatch bytes."""
    if spec.num_experts <= 1:
        raise ValueError(f"ep and capacity_factor apply to mixture-of-experts models; "
                         f"{spec.name} has no experts")
    p = moe_params(spec)
    ep = expert_parallel_bytes(spec, ext.ep, wbytes)
    E, k, d = spec.num_experts, spec.experts_per_token, spec.hidden_size
    return {"resident_params": p["resident"], "active_params": p["active"], "ep": ext.ep,
            "weights_per_gpu": ep["per_gpu"], "expert_weights_per_gpu": ep["experts"],
            "router_bytes_per_layer": router_bytes(tokens, E, k),
            "dispatch_bytes_per_layer": dispatch_bytes(tokens, d, E, k, ext.capacity_factor, 2),
            "capacity_factor": ext.capacity_factor}


def _kv(spec: ModelSpec, ext: Extensions, sc: dict[str, Any]) -> dict[str, Any]:
    """KV cache bytes per token with the codes and their scales."""
    if sc.get("kv_dtype") not in ("int8", "fp8"):
        raise ValueError(f"kv_scales needs an int8 or fp8 cache (kv_dtype int8 or fp8); "
                         f"got kv_dtype {sc.get('kv_dtype')!r}")
    q = quantized_kv_bytes_per_token(spec, 8, ext.kv_scales)
    return {"kv_scales": ext.kv_scales, "kv_bytes_per_token": q,
            "kv_bytes_per_token_codes_only": kv_bytes_per_token(spec, "int8"),
            "kv_bytes_per_token_bf16": kv_bytes_per_token(spec, "bf16")}


def _train(spec: ModelSpec, ext: Extensions, sc: dict[str, Any]) -> dict[str, Any]:
    """Offload, FP8, and the activations per GPU under TP/SP/CP (the book GPT's count)."""
    pc = count_params(spec)
    out: dict[str, Any] = {}
    wb = DTYPE_BYTES[sc["weights_dtype"]]
    if ext.offload != "none":
        world = sc["num_gpus"] if sc["zero"] == 3 else 1
        full = fsdp_offload_bytes(pc.total, world, layer_params=pc.per_layer, compute_bytes=2)
        if ext.offload == "optimizer":
            full = fsdp_offload_bytes(pc.total, world, master_bytes=0, grad_bytes=0)
        out["offload"] = {"what": ext.offload, **full}
    if ext.fp8:
        linear = pc.num_layers * (pc.attention_per_layer + pc.active_mlp_per_layer)
        out["fp8"] = {"scope": "whole model"}
        out["fp8"] |= fp8_training_bytes(pc.total, min(linear, pc.total), weight_bytes=wb,
                                        optim_bytes=_OPTIM_BYTES[sc["optimizer"]])
    if ext.sp or ext.cp > 1:
        args = (sc["batch"], sc["seq_len"], spec.hidden_size, spec.num_layers)
        tp = sc["tp"]
        base = parallel_activation_bytes(*args, tp=tp, bytes_per_elem=2)
        new = parallel_activation_bytes(*args, tp=tp, sp=ext.sp, cp=ext.cp, bytes_per_elem=2)
        out["parallel_activations"] = {"tp": tp, "sp": ext.sp, "cp": ext.cp,
                                       "book_gpt_bytes_tp_only": base, "book_gpt_bytes": new,
                                       "ratio": new / base}
    return out


def estimate_extensions(b: Any, spec: ModelSpec, ext: Extensions) -> dict[str, Any]:
    """The ``extensions`` section for breakdown ``b`` of model ``spec`` (empty when no option
    is used).  Options that do not apply to the stage raise ``ValueError`` naming them.

    Defined in Part I, "Offload, FP8 and sequence parallelism"."""
    if not ext.used:
        return {}
    sc, train = b.scenario, b.stage == "train"
    out: dict[str, Any] = {"options": ext.to_dict()}
    if ext.ep > 1 or ext.capacity_factor is not None:
        tokens = sc["batch"] * (sc["seq_len"] if train else sc["prompt_len"])
        wb = DTYPE_BYTES[sc["weights_dtype"]] if train else weight_bytes(
            count_params(spec), spec, sc["weights"], sc["group_size"], sc["scale_bytes"],
            sc["quantize_embeddings"]) / count_params(spec).total    # scales included
        out["moe"] = _moe(spec, ext, tokens, wb)
    if ext.kv_scales != "none":
        if train:
            raise ValueError("kv_scales applies to generation (--stage inference)")
        out["kv"] = _kv(spec, ext, sc)
    trainers = ext.offload != "none" or ext.fp8 or ext.sp or ext.cp > 1
    if trainers and not train:
        raise ValueError("offload, fp8, sp and cp apply to training (--stage train)")
    if trainers:
        if ext.sp and sc["tp"] == 1:
            raise ValueError("sp needs tp > 1: sequence parallelism splits over the TP group")
        out.update(_train(spec, ext, sc))
    return out
