"""Knowledge distillation: a small student learns from a large teacher's soft targets.

Hinton, Vinyals and Dean's loss: soften both distributions with a temperature ``T``,
take the KL divergence of the student's from the teacher's, and multiply by ``T²`` so that
its gradients keep their size as ``T`` grows; mix it with the ordinary cross-entropy on the
hard labels.  :func:`kd_loss` is written out; the tests and the chapter check it against
``torch.nn.functional.kl_div``.

Defined in Part II, "Knowledge distillation".
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["soft_targets", "kd_loss", "distillation_loss", "distill"]


def _check_T(T: float) -> float:
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not T > 0:
        raise ValueError(f"temperature T must be a positive number, got {T!r}")
    return float(T)


def soft_targets(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """``softmax(logits / T)`` over the last dimension: ``T > 1`` spreads probability onto
    the wrong-but-plausible classes ("dark knowledge").

    Defined in Part II, "Knowledge distillation", section "Soft targets and temperature".
    """
    return torch.softmax(logits / _check_T(T), dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """``T² · KL(p_T ‖ q_T)`` averaged over examples, with ``p_T = softmax(teacher/T)`` and
    ``q_T = softmax(student/T)``, written out as ``Σ p (log p − log q)``.  Logits of any
    leading shape (``(N, C)`` or ``(B, s, V)``) are flattened to rows.  The teacher gets no
    gradient.  Equals ``T² · F.kl_div(log q, log p, log_target=True, reduction="batchmean")``.

    Defined in Part II, "Knowledge distillation", section "The loss and its $T^2$ factor".
    """
    T = _check_T(T)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    C = student_logits.shape[-1]
    log_q = F.log_softmax(student_logits.reshape(-1, C) / T, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach().reshape(-1, C) / T, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    return T * T * kl


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      T: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """``alpha · kd_loss(T) + (1 − alpha) · cross_entropy(student, targets)``.

    Defined in Part II, "Knowledge distillation", section "The loss and its $T^2$ factor".
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    C = student_logits.shape[-1]
    ce = F.cross_entropy(student_logits.reshape(-1, C), targets.reshape(-1))
    if alpha == 0:
        return ce
    return alpha * kd_loss(student_logits, teacher_logits, T) + (1 - alpha) * ce


def distill(student: nn.Module, teacher: nn.Module | None, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
            steps: int, T: float = 2.0, alpha: float = 0.5, lr: float = 1e-3,
            logits_of: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
            progress: bool = False) -> list[float]:
    """Train ``student`` for ``steps`` AdamW steps on ``(x, y)`` batches with
    :func:`distillation_loss` against a frozen ``teacher`` (``teacher=None`` or ``alpha=0``
    trains on the hard labels only — the baseline).  ``logits_of(model, x)`` maps a model and
    an input to logits (default: ``model(x)``, or its first element if it returns a tuple).
    Returns the loss of each step.

    Defined in Part II, "Knowledge distillation", section "Teacher to student, on the full training set".
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if teacher is None:
        alpha = 0.0

    def default_logits(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = m(x)
        return out[0] if isinstance(out, tuple) else out

    logits_of = logits_of or default_logits
    opt = torch.optim.AdamW(student.parameters(), lr=lr)
    it: Iterator = iter(batches)
    student.train()
    if teacher is not None:
        teacher.eval()
    losses = []
    steps_iter = range(steps)
    if progress:
        from tqdm.auto import tqdm
        steps_iter = tqdm(steps_iter, desc=f"distill T={T} alpha={alpha}")
    for _ in steps_iter:
        x, y = next(it)
        s_logits = logits_of(student, x)
        if alpha > 0:
            with torch.no_grad():
                t_logits = logits_of(teacher, x)
            loss = distillation_loss(s_logits, t_logits, y, T, alpha)
        else:
            loss = F.cross_entropy(s_logits.reshape(-1, s_logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    student.eval()
    return losses
