"""Distillation loss against torch's kl_div, the T² factor, and a training loop that learns."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vramlib.compress.distill import distill, distillation_loss, kd_loss, soft_targets


def test_kd_loss_T1_equals_kl_div():
    torch.manual_seed(0)
    s, t = torch.randn(16, 10), torch.randn(16, 10)
    ref = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
    torch.testing.assert_close(kd_loss(s, t, T=1.0), ref)


@pytest.mark.parametrize("T", [0.5, 2.0, 4.0, 10.0])
def test_kd_loss_is_T_squared_kl_div(T):
    torch.manual_seed(1)
    s, t = torch.randn(4, 7, 12), torch.randn(4, 7, 12)
    ref = T * T * F.kl_div(F.log_softmax(s.view(-1, 12) / T, -1), F.softmax(t.view(-1, 12) / T, -1),
                           reduction="batchmean")
    torch.testing.assert_close(kd_loss(s, t, T), ref)


def test_kd_loss_zero_when_equal_and_positive_otherwise():
    z = torch.randn(5, 6)
    assert kd_loss(z, z.clone(), 3.0).abs() < 1e-6
    assert kd_loss(z, -z, 3.0) > 0


def test_T_squared_keeps_gradient_scale_at_high_T():
    # for zero-mean logits and large T, d(T² KL)/dz_s -> (z_s - z_t) / (C · N)
    torch.manual_seed(2)
    C, N = 8, 3
    s = torch.randn(N, C); s -= s.mean(-1, keepdim=True)
    t = torch.randn(N, C); t -= t.mean(-1, keepdim=True)
    s.requires_grad_(True)
    kd_loss(s, t, T=200.0).backward()
    torch.testing.assert_close(s.grad, (s.detach() - t) / (C * N), rtol=2e-2, atol=1e-5)


def test_soft_targets_flatten_with_T():
    z = torch.tensor([[4.0, 1.0, 0.0]])
    p1, p5 = soft_targets(z, 1.0), soft_targets(z, 5.0)
    torch.testing.assert_close(p1.sum(), torch.tensor(1.0))
    assert p5.max() < p1.max() and p5.min() > p1.min()


def test_distillation_loss_mixes():
    torch.manual_seed(3)
    s, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    ce = F.cross_entropy(s, y)
    torch.testing.assert_close(distillation_loss(s, t, y, T=2.0, alpha=0.0), ce)
    torch.testing.assert_close(distillation_loss(s, t, y, T=2.0, alpha=1.0), kd_loss(s, t, 2.0))
    torch.testing.assert_close(distillation_loss(s, t, y, 2.0, 0.25), 0.25 * kd_loss(s, t, 2.0) + 0.75 * ce)


@pytest.mark.slow
def test_distill_student_moves_toward_teacher():
    torch.manual_seed(4)
    teacher = nn.Linear(4, 3)
    student = nn.Linear(4, 3)
    xs = torch.randn(64, 4)

    def batches():
        while True:
            yield xs, teacher(xs).argmax(-1)

    before = kd_loss(student(xs), teacher(xs), 2.0).item()
    losses = distill(student, teacher, batches(), steps=150, T=2.0, alpha=1.0, lr=0.05)
    after = kd_loss(student(xs), teacher(xs), 2.0).item()
    assert after < 0.2 * before and len(losses) == 150


def test_bad_input():
    with pytest.raises(ValueError):
        kd_loss(torch.randn(2, 3), torch.randn(2, 3), T=0)
    with pytest.raises(ValueError):
        kd_loss(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError):
        distillation_loss(torch.randn(2, 3), torch.randn(2, 3), torch.zeros(2, dtype=torch.long), alpha=2)
