"""Memory from fake tensors: the exact peak of a torch step without allocating it.

:func:`simulate` runs a callable — a forward pass, a training step with an optimizer, a
decode loop — under torch's fake-tensor machinery
(``torch._subclasses.fake_tensor.FakeTensorMode``): every operator computes the shapes,
dtypes, devices and strides of its results, but no data.  A
:class:`~vramlib.measure.tracker.StorageTracker` (subclassed here) records every tensor storage the
step creates and, through a weak reference, the moment torch frees it.  So the live bytes
over time — and their peak — are those of the real run, for any model size, on a laptop.

Each storage is given a **category** and the **module** that created it, using torch's own
facilities:

* ``parameters`` / ``buffers`` — ``torch.nn.modules.module``'s global parameter/buffer
  registration hooks, plus every module's parameters when it first runs forward and every
  optimizer's parameter groups;
* ``gradients`` — ``Tensor.register_post_accumulate_grad_hook`` on each parameter, plus the
  ``.grad`` tensors before each optimizer step;
* ``optimizer`` — the tensors in ``optimizer.state`` after each step (global
  ``register_optimizer_step_post_hook``);
* ``activations`` — tensors autograd saves for backward
  (``torch.autograd.graph.saved_tensors_hooks``);
* ``kv_cache`` (or any name) — what the step marks itself with :func:`mark`;
* ``temporaries`` — everything else (intermediate results, logits, the loss, inputs).

A storage keeps the most specific category it ever gets (a temporary that becomes a
gradient counts as a gradient for its whole life).  Phases ("forward 1", "backward 1",
"optimizer step 1", "recompute (backward 1)" under activation checkpointing, or your own
labels via :func:`phase`) come from the autograd engine's graph-task id, global module
hooks and optimizer hooks.

What it cannot see (say so when you quote its numbers):

* memory outside tensor storages: the CUDA context (~0.5 GiB), cuBLAS/cuBLASLt workspaces
  (a few MiB to tens of MiB per stream), cuDNN and NCCL buffers, kernel-internal scratch
  allocated and freed inside one operator;
* the caching allocator's reserved-but-unused memory and fragmentation (``round_to=512``
  models only its 512-byte rounding; large blocks that are not split can be larger);
* data-dependent control flow: ``.item()``, ``nonzero`` and Python ``if tensor:`` have no
  value under fake tensors, so ``model.generate`` (its stopping criteria) cannot run — use
  :func:`decode_loop`, a greedy prefill + decode loop with the same caches;
* kernel choices that depend on the real device: simulate with ``device="cuda"`` on a
  machine with a CUDA build of torch to get CUDA's choices (e.g. which fused attention
  kernel runs and what it saves); ``device="cpu"`` reproduces the CPU's.

Defined in Part I, "Three ways to know: formula, simulation, measurement".
"""

from __future__ import annotations

import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from .tracker import StorageTracker
from ..core.units import _UNITS, fmt_bytes
from ..core.vocab import CATEGORIES

__all__ = ["simulate", "Simulator", "SimulationResult", "mark", "phase", "decode_loop",
           "CATEGORIES"]

_RANK = {c: i for i, c in enumerate(CATEGORIES)}

_aten = torch.ops.aten
# In-place random fills (weight initialisation) allocate nothing; skipping them saves time
# and lets fake CUDA tensors be initialised on a machine whose torch has no CUDA.
_RANDOM_INPLACE = {_aten.uniform_, _aten.normal_, _aten.bernoulli_, _aten.random_,
                   _aten.exponential_, _aten.geometric_, _aten.log_normal_, _aten.cauchy_}

_ACTIVE: list["Simulator"] = []


def _round(n: int, to: int | None) -> int:
    if not to:
        return n
    return max(to, -(-n // to) * to)


@dataclass
class SimulationResult:
    """What :func:`simulate` found.  Bytes are per storage, rounded up to ``round_to`` when set.

    ``peak`` — highest live bytes; ``peak_phase`` / ``peak_op`` — where it happened;
    ``breakdown`` — live bytes per category at the peak; ``by_module`` — live bytes at the
    peak per module that created them; ``end`` — still live when the callable returned
    (what it returned, the model, the optimizer state...); ``events`` — the timeline, one
    row ``(phase, op, {category: live bytes})`` per allocation or free (``timeline=True``).

    Defined in Part I, "Three ways to know: formula, simulation, measurement".
    """

    device: str
    peak: int
    peak_phase: str
    peak_op: str
    peak_event: int
    breakdown: dict[str, int]
    by_module: dict[str, int]
    end: int
    round_to: int | None
    seconds: float
    n_storages: int
    events: list[tuple[str, str, dict[str, int]]] = field(default_factory=list, repr=False)
    result: Any = field(default=None, repr=False)

    def summary(self) -> str:
        """A few lines: the peak, where it falls, and the breakdown at the peak."""
        lines = [f"simulated peak {fmt_bytes(self.peak)} ({self.peak:,} B) on {self.device}, "
                 f"during {self.peak_phase} (op {self.peak_op})"]
        for cat, b in self.breakdown.items():
            if b:
                lines.append(f"  {cat:<12} {fmt_bytes(b):>12}  ({100 * b / max(self.peak, 1):5.1f} %)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def top_modules(self, n: int = 10) -> list[tuple[str, int]]:
        """The ``n`` modules whose tensors take most of the peak."""
        return sorted(self.by_module.items(), key=lambda kv: -kv[1])[:n]

    def phases(self) -> list[tuple[str, int, int]]:
        """``(phase, first event, last event)`` for each run of events in the same phase."""
        out: list[tuple[str, int, int]] = []
        for i, (ph, _, _) in enumerate(self.events):
            if out and out[-1][0] == ph:
                out[-1] = (ph, out[-1][1], i)
            else:
                out.append((ph, i, i))
        return out

    def plot(self, ax=None, unit: str = "GiB", label_phases: bool = True):
        """Stacked area of live bytes per category over the allocation/free events, with
        the phases marked and the peak annotated."""
        import matplotlib.pyplot as plt

        from ..core.style import CATEGORY_COLORS as colors

        if not self.events:
            raise ValueError("this result has no timeline; simulate with timeline=True")
        div = _UNITS[unit.lower()]
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 3.6))
        cats = [c for c in CATEGORIES if any(ev[2].get(c) for ev in self.events)]
        xs = list(range(len(self.events)))
        ys = [[ev[2].get(c, 0) / div for ev in self.events] for c in cats]
        ax.stackplot(xs, ys, labels=cats, colors=[colors[c] for c in cats], step="post")
        ax.axvline(self.peak_event, color="k", lw=0.8, ls="--")
        ax.annotate(f"peak {self.peak / div:.2f} {unit}\n{self.peak_phase}",
                    (self.peak_event, self.peak / div), xytext=(4, -4), textcoords="offset points",
                    va="top", fontsize=8, bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.8))
        if label_phases:
            top = self.peak / div
            for ph, a, b in self.phases():
                if b - a < len(xs) / 12:   # label only the phases wide enough to read
                    continue
                ax.axvline(a, color="0.6", lw=0.5)
                ax.text((a + b) / 2, top * 1.03, ph, ha="center", va="bottom", fontsize=7)
            ax.set_ylim(0, top * 1.12)
        ax.set_xlim(0, len(xs) - 1)
        ax.set_xlabel("allocation / free event")
        ax.set_ylabel(f"live tensor memory ({unit})")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        return ax


class Simulator(StorageTracker):
    """Context manager: fake-tensor mode plus attributed storage tracking.

    Use :func:`simulate` unless the code to simulate is not one callable::

        with Simulator(device="cpu") as sim:
            model = GPT(cfg)                         # built on fake tensors
            ...
        res = sim.result()

    ``device`` is the device type the code builds on (``torch.device`` context): ``"cpu"``,
    or ``"cuda"`` (CUDA's kernel choices need a CUDA build of torch; no GPU memory is used).
    ``round_to`` rounds every storage up to a multiple (``512`` mimics the CUDA caching
    allocator's blocks, so results compare with ``torch.cuda.max_memory_allocated``).

    Defined in Part I, "Three ways to know: formula, simulation, measurement".
    """

    def __init__(self, device: str | torch.device = "cpu", round_to: int | None = None,
                 timeline: bool = True) -> None:
        dev = torch.device(device)
        if dev.type not in ("cpu", "cuda", "meta"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'meta', got {device!r}")
        if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to <= 0):
            raise ValueError(f"round_to must be a positive integer (e.g. 512) or None, got {round_to!r}")
        super().__init__(device_type=None if dev.type == "meta" else dev.type, timeline=False)
        self.device = dev
        self.round_to = round_to
        self.keep_events = timeline
        self._serial = 0
        self._key_to_serial: dict[int, int] = {}
        # per storage serial: [nbytes, op, phase, module, category]
        self.storages: dict[int, list] = {}
        self._log: list[tuple[int, int, str]] = []   # (+1 alloc / -1 free, serial, phase)
        self._user_phase: list[str] = []
        self._mod_stack: list[str] = []
        self._mod_names: dict[int, str] = {}
        self._seen_modules: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()
        self._owner: dict[int, str] = {}
        self._opt_steps = 0
        self._in_opt = False
        self._handles: list[Any] = []
        self._stack: list[Any] = []
        self._t0 = 0.0
        self.seconds = 0.0

    # -- categories -------------------------------------------------------------------
    def _serial_of(self, t: torch.Tensor) -> int | None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return None
        entry = self._live.get(id(st))
        if entry is None or entry[0]() is not st:
            return None
        return self._key_to_serial.get(id(st))

    def label(self, t: Any, category: str, module: str | None = None) -> None:
        """Give the storage of ``t`` (a tensor, or an iterable of tensors) ``category``
        unless it already has a more specific one (and, if given, the owning ``module``)."""
        if category not in _RANK:
            raise ValueError(f"unknown category {category!r}; allowed: {', '.join(CATEGORIES)}")
        if isinstance(t, torch.Tensor):
            s = self._serial_of(t)
            if s is not None:
                rec = self.storages[s]
                if _RANK[category] <= _RANK[rec[4]]:
                    rec[4] = category
                    if module is not None:
                        rec[3] = module
            return
        if isinstance(t, dict):
            t = t.values()
        if isinstance(t, Iterable) and not isinstance(t, (str, bytes)):
            for x in t:
                self.label(x, category, module)

    # -- phases -------------------------------------------------------------------------
    def _phase(self) -> str:
        step = self._opt_steps + 1
        if self._in_opt:
            auto = f"optimizer step {step}"
        elif torch._C._current_graph_task_id() != -1:
            auto = f"recompute (backward {step})" if self._mod_stack else f"backward {step}"
        elif self._mod_stack:
            auto = f"forward {step}"
        else:
            auto = f"after optimizer step {self._opt_steps}" if self._opt_steps else "setup"
        if self._user_phase:
            return self._user_phase[-1] if not self._mod_stack or "forward" in auto else f"{self._user_phase[-1]}: {auto}"
        return auto

    # -- StorageTracker hooks -----------------------------------------------------------
    def on_alloc(self, key: int, nbytes: int, op: str, tensor: torch.Tensor) -> None:
        self._serial += 1
        s = self._serial
        self._key_to_serial[key] = s
        ph = self._phase()
        mod = self._mod_stack[-1] if self._mod_stack else ("(backward)" if ph.startswith("backward") else "(none)")
        self.storages[s] = [nbytes, op, ph, mod, "temporaries"]
        self._log.append((1, s, ph))

    def on_free(self, key: int, nbytes: int) -> None:
        s = self._key_to_serial.pop(key, None)
        if s is not None:
            self._log.append((-1, s, self._phase()))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in _RANDOM_INPLACE:
            return args[0]
        if func is _aten._local_scalar_dense.default and args[0].dtype == torch.bool:
            # a data-dependent check (``if mask.all():``): fake tensors have no values, so
            # assume the dense case — no padding, no packed sequences
            return True
        return super().__torch_dispatch__(func, types, args, kwargs)

    # -- torch hooks ------------------------------------------------------------------
    def _name_module(self, m: torch.nn.Module) -> str:
        name = self._mod_names.get(id(m))
        if name is None:  # first time seen and not a known child: name it and its children
            root = type(m).__name__
            for sub_name, sub in m.named_modules():
                self._mod_names.setdefault(id(sub), f"{root}.{sub_name}" if sub_name else root)
            name = self._mod_names[id(m)]
        return name

    def _register_module(self, m: torch.nn.Module) -> None:
        if m in self._seen_modules:
            return
        self._seen_modules.add(m)
        name = self._name_module(m)
        for p in m._parameters.values():
            if p is None or id(p) in self._owner:
                continue
            self._owner[id(p)] = name
            self.label(p, "parameters", name)
            if p.requires_grad:
                self._handles.append(p.register_post_accumulate_grad_hook(
                    lambda q, name=name: self.label(q.grad, "gradients", name)))
        for b in m._buffers.values():
            if b is not None:
                self.label(b, "buffers", name)

    def _fw_pre(self, m, args):
        self._register_module(m)
        self._mod_stack.append(self._name_module(m))

    def _fw_post(self, m, args, out):
        if self._mod_stack:
            self._mod_stack.pop()

    def _opt_pre(self, opt, args, kwargs):
        for g in opt.param_groups:
            for p in g["params"]:
                self.label(p, "parameters", self._owner.get(id(p)))
                if p.grad is not None:
                    self.label(p.grad, "gradients", self._owner.get(id(p)))
        self._in_opt = True

    def _opt_post(self, opt, args, kwargs):
        self._in_opt = False
        for p, state in opt.state.items():
            self.label([v for v in state.values() if isinstance(v, torch.Tensor)], "optimizer",
                       self._owner.get(id(p)))
        self._opt_steps += 1

    def _pack(self, t: torch.Tensor):
        self.label(t, "activations")
        return t.detach()  # not ``t``: returning an op's own output would make a reference cycle

    # -- context --------------------------------------------------------------------------
    def __enter__(self) -> "Simulator":
        import torch.optim.optimizer as _optim
        import torch.nn.modules.module as _mm

        self._t0 = time.perf_counter()
        self.fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        # optimizers choose foreach/fused kernels only for plain tensors; let them treat fake
        # tensors alike, so the simulated optimizer runs the implementation the real one would
        self._foreach_patched = FakeTensor not in _optim._foreach_supported_types
        if self._foreach_patched:
            _optim._foreach_supported_types.append(FakeTensor)
        self._handles += [
            _mm.register_module_forward_pre_hook(self._fw_pre),
            _mm.register_module_forward_hook(self._fw_post, always_call=True),
            _mm.register_module_parameter_registration_hook(lambda m, n, p: self.label(p, "parameters") if p is not None else None),
            _mm.register_module_buffer_registration_hook(lambda m, n, b: self.label(b, "buffers") if b is not None else None),
            _optim.register_optimizer_step_pre_hook(self._opt_pre),
            _optim.register_optimizer_step_post_hook(self._opt_post),
        ]
        # ``module.to(dtype)`` swaps fake parameters (torch.utils.swap_tensors), which refuses
        # tensors the fake-tensor converter still memoises weakly: forget them first
        self._orig_swap = torch.utils.swap_tensors
        memo = getattr(getattr(self.fake_mode, "fake_tensor_converter", None), "tensor_memo", None)
        if memo is None:
            memo = {}

        def _swap(t1, t2):
            for k, v in list(memo.items()):
                if v is t1 or v is t2:
                    del memo[k]
            return self._orig_swap(t1, t2)

        torch.utils.swap_tensors = _swap
        self._patched = _patch_transformers_tracing()
        self._stack = [self.fake_mode, torch.device(self.device.type),
                       torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)]
        for cm in self._stack:
            cm.__enter__()
        _ACTIVE.append(self)
        super().__enter__()
        return self

    def __exit__(self, *exc) -> None:
        import torch.optim.optimizer as _optim

        try:
            super().__exit__(*exc)
        finally:
            _ACTIVE.remove(self)
            for cm in reversed(self._stack):
                cm.__exit__(None, None, None)
            for h in self._handles:
                h.remove()
            self._handles.clear()
            torch.utils.swap_tensors = self._orig_swap
            for mod, orig in self._patched:
                mod.is_tracing = orig
            if self._foreach_patched and FakeTensor in _optim._foreach_supported_types:
                _optim._foreach_supported_types.remove(FakeTensor)
            self.seconds = time.perf_counter() - self._t0

    # -- result -------------------------------------------------------------------------
    def result(self, returned: Any = None) -> SimulationResult:
        """Replay the allocation log with the final categories: peak, breakdown, timeline."""
        live = {c: 0 for c in CATEGORIES}
        total = peak = 0
        peak_i, peak_phase, peak_op = -1, "setup", ""
        alive: set[int] = set()
        events: list[tuple[str, str, dict[str, int]]] = []
        peak_alive: set[int] = set()
        rt = self.round_to
        for i, (sign, s, ph) in enumerate(self._log):
            nb, op, _, _, cat = self.storages[s]
            nb = _round(nb, rt)
            live[cat] += sign * nb
            total += sign * nb
            if sign > 0:
                alive.add(s)
            else:
                alive.discard(s)
            if total > peak:
                peak, peak_i, peak_phase, peak_op = total, i, ph, op
                peak_alive = set(alive)
            if self.keep_events:
                events.append((ph, op if sign > 0 else "free", dict(live)))
        breakdown = {c: 0 for c in CATEGORIES}
        by_module: dict[str, int] = {}
        for s in peak_alive:
            nb, _, _, mod, cat = self.storages[s]
            nb = _round(nb, rt)
            breakdown[cat] += nb
            by_module[mod] = by_module.get(mod, 0) + nb
        return SimulationResult(device=str(self.device), peak=peak, peak_phase=peak_phase, peak_op=peak_op,
                                peak_event=max(peak_i, 0), breakdown=breakdown, by_module=by_module,
                                end=total, round_to=rt, seconds=self.seconds, n_storages=self._serial,
                                events=events, result=returned)


def _patch_transformers_tracing() -> list[tuple[Any, Any]]:
    """``transformers`` takes fake tensors for a sign of ``torch.compile`` tracing and then
    builds explicit attention masks that an eager run skips.  Make it see an eager run."""
    import sys

    base = sys.modules.get("transformers.utils.import_utils")
    orig = getattr(base, "is_tracing", None)
    if orig is None:
        return []

    def is_tracing(tensor=None) -> bool:
        return orig(None)

    patched = []
    for name, mod in list(sys.modules.items()):
        if name.startswith("transformers") and getattr(mod, "__dict__", {}).get("is_tracing") is orig:
            patched.append((mod, orig))
            mod.is_tracing = is_tracing
    return patched


def simulate(fn: Callable[..., Any], *args: Any, device: str | torch.device = "cpu",
             round_to: int | None = None, timeline: bool = True, **kwargs: Any) -> SimulationResult:
    """Run ``fn(*args, **kwargs)`` on fake tensors and return its simulated memory.

    ``fn`` should build what it needs itself (model, optimizer, inputs) — under the
    simulation, factory functions and modules create fake tensors on ``device`` — and can
    mark tensors (:func:`mark`) and name phases (:func:`phase`).  Example::

        def step():
            model = GPT(cfg)
            opt = torch.optim.AdamW(model.parameters())
            x = torch.randint(0, cfg.vocab_size, (8, 128))
            for _ in range(2):
                model(x, x)[1].backward(); opt.step(); opt.zero_grad()
        res = simulate(step)          # res.peak, res.breakdown, res.plot()

    Defined in Part I, "Three ways to know: formula, simulation, measurement".
    """
    if not callable(fn):
        raise TypeError(f"simulate() needs a callable, got {type(fn).__name__}")
    sim = Simulator(device=device, round_to=round_to, timeline=timeline)
    with sim:
        out = fn(*args, **kwargs)
    res = sim.result(out)
    return res


def _current() -> Simulator | None:
    return _ACTIVE[-1] if _ACTIVE else None


def mark(tensors: Any, category: str) -> None:
    """Inside a simulation, give ``tensors`` (a tensor, or a list/dict of them) a category,
    e.g. ``mark(cache_tensors, "kv_cache")``.  Does nothing outside a simulation.

    Defined in Part I, "Three ways to know: formula, simulation, measurement".
    """
    if category not in _RANK:
        raise ValueError(f"unknown category {category!r}; allowed: {', '.join(CATEGORIES)}")
    sim = _current()
    if sim is not None:
        sim.label(tensors, category)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Inside a simulation, label the events of a block (``"prefill"``, ``"decode"``...).
    Does nothing outside a simulation.

    Defined in Part I, "Three ways to know: formula, simulation, measurement".
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"phase name must be a non-empty string, got {name!r}")
    sim = _current()
    if sim is None:
        yield
        return
    sim._user_phase.append(name)
    try:
        yield
    finally:
        sim._user_phase.pop()


def _cache_tensors(cache: Any) -> list[torch.Tensor]:
    """The key/value tensors of a Hugging Face cache (transformers 4.x and 5.x layouts)."""
    out: list[torch.Tensor] = []
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for layer in layers:
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if isinstance(t, torch.Tensor):
                    out.append(t)
        return out
    for name in ("key_cache", "value_cache"):
        out += [t for t in getattr(cache, name, []) if isinstance(t, torch.Tensor)]
    return out


def _positions(mask: torch.Tensor, n: int) -> torch.Tensor:
    """Position ids from the attention mask, as ``generate`` derives them (per sequence)."""
    pos = mask.long().cumsum(-1) - 1
    pos.masked_fill_(mask == 0, 1)
    return pos[:, -n:]


def _takes(fn, name: str) -> bool:
    """Whether callable ``fn`` (a function or a class's constructor) declares ``name``."""
    import inspect

    return name in inspect.signature(fn).parameters


@torch.no_grad()
def decode_loop(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int,
                cache: str = "dynamic") -> torch.Tensor:
    """Greedy generation the way ``transformers``' ``generate`` runs it, without its
    data-dependent stopping checks (which fake tensors cannot evaluate): an all-ones
    attention mask, one prefill forward that keeps only the last position's logits (copied
    to fp32), then ``max_new_tokens - 1`` decode forwards of one token, with a ``DynamicCache`` (grows by concatenation) or a
    ``StaticCache`` (preallocated for prompt + new tokens).  Inside a simulation the phases
    are labelled ``prefill`` / ``decode`` and the cache tensors are marked ``kv_cache``.
    Returns the generated ids ``(batch, prompt + new)``.

    Defined in Part I, "Three ways to know: formula, simulation, measurement".
    """
    from transformers import DynamicCache, StaticCache

    if cache not in ("dynamic", "static"):
        raise ValueError(f"cache must be 'dynamic' or 'static', got {cache!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    B, s = input_ids.shape
    cfg = model.config
    if cache == "static":
        try:
            pkv = StaticCache(config=cfg, max_cache_len=s + max_new_tokens)
        except TypeError:  # transformers 4.x signature
            pkv = StaticCache(config=cfg, max_batch_size=B, max_cache_len=s + max_new_tokens,
                              device=input_ids.device, dtype=model.dtype)
    else:
        pkv = DynamicCache(config=cfg) if _takes(DynamicCache, "config") else DynamicCache()
    # Newer transformers take the cache as ``cache=`` and remove ``past_key_values=`` (in
    # 5.40); 4.56 ... 5.39 take ``past_key_values=``.  Pass it under the name forward declares.
    cache_kw = "cache" if _takes(model.forward, "cache") else "past_key_values"
    ids = input_ids
    mask = torch.ones_like(input_ids)        # generate() passes an all-ones attention mask
    pos = torch.arange(s, device=input_ids.device)
    with phase("prefill"):
        out = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask, s),
                    use_cache=True, cache_position=pos, logits_to_keep=1, **{cache_kw: pkv})
        mark(_cache_tensors(pkv), "kv_cache")
        logits = out.logits[:, -1, :].to(copy=True, dtype=torch.float32)   # as generate() does
        nxt = logits.argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=-1)
        mask = torch.cat([mask, mask.new_ones((B, 1))], dim=-1)
        del out, logits
    with phase("decode"):
        for i in range(max_new_tokens - 1):
            pos = torch.tensor([s + i], device=input_ids.device)
            out = model(input_ids=nxt, attention_mask=mask, position_ids=_positions(mask, 1),
                        use_cache=True, cache_position=pos, logits_to_keep=1, **{cache_kw: pkv})
            mark(_cache_tensors(pkv), "kv_cache")
            logits = out.logits[:, -1, :].to(copy=True, dtype=torch.float32)
            nxt = logits.argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=-1)
            mask = torch.cat([mask, mask.new_ones((B, 1))], dim=-1)
            del out, logits
    return ids
