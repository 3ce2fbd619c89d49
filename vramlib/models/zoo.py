"""The book's model zoo: two small trained models that Part II compresses.

* **A character-level language model** — the book's nanoGPT-style :class:`~vramlib.models.GPT`
  (4 layers, d_model 128, byte vocabulary, context 64) trained on the Python reference
  documentation that ships with CPython as ``pydoc_data/topics.py`` (the text ``help()``
  prints for keywords and topics: English prose with code examples).  The corpus is
  shipped as a gzip snapshot (``vramlib/data/corpus/pydoc_topics.txt.gz``, taken from
  Python 3.11; the text is under the PSF licence) so that every Python version reads the
  same bytes; :func:`build_corpus_from_python` regenerates it from the running interpreter.
  Split: first 90 % of the bytes train, last 10 % validation.  Metric: perplexity and bits
  per character (byte).
* **A digits classifier** — an MLP 64 → 256 → 256 → 10 on the UCI "Optical Recognition of
  Handwritten Digits" test set as scikit-learn's ``load_digits`` ships it (1,797 8×8
  images, pixels 0..16).  Split: stratified 80 % train / 20 % test (seed 0), made once by
  ``scripts/make_digits_data.py`` and shipped as ``vramlib/data/digits/digits_split_seed0.npz``
  (source and licence: ``vramlib/data/digits/README.md``), so the library needs no
  scikit-learn.  Metric: test accuracy.

``scripts/train_zoo.py`` reproduces both checkpoints (seeded).  Checkpoints are plain state
dicts in ``vramlib/data/checkpoints/*.pt`` loaded with ``torch.load(..., weights_only=True)``,
each with a JSON metadata file beside it (config, split, metrics, torch version, date).

Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses" (the models every compression chapter uses).
"""

from __future__ import annotations

import gzip
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .nanogpt import GPT, GPTConfig

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
CHECKPOINT_DIR = DATA_DIR / "checkpoints"
CORPUS_PATH = DATA_DIR / "corpus" / "pydoc_topics.txt.gz"
CHAR_LM_CHECKPOINT = CHECKPOINT_DIR / "char_lm.pt"
DIGITS_CHECKPOINT = CHECKPOINT_DIR / "digits_mlp.pt"
#: The one digits split the book uses: its seed, and the file that holds it.
DIGITS_SPLIT_SEED = 0
DIGITS_SPLIT_PATH = DATA_DIR / "digits" / f"digits_split_seed{DIGITS_SPLIT_SEED}.npz"
#: What :func:`digits_data` reports as ``info["dataset"]``.
DIGITS_DATASET = "UCI optdigits test set (as sklearn load_digits), shipped split"

#: The language model's architecture (a :class:`GPTConfig` keyword dict).
CHAR_LM_CONFIG: dict[str, Any] = dict(vocab_size=256, block_size=64, n_layer=4, n_head=4,
                                      d_model=128, mlp_ratio=4, bias=True, tie_weights=True,
                                      dropout=0.0, attn="sdpa")
#: The classifier's layer widths, input to output.
DIGITS_WIDTHS: tuple[int, ...] = (64, 256, 256, 10)
VAL_FRACTION = 0.1
DIGITS_TEST_FRACTION = 0.2


# --------------------------------------------------------------------------- data
def build_corpus_from_python() -> str:
    """The corpus text from the running interpreter: all ``pydoc_data.topics.topics`` entries
    in sorted key order, joined by blank lines.  (Its content differs slightly between
    Python versions; the book uses the shipped snapshot, :func:`load_corpus`.)
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k].strip("\n") for k in sorted(topics)) + "\n"


def load_corpus() -> bytes:
    """The shipped corpus snapshot as UTF-8 bytes.  Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    if not CORPUS_PATH.exists():
        raise FileNotFoundError(f"corpus snapshot missing: {CORPUS_PATH} (run scripts/train_zoo.py --refresh-corpus)")
    with gzip.open(CORPUS_PATH, "rb") as f:
        return f.read()


@dataclass
class LMData:
    """Byte-level train/validation token streams and the window length.

    ``batch(split, batch_size, generator)`` samples random windows (for training);
    ``windows(split, n)`` returns ``n`` evenly spaced, fixed windows (for evaluation and
    calibration), so every evaluation sees the same tokens.
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""

    train: torch.Tensor
    val: torch.Tensor
    block_size: int
    info: dict[str, Any] = field(default_factory=dict)

    def _split(self, split: str) -> torch.Tensor:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.train if split == "train" else self.val

    def batch(self, split: str = "train", batch_size: int = 32,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows ``(x, y)``, each ``(batch_size, block_size)``; ``y`` is ``x`` shifted by one."""
        data = self._split(split)
        ix = torch.randint(len(data) - self.block_size - 1, (batch_size,), generator=generator)
        x = torch.stack([data[i:i + self.block_size] for i in ix.tolist()])
        y = torch.stack([data[i + 1:i + 1 + self.block_size] for i in ix.tolist()])
        return x, y

    def windows(self, split: str = "val", n: int | None = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` evenly spaced, non-overlapping windows (all of them when ``n`` is None)."""
        data = self._split(split)
        total = (len(data) - 1) // self.block_size
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
            raise ValueError(f"n must be a positive integer or None, got {n!r}")
        n = total if n is None else min(n, total)
        starts = [(k * total // n) * self.block_size for k in range(n)]
        x = torch.stack([data[s:s + self.block_size] for s in starts])
        y = torch.stack([data[s + 1:s + 1 + self.block_size] for s in starts])
        return x, y


def char_lm_data(block_size: int = CHAR_LM_CONFIG["block_size"]) -> LMData:
    """The language model's data: the corpus bytes, first 90 % train, last 10 % validation.
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    raw = load_corpus()
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    n_val = int(len(data) * VAL_FRACTION)
    info = {"corpus": "pydoc_data/topics.py (CPython 3.11 snapshot)", "bytes": len(data),
            "train_bytes": len(data) - n_val, "val_bytes": n_val}
    return LMData(train=data[:-n_val], val=data[-n_val:], block_size=block_size, info=info)


@dataclass
class DigitsData:
    """The UCI 8×8 digits as float tensors in [0, 1] (pixel / 16), split into train and test.
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)


def digits_data(seed: int = DIGITS_SPLIT_SEED) -> DigitsData:
    """The book's stratified 80/20 split of the UCI digits (scikit-learn's ``load_digits``),
    read from the shipped file :data:`DIGITS_SPLIT_PATH` (``scripts/make_digits_data.py``
    wrote it with ``train_test_split(random_state=seed)``; only seed 0 ships).
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    if isinstance(seed, bool) or seed != DIGITS_SPLIT_SEED:
        raise ValueError(f"seed: only the split with seed {DIGITS_SPLIT_SEED} ships with vramlib, "
                         f"got {seed!r}; pass seed={DIGITS_SPLIT_SEED}, or split scikit-learn's "
                         "load_digits yourself (as scripts/make_digits_data.py does)")
    import numpy as np

    with np.load(DIGITS_SPLIT_PATH, allow_pickle=False) as z:
        a = {k: torch.from_numpy(z[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
    info = {"dataset": DIGITS_DATASET, "n": len(a["y_train"]) + len(a["y_test"]),
            "train": len(a["y_train"]), "test": len(a["y_test"]), "split_seed": seed}
    return DigitsData(a["x_train"].float() / 16.0, a["y_train"].long(),
                      a["x_test"].float() / 16.0, a["y_test"].long(), info)


# --------------------------------------------------------------------------- models
def build_char_lm(**overrides: Any) -> GPT:
    """A fresh (untrained) language model with :data:`CHAR_LM_CONFIG`, fields overridable.
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    cfg = dict(CHAR_LM_CONFIG)
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"unknown GPTConfig fields {sorted(unknown)}; allowed: {sorted(cfg)}")
    cfg.update(overrides)
    return GPT(GPTConfig(**cfg))


def build_digits_classifier(widths: tuple[int, ...] = DIGITS_WIDTHS) -> nn.Sequential:
    """An MLP with ReLU between ``nn.Linear`` layers of the given widths (input first).
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    if len(widths) < 2 or any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in widths):
        raise ValueError(f"widths must be at least two positive integers, got {widths!r}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _load(path: Path, model: nn.Module, device: str | torch.device) -> nn.Module:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint missing: {path} (run scripts/train_zoo.py)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


def load_char_lm(device: str | torch.device = "cpu") -> tuple[GPT, LMData]:
    """The trained language model (eval mode) and its data.  Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    return _load(CHAR_LM_CHECKPOINT, build_char_lm(), device), char_lm_data()


def load_digits_classifier(device: str | torch.device = "cpu") -> tuple[nn.Sequential, DigitsData]:
    """The trained digits MLP (eval mode) and its data.  Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    return _load(DIGITS_CHECKPOINT, build_digits_classifier(), device), digits_data()


def checkpoint_metadata(name: str) -> dict[str, Any]:
    """The JSON metadata saved beside a checkpoint (``"char_lm"`` or ``"digits_mlp"``).
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    if name not in ("char_lm", "digits_mlp"):
        raise ValueError(f"name must be 'char_lm' or 'digits_mlp', got {name!r}")
    return json.loads((CHECKPOINT_DIR / f"{name}.json").read_text())


# --------------------------------------------------------------------------- evaluation
def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    if p is None:
        b = next(model.buffers(), None)
        return b.device if b is not None else torch.device("cpu")
    return p.device


@torch.no_grad()
def evaluate_lm(model: nn.Module, data: LMData, split: str = "val", n_windows: int | None = 64,
                batch_size: int = 32) -> dict[str, float]:
    """Mean next-byte cross-entropy over ``n_windows`` fixed windows of ``split``:
    ``{"loss": nats, "perplexity": e^loss, "bpc": loss / ln 2}``.  Works for any module whose
    ``forward(x)`` returns logits or ``(logits, ...)``.  Restores the model's train/eval mode.
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    x, y = data.windows(split, n_windows)
    dev = _device_of(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
        out = model(xb)
        logits = out[0] if isinstance(out, tuple) else out
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), yb.reshape(-1),
                                 reduction="sum").item()
        count += yb.numel()
    model.train(was_training)
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss), "bpc": loss / math.log(2)}


@torch.no_grad()
def evaluate_classifier(model: nn.Module, data: DigitsData, split: str = "test") -> dict[str, float]:
    """``{"loss": mean cross-entropy, "accuracy": fraction correct}`` on ``split``.
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    x, y = data.split(split)
    dev = _device_of(model)
    was_training = model.training
    model.eval()
    logits = model(x.to(dev)).float()
    model.train(was_training)
    y = y.to(dev)
    return {"loss": F.cross_entropy(logits, y).item(),
            "accuracy": (logits.argmax(-1) == y).float().mean().item()}


SEED_INTERVAL_LEVEL = 0.95  # the confidence of seed_interval's interval
# Two-sided 95 % Student-t quantiles t_{0.975, df}, for intervals over a few seeds.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def accuracy_stderr(accuracy: float, data: DigitsData, split: str = "test") -> float:
    """Sampling standard error ``sqrt(p (1 - p) / n)`` of an accuracy ``p`` measured on the
    ``n`` examples of ``data``'s ``split``: Part II's noise floor for a classifier.  Two
    accuracies within twice this of each other are reported as *not detectable* on this
    test set, never as a gain or a loss.
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy!r}")
    n = len(data.split(split)[1])
    return math.sqrt(accuracy * (1.0 - accuracy) / n)


def seed_interval(values: list[float] | tuple[float, ...]) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of one result repeated over seeds and its 95 %
    Student-t confidence interval, ``mean ± t · s / sqrt(k)`` for ``k >= 3`` values (Part
    II's rule for effects near the noise floor).
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    v = [float(x) for x in values]
    if len(v) < 3:
        raise ValueError(f"seed_interval needs values from at least 3 seeds, got {len(v)}; "
                         "run the experiment with more seeds")
    k = len(v)
    mean = sum(v) / k
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (k - 1))
    t = _T95[max(d for d in _T95 if d <= k - 1)]  # the next smaller df: a wider interval
    half = t * sd / math.sqrt(k)
    return mean, mean - half, mean + half


# --------------------------------------------------------------------------- training
def train_lm(model: nn.Module, data: LMData, steps: int, lr: float = 3e-3, batch_size: int = 32,
             seed: int = 0, weight_decay: float = 0.1, warmup: int = 50, progress: bool = True,
             loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             ) -> list[float]:
    """AdamW with linear warm-up and cosine decay to 10 % of ``lr``; returns the loss per step.
    ``loss_fn(model, x, y)`` replaces the default next-byte cross-entropy (e.g. for
    distillation).  Used to train the checkpoint and to fine-tune compressed models.
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    from tqdm.auto import tqdm
    dev = _device_of(model)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    warmup = min(warmup, max(steps // 10, 1))

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(steps - warmup, 1)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    losses = []
    bar = tqdm(range(steps), desc="train LM", disable=not progress, mininterval=1.0)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = data.batch("train", batch_size, gen)
        x, y = x.to(dev), y.to(dev)
        if loss_fn is None:
            out = model(x, y) if isinstance(model, GPT) else model(x)
            if isinstance(out, tuple) and out[1] is not None:
                loss = out[1]
            else:
                logits = out[0] if isinstance(out, tuple) else out
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        else:
            loss = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def train_classifier(model: nn.Module, data: DigitsData, epochs: int, lr: float = 3e-3,
                     batch_size: int = 64, seed: int = 0, weight_decay: float = 1e-4,
                     progress: bool = True,
                     loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                     ) -> list[float]:
    """Adam with cosine decay over ``epochs`` passes of the training split (seeded shuffles);
    returns the mean loss per epoch.  ``loss_fn(model, x, y)`` replaces cross-entropy.
    Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    from tqdm.auto import tqdm
    dev = _device_of(model)
    gen = torch.Generator().manual_seed(seed)
    x, y = data.x_train.to(dev), data.y_train.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    model.train()
    history = []
    for _ in tqdm(range(epochs), desc="train classifier", disable=not progress, mininterval=1.0):
        perm = torch.randperm(len(x), generator=gen).to(dev)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = (F.cross_entropy(model(x[idx]), y[idx]) if loss_fn is None
                    else loss_fn(model, x[idx], y[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        history.append(total / len(x))
    model.eval()
    return history


def save_checkpoint(model: nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    """Save ``model.state_dict()`` (tensors made contiguous, tied weights stored once by torch)
    and ``metadata`` as JSON beside it (same stem).  Defined in Part II, "Overview: compressing a trained model", section "The models this part compresses"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    meta = dict(metadata)
    meta.setdefault("torch", torch.__version__)
    meta.setdefault("date", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    meta["checkpoint_bytes"] = path.stat().st_size
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
