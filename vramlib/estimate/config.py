"""Model architectures for the estimator: Hugging Face ``config.json`` files, bundled configs,
the book's own :class:`vramlib.models.GPTConfig`, and generic dense transformers by size.

Every source is normalised into one :class:`ModelSpec`, the small set of numbers that the
parameter count and the memory formulas need (widths, heads, KV heads, head size, MLP kind,
norms, biases, tying, experts, sliding window).

Defined in Part I, "Anatomy of memory" (what a model's shape says about its bytes) and
Part I, "The calculator" (loading a model by name or config).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from ._common import MAX_SIZE, short

__all__ = ["ModelSpec", "FAMILIES", "load_model_config", "list_models", "from_hf_config",
           "dense_transformer"]

#: ``model_type`` values of Hugging Face configs that the estimator understands.
FAMILIES = ("llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "gpt2", "gpt_neox", "mixtral", "qwen2_moe")

_MLP_KINDS = ("gated", "plain")
_NORMS = ("rmsnorm", "layernorm")
_POS = ("rope", "learned")


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer, reduced to what memory depends on.

    ``mlp="gated"`` is SwiGLU/GeGLU (gate, up, down matrices); ``"plain"`` is
    fc → activation → proj.  ``fused_qkv`` / ``fused_gate_up`` say whether the projections
    are one matrix (GPT-2, GPT-NeoX, Phi-3, the book's GPT), which changes the activations
    kept for backward, not the parameter count.  ``num_experts`` > 1 is a mixture of experts
    with ``experts_per_token`` experts active per token, each of width ``intermediate_size``;
    ``shared_expert_size`` > 0 adds Qwen-MoE's shared expert (a gated MLP of that width that
    every token passes, scaled by a sigmoid gate ``d → 1``).  ``logit_softcapping`` is
    Gemma-2's ``cap · tanh(logits / cap)`` on the LM head's output.

    Defined in Part I, "Anatomy of memory".
    """

    name: str
    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    mlp: str = "gated"
    activation: str = "silu"
    norm: str = "rmsnorm"
    norm_bias: bool = False
    norms_per_layer: int = 2
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    fused_qkv: bool = False
    fused_gate_up: bool = False
    tie_embeddings: bool = False
    position: str = "rope"
    max_position_embeddings: int = 2048
    num_experts: int = 1
    experts_per_token: int = 1
    sliding_window: int | None = None
    shared_expert_size: int = 0
    logit_softcapping: bool = False
    parallel_residual: bool = False
    dropout: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        for f in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                  "intermediate_size", "norms_per_layer", "max_position_embeddings", "num_experts",
                  "experts_per_token"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v > MAX_SIZE:
                raise ValueError(f"model {self.name!r}: {f} must be a positive integer ≤ 2**40, got {short(v)}")
        if isinstance(self.shared_expert_size, bool) or not isinstance(self.shared_expert_size, int) \
                or not 0 <= self.shared_expert_size <= MAX_SIZE:
            raise ValueError(f"model {self.name!r}: shared_expert_size must be an integer ≥ 0 (0: none), "
                             f"got {short(self.shared_expert_size)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"model {self.name!r}: num_heads ({self.num_heads}) must be a multiple of "
                             f"num_key_value_heads ({self.num_kv_heads})")
        if self.experts_per_token > self.num_experts:
            raise ValueError(f"model {self.name!r}: experts_per_token ({self.experts_per_token}) exceeds "
                             f"num_experts ({self.num_experts})")
        if self.mlp not in _MLP_KINDS:
            raise ValueError(f"model {self.name!r}: mlp must be one of {_MLP_KINDS}, got {self.mlp!r}")
        if self.norm not in _NORMS:
            raise ValueError(f"model {self.name!r}: norm must be one of {_NORMS}, got {self.norm!r}")
        if self.position not in _POS:
            raise ValueError(f"model {self.name!r}: position must be one of {_POS}, got {self.position!r}")
        if self.sliding_window is not None and (isinstance(self.sliding_window, bool) or
                                                not isinstance(self.sliding_window, int) or self.sliding_window <= 0):
            raise ValueError(f"model {self.name!r}: sliding_window must be a positive integer or None")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"model {self.name!r}: dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def q_dim(self) -> int:
        """Width of the query projection, ``num_heads × head_dim`` (≠ hidden_size for Gemma)."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the key (and of the value) projection, ``num_kv_heads × head_dim``."""
        return self.num_kv_heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> "ModelSpec":
        """A copy with some fields changed (validated again)."""
        d = asdict(self)
        unknown = set(changes) - set(d)
        if unknown:
            raise ValueError(f"unknown ModelSpec fields {sorted(unknown)}; allowed: {sorted(d)}")
        d.update(changes)
        return ModelSpec(**d)


def _int(cfg: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            v = cfg[k]
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"config field {k!r} must be a positive integer; got {short(v)}")
            if v > MAX_SIZE:
                raise ValueError(f"config field {k!r} = {short(v)} is too large (at most 2**40); check the config")
            return v
    if default is None:
        raise ValueError(f"config lacks {keys[0]!r} (also tried {list(keys[1:])})" if len(keys) > 1
                         else f"config lacks {keys[0]!r}")
    return default


def _bool(cfg: Mapping[str, Any], key: str, default: bool) -> bool:
    """A boolean field: JSON ``true``/``false``, or the strings ``"true"``/``"false"`` (any
    case); anything else is an error naming the field (``"false"`` is not taken as true)."""
    v = cfg.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    raise ValueError(f"config field {key!r} must be true or false; got {short(v)}")


def _float(cfg: Mapping[str, Any], key: str, default: float) -> float:
    v = cfg.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        raise ValueError(f"config field {key!r} must be a probability in [0, 1); got {short(v)}")
    return float(v)


def _gpt2_spec(cfg: Mapping[str, Any], name: str, src: str) -> ModelSpec:
    d = _int(cfg, "n_embd", "hidden_size")
    h = _int(cfg, "n_head", "num_attention_heads")
    drop = max(_float(cfg, k, 0.1) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop"))
    return ModelSpec(name=name, family="gpt2", vocab_size=_int(cfg, "vocab_size"), hidden_size=d,
                     num_layers=_int(cfg, "n_layer", "num_hidden_layers"), num_heads=h, num_kv_heads=h,
                     head_dim=max(1, d // h), intermediate_size=_int(cfg, "n_inner", default=4 * d), mlp="plain",
                     activation="gelu_tanh", norm="layernorm", norm_bias=True, qkv_bias=True, o_bias=True,
                     mlp_bias=True, fused_qkv=True, tie_embeddings=_bool(cfg, "tie_word_embeddings", True),
                     position="learned", max_position_embeddings=_int(cfg, "n_positions", "n_ctx"),
                     dropout=drop, source=src)


def _common(cfg: Mapping[str, Any], name: str, src: str) -> dict[str, Any]:
    """The fields every Llama-like family names the same way."""
    d = _int(cfg, "hidden_size")
    h = _int(cfg, "num_attention_heads")
    return dict(name=name, family=cfg["model_type"], vocab_size=_int(cfg, "vocab_size"), hidden_size=d,
                num_layers=_int(cfg, "num_hidden_layers"), num_heads=h,
                num_kv_heads=_int(cfg, "num_key_value_heads", default=h),
                head_dim=_int(cfg, "head_dim", default=max(1, d // h)),
                intermediate_size=_int(cfg, "intermediate_size"),
                max_position_embeddings=_int(cfg, "max_position_embeddings", default=2048), source=src,
                dropout=_float(cfg, "attention_dropout", 0.0))


def _family_fields(cfg: Mapping[str, Any], mt: str) -> dict[str, Any]:
    """What differs by ``model_type`` (MLP kind, norms, biases, tying, window, experts)."""
    tie = lambda default: _bool(cfg, "tie_word_embeddings", default)  # noqa: E731
    if mt == "gpt_neox":
        bias = _bool(cfg, "attention_bias", True)
        return dict(mlp="plain", activation="gelu", norm="layernorm", norm_bias=True, qkv_bias=bias, o_bias=bias,
                    mlp_bias=True, fused_qkv=True, tie_embeddings=tie(False),
                    parallel_residual=_bool(cfg, "use_parallel_residual", True))
    if mt == "phi3":
        return dict(fused_qkv=True, fused_gate_up=True, tie_embeddings=tie(False),
                    sliding_window=cfg.get("sliding_window"))
    if mt in ("gemma", "gemma2"):
        act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
        bias = _bool(cfg, "attention_bias", False)
        cap = cfg.get("final_logit_softcapping", 30.0 if mt == "gemma2" else None)   # Gemma2Config's default
        return dict(activation="gelu_tanh" if "tanh" in str(act) else "gelu",
                    norms_per_layer=4 if mt == "gemma2" else 2, logit_softcapping=cap is not None,
                    qkv_bias=bias, o_bias=bias, tie_embeddings=tie(True),
                    sliding_window=cfg.get("sliding_window") if mt == "gemma2" else None)
    if mt == "qwen2":
        sw = cfg.get("sliding_window") if _bool(cfg, "use_sliding_window", False) else None
        return dict(qkv_bias=True, o_bias=False, tie_embeddings=tie(False), sliding_window=sw)
    if mt == "qwen2_moe":
        return _qwen2_moe_fields(cfg)
    bias = _bool(cfg, "attention_bias", False)
    out = dict(qkv_bias=bias, o_bias=bias, mlp_bias=_bool(cfg, "mlp_bias", False), tie_embeddings=tie(False),
               sliding_window=cfg.get("sliding_window") if mt in ("mistral", "mixtral") else None)
    if mt == "mixtral":
        out.update(num_experts=_int(cfg, "num_local_experts"), experts_per_token=_int(cfg, "num_experts_per_tok"))
    return out


def _qwen2_moe_fields(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Qwen-MoE (``Qwen2MoeSparseMoeBlock``): ``num_experts`` routed experts of width
    ``moe_intermediate_size``, ``num_experts_per_tok`` per token, and a shared expert of width
    ``shared_expert_intermediate_size`` with its sigmoid gate.  Only every layer sparse is
    described (``decoder_sparse_step`` 1, no ``mlp_only_layers``: Qwen1.5-MoE and Qwen2-MoE)."""
    step, dense = cfg.get("decoder_sparse_step", 1), cfg.get("mlp_only_layers") or []
    if step != 1 or dense:
        raise ValueError(f"config fields 'decoder_sparse_step' ({short(step)}) / 'mlp_only_layers' "
                         f"({short(dense)}): only models whose every layer is sparse (1 and []) are described")
    sw = cfg.get("sliding_window") if _bool(cfg, "use_sliding_window", False) else None
    return dict(qkv_bias=_bool(cfg, "qkv_bias", True), o_bias=False, tie_embeddings=_bool(cfg, "tie_word_embeddings",
                                                                                      False),
                sliding_window=sw, num_experts=_int(cfg, "num_experts"),
                experts_per_token=_int(cfg, "num_experts_per_tok"),
                intermediate_size=_int(cfg, "moe_intermediate_size"),
                shared_expert_size=_int(cfg, "shared_expert_intermediate_size", default=0) if
                cfg.get("shared_expert_intermediate_size") else 0)


def from_hf_config(cfg: Mapping[str, Any], name: str | None = None) -> ModelSpec:
    """Normalise a Hugging Face ``config.json`` dict (``model_type`` in :data:`FAMILIES`).
    Every field is checked: sizes are positive integers up to :data:`MAX_SIZE`, booleans are
    booleans (or ``"true"``/``"false"``); a wrong one raises ``ValueError`` naming it.

    Defined in Part I, "The calculator".
    """
    if not isinstance(cfg, Mapping):
        raise TypeError(f"a model config must be a dict, got {type(cfg).__name__}")
    mt = cfg.get("model_type")
    if mt not in FAMILIES:
        raise ValueError(f"model_type {mt!r} is not supported; supported: {', '.join(FAMILIES)} "
                         "(or describe it with dense_transformer(...))")
    name = str(name or cfg.get("_name") or cfg.get("_name_or_path") or mt)
    src = str(cfg.get("_source", ""))
    try:
        if mt == "gpt2":
            return _gpt2_spec(cfg, name, src)
        return ModelSpec(**{**_common(cfg, name, src), **_family_fields(cfg, mt)})
    except (TypeError, ZeroDivisionError, AttributeError) as e:  # wrong value types inside the dict
        raise ValueError(f"config for {name!r} has a field of the wrong type or value: {e}") from None


def from_gpt_config(cfg: Any, name: str = "book-gpt") -> ModelSpec:
    """The book's :class:`vramlib.models.GPTConfig` as a :class:`ModelSpec`.

    Defined in Part I, "Pretraining"."""
    return ModelSpec(name=name, family="gpt", vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
                     num_layers=cfg.n_layer, num_heads=cfg.n_head, num_kv_heads=cfg.n_kv_head,
                     head_dim=cfg.d_model // cfg.n_head, intermediate_size=cfg.mlp_ratio * cfg.d_model,
                     mlp="plain", activation="gelu", norm="layernorm", norm_bias=cfg.bias, qkv_bias=cfg.bias,
                     o_bias=cfg.bias, mlp_bias=cfg.bias, fused_qkv=True, tie_embeddings=cfg.tie_weights,
                     position="learned", max_position_embeddings=cfg.block_size, dropout=float(cfg.dropout),
                     source="vramlib.models.GPTConfig")


def dense_transformer(hidden_size: int, num_layers: int, num_heads: int, vocab_size: int = 32000,
                      intermediate_size: int | None = None, num_kv_heads: int | None = None,
                      head_dim: int | None = None, mlp: str = "gated", tie_embeddings: bool = False,
                      name: str = "dense") -> ModelSpec:
    """A generic Llama-style dense transformer given by its sizes (RMSNorm, RoPE, no biases).

    ``intermediate_size`` defaults to 8/3·d rounded up to a multiple of 256 (gated) or 4·d (plain).
    Defined in Part I, "The calculator"."""
    for k, v in (("hidden_size", hidden_size), ("num_layers", num_layers), ("num_heads", num_heads)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")
    if intermediate_size is None:
        intermediate_size = (-(-(8 * hidden_size // 3) // 256) * 256) if mlp == "gated" else 4 * hidden_size
    return ModelSpec(name=name, family="dense", vocab_size=vocab_size, hidden_size=hidden_size,
                     num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads or num_heads,
                     head_dim=head_dim or max(1, hidden_size // num_heads), intermediate_size=intermediate_size,
                     mlp=mlp, activation="silu" if mlp == "gated" else "gelu", tie_embeddings=tie_embeddings)


@lru_cache(maxsize=1)
def _bundled() -> dict[str, dict[str, Any]]:
    root = resources.files("vramlib").joinpath("data/models")
    out = {}
    for f in sorted(root.iterdir(), key=lambda p: p.name):
        if f.name.endswith(".json"):
            out[f.name[:-5]] = json.loads(f.read_text())
    return out


def list_models() -> list[str]:
    """Names of the bundled model configs (``vramlib/data/models/*.json``).

    Defined in Part I, "The calculator"."""
    return sorted(_bundled())


def _norm_name(s: str) -> str:
    return "".join(c for c in s.lower() if c.isalnum())


def load_model_config(model: Any) -> ModelSpec:
    """Turn any model description into a :class:`ModelSpec`.

    Accepts a :class:`ModelSpec`, a bundled name (see :func:`list_models`; case and
    punctuation ignored), a path to a ``config.json`` (or a folder holding one), a config
    dict, the book's ``GPTConfig`` or ``GPT`` module, or a ``transformers`` config object.
    Defined in Part I, "The calculator".
    """
    if isinstance(model, ModelSpec):
        return model
    if hasattr(model, "d_model") and hasattr(model, "n_layer") and hasattr(model, "mlp_ratio"):
        return from_gpt_config(model)
    if hasattr(model, "cfg") and hasattr(getattr(model, "cfg"), "d_model"):
        return from_gpt_config(model.cfg)
    if hasattr(model, "to_dict") and hasattr(model, "model_type"):  # transformers PretrainedConfig
        return from_hf_config(model.to_dict())
    if isinstance(model, Mapping):
        return from_hf_config(model)
    if isinstance(model, (str, Path)):
        return _load_str(str(model))
    raise TypeError(f"cannot make a model spec from {type(model).__name__}; pass a bundled name, a path, "
                    "a config dict, a GPTConfig or a ModelSpec")


@lru_cache(maxsize=128)
def _bundled_spec(key: str) -> ModelSpec:
    return from_hf_config(_bundled()[key], name=key)


@lru_cache(maxsize=1)
def _name_index() -> dict[str, str]:
    return {_norm_name(k): k for k in _bundled()}


def _load_str(s: str) -> ModelSpec:
    bundled = _bundled()
    key = _name_index().get(_norm_name(s))
    if key is not None:
        return _bundled_spec(key)
    p = Path(s)
    if p.is_dir():
        p = p / "config.json"
    if p.is_file():
        try:
            cfg = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{p} is not valid JSON: {e}") from None
        except RecursionError:
            raise ValueError(f"{p} is nested too deeply to be a model config") from None
        return from_hf_config(cfg, name=p.parent.name if p.name == "config.json" else p.stem)
    raise ValueError(f"unknown model {s!r}: not a bundled name ({', '.join(sorted(bundled))}) "
                     "and not a path to a config.json")

