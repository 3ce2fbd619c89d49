"""The book's LLM-scale model: a byte-level GPT pretrained on CPython's standard library.

* **Corpus** — a fixed, deterministic selection of the ``.py`` files of CPython 3.11's
  standard library (``Lib/``; PSF License 2.0), concatenated in sorted path order, each
  preceded by a ``# file: <path>`` line, and shipped as a gzip snapshot
  (``vramlib/data/corpus/cpython311_stdlib.txt.gz``) with a manifest beside it (source,
  licence, SHA-256 of the text, every file's path and byte offset).  Every machine reads the
  same bytes, whatever its Python.  :func:`build_stdlib_corpus` regenerates it from a
  CPython 3.11 ``Lib/`` folder; :func:`load_stdlib_corpus` checks the SHA-256.
* **Splits** — by file, not by byte position: every :data:`HELD_OUT_EVERY`-th file (in path
  order) is held out, so held-out perplexity is measured on modules the model never saw.
  Calibration sets for post-training methods are drawn from the training split.
* **Models** — two sizes of :class:`~vramlib.models.GPT` (:data:`LM_CONFIGS`): ``"full"``
  (about 19.2M parameters, context 256, trained on one GPU; the size is set by
  the 42 MB its committed bf16 checkpoint may take) and ``"small"`` (about 1.8M
  parameters, context 128, the CPU-scale sibling), both trained by :func:`train_lm`
  (``benchmarks/train_llm_gpu.py``), checkpoints as bf16 state-dict shards
  ``vramlib/data/checkpoints/stdlib_lm_<size>-NN.pt``.
* **Evaluation protocol** — :func:`evaluate_heldout`: :data:`EVAL_WINDOWS` fixed,
  evenly spaced, non-overlapping windows of the held-out split, batch :data:`EVAL_BATCH`.

Defined in Part II, "Compression at LLM scale", section "The model and its corpus".
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .nanogpt import GPT, GPTConfig
from .zoo import LMData, evaluate_lm

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
CORPUS_PATH = DATA_DIR / "corpus" / "cpython311_stdlib.txt.gz"
MANIFEST_PATH = DATA_DIR / "corpus" / "cpython311_stdlib.json"
CHECKPOINT_DIR = DATA_DIR / "checkpoints"

#: Folders of ``Lib/`` left out of the corpus: tests, the IDE, retired or vendored code and
#: the generated help text (already the char LM's corpus).
EXCLUDED_DIRS = ("test", "tests", "idlelib", "lib2to3", "site-packages", "ensurepip",
                 "turtledemo", "pydoc_data", "__pycache__", "tkinter")
#: Files larger than this are left out (generated tables, not code people write).
MAX_FILE_BYTES = 200_000
#: The corpus stops at the first file that would take it past this many bytes.
MAX_CORPUS_BYTES = 12_500_000
#: Every ``HELD_OUT_EVERY``-th file (path order, counting from 1) is held out.
HELD_OUT_EVERY = 10
#: The one evaluation protocol: windows of the held-out split and batch size.
EVAL_WINDOWS = 128
EVAL_BATCH = 32

#: The two sizes (``GPTConfig`` keyword dicts).
LM_CONFIGS: dict[str, dict[str, Any]] = {
    "small": dict(vocab_size=256, block_size=128, n_layer=4, n_head=4, d_model=192,
                  mlp_ratio=4, bias=True, tie_weights=True, dropout=0.0, attn="sdpa"),
    "full": dict(vocab_size=256, block_size=256, n_layer=6, n_head=8, d_model=512,
                 mlp_ratio=4, bias=True, tie_weights=True, dropout=0.0, attn="sdpa"),
}


# --------------------------------------------------------------------------- corpus
def select_stdlib_files(lib: str | Path) -> list[Path]:
    """The corpus's files under a CPython ``Lib/`` folder: every ``.py`` file outside
    :data:`EXCLUDED_DIRS`, at most :data:`MAX_FILE_BYTES`, in sorted relative-path order.
    Defined in Part II, "Compression at LLM scale", section "The model and its corpus"."""
    lib = Path(lib)
    if not (lib / "os.py").is_file():
        raise FileNotFoundError(f"{lib} is not a CPython Lib/ folder (no os.py); pass e.g. "
                                "sysconfig.get_paths()['stdlib']")
    files = [p for p in lib.rglob("*.py")
             if not set(p.relative_to(lib).parts[:-1]) & set(EXCLUDED_DIRS)
             and p.stat().st_size <= MAX_FILE_BYTES]
    return sorted(files, key=lambda p: p.relative_to(lib).as_posix())


def build_stdlib_corpus(lib: str | Path, max_bytes: int = MAX_CORPUS_BYTES
                        ) -> tuple[bytes, dict[str, Any]]:
    """The corpus text and its manifest from a CPython ``Lib/`` folder: files of
    :func:`select_stdlib_files` in order, each after a ``# file: Lib/<path>`` line, until the
    next file would pass ``max_bytes``.  Defined in Part II, "Compression at LLM scale",
    section "The model and its corpus"."""
    lib = Path(lib)
    parts, files, offset = [], [], 0
    for p in select_stdlib_files(lib):
        rel = p.relative_to(lib).as_posix()
        chunk = f"# file: Lib/{rel}\n".encode() + p.read_bytes().rstrip(b"\n") + b"\n\n"
        if offset + len(chunk) > max_bytes:
            break
        parts.append(chunk)
        files.append({"path": f"Lib/{rel}", "offset": offset, "bytes": len(chunk)})
        offset += len(chunk)
    text = b"".join(parts)
    manifest = {"source": "CPython standard library, Lib/*.py (selection rule: "
                "vramlib.models.stdlib_lm.select_stdlib_files)",
                "licence": "PSF-2.0 (Python Software Foundation License Version 2)",
                "bytes": len(text), "sha256": hashlib.sha256(text).hexdigest(),
                "files": files}
    return text, manifest


def load_stdlib_corpus() -> tuple[bytes, dict[str, Any]]:
    """The shipped corpus bytes and manifest; raises if the SHA-256 does not match.
    Defined in Part II, "Compression at LLM scale", section "The model and its corpus"."""
    if not CORPUS_PATH.exists() or not MANIFEST_PATH.exists():
        raise FileNotFoundError(f"corpus snapshot missing: {CORPUS_PATH} "
                                "(run scripts/build_stdlib_corpus.py)")
    with gzip.open(CORPUS_PATH, "rb") as f:
        text = f.read()
    manifest = json.loads(MANIFEST_PATH.read_text())
    digest = hashlib.sha256(text).hexdigest()
    if digest != manifest["sha256"]:
        raise ValueError(f"corpus SHA-256 {digest} differs from the manifest's "
                         f"{manifest['sha256']}: the snapshot is damaged; rebuild it")
    return text, manifest


def stdlib_lm_data(block_size: int = LM_CONFIGS["small"]["block_size"]) -> LMData:
    """Byte tokens of the corpus split by file: every :data:`HELD_OUT_EVERY`-th file is the
    held-out (``"val"``) split, the rest train.  Defined in Part II, "Compression at LLM
    scale", section "The model and its corpus"."""
    text, manifest = load_stdlib_corpus()
    train, val = [], []
    for i, f in enumerate(manifest["files"], start=1):
        chunk = text[f["offset"]:f["offset"] + f["bytes"]]
        (val if i % HELD_OUT_EVERY == 0 else train).append(chunk)
    as_long = lambda chunks: torch.frombuffer(bytearray(b"".join(chunks)),  # noqa: E731
                                              dtype=torch.uint8).long()
    info = {"corpus": "CPython 3.11 Lib/*.py selection", "bytes": manifest["bytes"],
            "files": len(manifest["files"]), "train_files": len(train),
            "val_files": len(val), "sha256": manifest["sha256"]}
    data = LMData(train=as_long(train), val=as_long(val), block_size=block_size, info=info)
    data.info.update(train_bytes=len(data.train), val_bytes=len(data.val))
    return data


# --------------------------------------------------------------------------- models
def build_stdlib_lm(size: str = "small", dropout: float = 0.0) -> GPT:
    """A fresh model of the size ``"small"`` or ``"full"`` (:data:`LM_CONFIGS`), with
    ``dropout`` (used while training; the trained weights load into a dropout-free model).
    Defined in Part II, "Compression at LLM scale", section "The model and its corpus"."""
    if size not in LM_CONFIGS:
        raise ValueError(f"size must be one of {sorted(LM_CONFIGS)}, got {size!r}")
    return GPT(GPTConfig(**{**LM_CONFIGS[size], "dropout": dropout}))


def checkpoint_shards(size: str, directory: str | Path = CHECKPOINT_DIR) -> list[Path]:
    """The checkpoint's shard files ``stdlib_lm_<size>-NN.pt`` in ``directory``, in order.
    Defined in Part II, "Compression at LLM scale", section "The model and its corpus"."""
    return sorted(Path(directory).glob(f"stdlib_lm_{size}-[0-9][0-9].pt"))


def save_sharded(model: nn.Module, path_stem: str | Path, max_shard_bytes: int = 14 << 20,
                 dtype: torch.dtype = torch.bfloat16) -> list[Path]:
    """Save ``model``'s state dict in ``dtype`` as shards ``<stem>-00.pt``, ``-01.pt``, ...
    of at most ``max_shard_bytes`` each (a tensor is never split; tied weights saved once).
    Defined in Part II, "Compression at LLM scale", section "The model and its corpus"."""
    stem = Path(path_stem)
    state, seen, shards, cur, cur_bytes = model.state_dict(), set(), [], {}, 0
    for name, t in state.items():
        if t.data_ptr() in seen:
            continue                                  # a tied weight: loaded from its twin
        seen.add(t.data_ptr())
        t = t.detach().to("cpu", dtype if t.is_floating_point() else t.dtype).clone()
        nbytes = t.numel() * t.element_size()
        if cur and cur_bytes + nbytes > max_shard_bytes:
            shards.append(cur)
            cur, cur_bytes = {}, 0
        cur[name], cur_bytes = t, cur_bytes + nbytes
    shards.append(cur)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.parent / f"{stem.name}-{i:02d}.pt" for i in range(len(shards))]
    for p, sh in zip(paths, shards):
        torch.save(sh, p)
    return paths


def load_stdlib_lm(size: str = "small", device: str | torch.device = "cpu",
                   directory: str | Path = CHECKPOINT_DIR) -> GPT:
    """The trained model of ``size`` in float32, eval mode, on ``device``.
    Defined in Part II, "Compression at LLM scale", section "The model and its corpus"."""
    shards = checkpoint_shards(size, directory)
    if not shards:
        raise FileNotFoundError(f"no checkpoint stdlib_lm_{size}-NN.pt in {directory} "
                                "(run benchmarks/train_llm_gpu.py, or scripts/train_stdlib_lm.py)")
    state: dict[str, torch.Tensor] = {}
    for p in shards:
        state.update(torch.load(p, map_location="cpu", weights_only=True))
    model = build_stdlib_lm(size)
    missing, unexpected = model.load_state_dict(
        {k: v.float() for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.cfg.tie_weights)]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match LM_CONFIGS[{size!r}]: missing {missing}, "
                         f"unexpected {unexpected}")
    return model.to(device).eval()


# --------------------------------------------------------------------------- protocol
def evaluate_heldout(model: nn.Module, data: LMData, n_windows: int = EVAL_WINDOWS,
                     batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """Part II's one evaluation protocol at LLM scale: next-byte cross-entropy, perplexity and
    bits per byte on ``n_windows`` fixed windows of the held-out split, batch ``batch_size``.
    Defined in Part II, "Compression at LLM scale", section "The model and its corpus"."""
    return evaluate_lm(model, data, "val", n_windows=n_windows, batch_size=batch_size)


def calibration_windows(data: LMData, n: int, seed: int) -> torch.Tensor:
    """``n`` random training windows ``(n, block_size)`` drawn with ``seed``: one calibration
    set.  Defined in Part II, "Compression at LLM scale", section "The model and its corpus"."""
    g = torch.Generator().manual_seed(seed)
    return data.batch("train", n, generator=g)[0]


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``lr / 10``.
    Defined in Part II, "Compression at LLM scale", section "The model and its corpus"."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def train_lm(model: GPT, data: LMData, steps: int, batch_size: int, lr: float, seed: int = 0,
             warmup: int = 100, autocast: torch.dtype | None = None, log_every: int = 50,
             time_limit_s: float | None = None,
             on_log: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Pretrain ``model`` on random training windows (seeded): AdamW (β = 0.9, 0.95, weight
    decay 0.1 on matrices), :func:`lr_at` schedule, gradient clipping at 1.0, optional
    ``autocast`` dtype.  Stops early only if ``time_limit_s`` of training passes (said in
    the result).  Returns the loss curve, steps done, tokens, seconds and tokens/s
    (``on_log``'s time, e.g. held-out evaluations, is not counted).
    Defined in Part II, "Compression at LLM scale", section "The model and its corpus"."""
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95),
                            fused=dev.type == "cuda")
    train = data.train.to(dev)
    offsets = torch.arange(data.block_size + 1, device=dev)
    model.train()
    curve, t0, step, paused = [], time.perf_counter(), 0, 0.0
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        ix = torch.randint(len(train) - data.block_size - 1, (batch_size, 1), generator=g)
        win = train[ix.to(dev) + offsets]                     # (batch, block_size + 1)
        x, y = win[:, :-1].contiguous(), win[:, 1:].contiguous()
        with torch.autocast(dev.type, dtype=autocast, enabled=autocast is not None):
            loss = model(x, y)[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            curve.append({"step": step, "loss": loss.item(),
                          "seconds": time.perf_counter() - t0 - paused})
            if on_log is not None:                    # its time is not training time
                t_log = time.perf_counter()
                on_log(curve[-1])
                paused += time.perf_counter() - t_log
            if time_limit_s is not None and curve[-1]["seconds"] > time_limit_s:
                break
    seconds = time.perf_counter() - t0 - paused
    tokens = (step + 1) * batch_size * data.block_size
    model.eval()
    return {"curve": curve, "steps_done": step + 1, "steps_planned": steps, "tokens": tokens,
            "seconds": seconds, "tokens_per_s": tokens / seconds,
            "stopped_early": step + 1 < steps}
