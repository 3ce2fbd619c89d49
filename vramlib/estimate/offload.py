"""Training memory beyond the basics, in arithmetic (no torch): CPU offload of parameters,
gradients and optimizer states (FSDP2 ``CPUOffloadPolicy``), activation offloading
(``torch.autograd.graph.save_on_cpu``), FP8 training (what float8 matrix products change and
what they do not), and the activations one GPU keeps under tensor, sequence and context
parallelism.

Derived in Part I, "Offload, FP8 and sequence parallelism"; each function names its section.
"""

from __future__ import annotations

from typing import Any

__all__ = ["fsdp_offload_bytes", "save_on_cpu_bytes", "fp8_training_bytes",
           "parallel_activation_bytes"]


def _count(v: Any, what: str, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{what} must be an integer ≥ {minimum}; got {v!r}")
    return v


def _bytes(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ValueError(f"{what} must be a number of bytes ≥ 0; got {v!r}")
    return float(v)


def fsdp_offload_bytes(n_params: int, world_size: int = 1, *, cpu_offload: bool = True,
                       master_bytes: float = 4, grad_bytes: float = 4, optim_bytes: float = 8,
                       layer_params: int = 0, compute_bytes: float = 2,
                       gathered_layers: int = 2) -> dict[str, float]:
    """Where one rank's training state lives under FSDP2 (ZeRO-3) with ``world_size`` ranks.

    ``state`` = ``(master + grad + optim) · P / N`` bytes: the sharded fp32 parameters, their
    gradients and the optimizer's states (Adam: two fp32 moments, 8 B).  Without offload it
    sits on the GPU; with ``cpu_offload`` (``CPUOffloadPolicy``) on the host, in pinned memory,
    and the optimizer step runs on the CPU.  Either way the GPU gathers each layer's full
    parameters in the compute dtype while it runs: ``gathered = gathered_layers ·
    layer_params · compute_bytes`` (the layer in use and the prefetched one), a transient.
    Returns ``state``, ``gpu_at_rest``, ``host``, ``gpu_gathered``.  Defined in Part I,
    "Offload, FP8 and sequence parallelism", section "Offloading the training state"."""
    _count(n_params, "n_params", 1)
    _count(world_size, "world_size", 1)
    _count(layer_params, "layer_params")
    _count(gathered_layers, "gathered_layers")
    per = sum(_bytes(b, w) for b, w in ((master_bytes, "master_bytes"),
                                        (grad_bytes, "grad_bytes"),
                                        (optim_bytes, "optim_bytes")))
    state = per * n_params / world_size
    gathered = gathered_layers * layer_params * _bytes(compute_bytes, "compute_bytes")
    return {"state": state, "gpu_at_rest": 0.0 if cpu_offload else state,
            "host": state if cpu_offload else 0.0, "gpu_gathered": gathered}


def save_on_cpu_bytes(saved_activations: float, saved_parameters: float,
                      num_layers: int) -> dict[str, float]:
    """Activation offloading with ``torch.autograd.graph.save_on_cpu``: every tensor autograd
    saves is copied to the host when it is saved and back when backward needs it.

    ``host`` = ``saved_activations + saved_parameters``: the hook sees *every* saved tensor,
    the weights a matrix product saves included (a copy per use), and a tensor saved by two
    operations is copied twice.  On the GPU nothing saved stays between forward and backward
    (``gpu_saved`` 0); during backward one layer's worth comes back at a time,
    ``gpu_one_layer = saved_activations / num_layers`` (an upper bound for uniform layers).
    Defined in Part I, "Offload, FP8 and sequence parallelism", section "Offloading
    activations"."""
    a = _bytes(saved_activations, "saved_activations")
    p = _bytes(saved_parameters, "saved_parameters")
    _count(num_layers, "num_layers", 1)
    return {"host": a + p, "gpu_saved": 0.0, "gpu_one_layer": a / num_layers}


def fp8_training_bytes(n_params: int, linear_params: int, *, weight_bytes: float = 2,
                       optim_bytes: float = 4, linear_input_elems: int = 0,
                       saves_fp8_inputs: bool = False) -> dict[str, float]:
    """What FP8 training (torchao ``Float8Linear``, tensorwise scaling) changes in memory.

    Unchanged: the weights (``P · weight_bytes``; the master copy stays bf16 or fp32) and the
    optimizer states (``P · optim_bytes``).  Added, transient: an fp8 copy of each converted
    weight (``linear_params`` bytes) while its products run.  Saved for backward: the inputs
    of the converted linears, ``linear_input_elems`` elements — in the high-precision dtype
    when the recipe saves them so (torchao's eager ``Float8Linear`` does, and casts again in
    backward: ``saves_fp8_inputs=False``), one byte each when it saves the fp8 casts.
    Returns ``weights``, ``optimizer``, ``fp8_weight_copies``, ``saved_linear_inputs``.
    Defined in Part I, "Offload, FP8 and sequence parallelism", section "FP8 training"."""
    _count(n_params, "n_params", 1)
    _count(linear_params, "linear_params")
    _count(linear_input_elems, "linear_input_elems")
    if linear_params > n_params:
        raise ValueError(f"linear_params ({linear_params}) cannot exceed n_params ({n_params})")
    wb = _bytes(weight_bytes, "weight_bytes")
    return {"weights": n_params * wb, "optimizer": n_params * _bytes(optim_bytes, "optim_bytes"),
            "fp8_weight_copies": float(linear_params),
            "saved_linear_inputs": linear_input_elems * (1.0 if saves_fp8_inputs else wb)}


def parallel_activation_bytes(batch: int, seq: int, hidden: int, num_layers: int, *,
                              tp: int = 1, sp: bool = False, cp: int = 1,
                              bytes_per_elem: float = 2) -> float:
    """Activations one GPU saves for backward in the transformer blocks of the book's GPT
    (fused attention, no dropout: ``16 · N · d`` values per layer, ``N = batch · seq``)
    under tensor parallelism ``tp``, sequence parallelism ``sp`` and context parallelism ``cp``.

    Megatron's tensor parallelism splits 12 of the 16 (the qkv, attention, MLP hidden
    tensors) but keeps the 4 around the two LayerNorms whole on every rank; sequence
    parallelism splits those along the sequence too, so all 16 divide by ``tp``
    (Korthikanti et al.); context parallelism gives each of ``cp`` GPUs ``seq / cp`` tokens of
    every tensor (ring attention passes keys and values around, a transient).
    ``L · (N / cp) · d · b · (4 + 12 / tp)``, or ``16 / tp`` in the bracket with ``sp``.
    Defined in Part I, "Offload, FP8 and sequence parallelism", section "Sequence and
    context parallelism"."""
    for v, what in ((batch, "batch"), (seq, "seq"), (hidden, "hidden"),
                    (num_layers, "num_layers"), (tp, "tp"), (cp, "cp")):
        _count(v, what, 1)
    if seq % cp:
        raise ValueError(f"cp ({cp}) must divide seq ({seq}): each GPU takes seq / cp tokens")
    if sp and tp == 1:
        raise ValueError("sp=True needs tp > 1: sequence parallelism splits over the TP group")
    per_token = (16 / tp) if sp else (4 + 12 / tp)
    return num_layers * batch * (seq // cp) * hidden * _bytes(bytes_per_elem, "bytes_per_elem") \
        * per_token
