"""Peak-memory measurement against allocations of known size, in a known order.

Sizes are multiples of 512 bytes so that the CUDA allocator's rounding (512-byte blocks)
does not blur them: the same assertions then hold exactly on the CPU (storage accounting)
and on a GPU (allocator statistics).
"""

import pytest
import torch

from vramlib import (StorageTracker, grad_bytes, measure, optimizer_state_bytes, param_bytes,
                     tensor_bytes, track_memory)
from vramlib.models import GPT, GPTConfig

MiB = 2**20


def test_sequence_of_allocations_peak_and_end(device):
    with track_memory(device) as rep:
        a = torch.empty(MiB, dtype=torch.uint8, device=device)        # 1 MiB
        b = torch.empty(MiB // 2, dtype=torch.float32, device=device)  # 2 MiB -> 3 MiB live
        del a                                                         # 2 MiB live
        c = torch.empty(3 * MiB // 4, dtype=torch.int32, device=device)  # +3 MiB -> 5 MiB live (peak)
        del c                                                         # 2 MiB live
    assert rep.peak == 5 * MiB
    assert rep.end == 2 * MiB
    del b


def test_views_share_storage_and_count_once(device):
    with track_memory(device) as rep:
        x = torch.empty(1024, 1024, device=device)  # 4 MiB
        v = x[:10]
        w = x.view(-1)
        del x
    assert rep.peak == 4 * MiB
    assert rep.end == 4 * MiB  # the views keep the storage alive
    del v, w


def test_in_place_ops_allocate_nothing(device):
    x = torch.zeros(1024, 256, device=device)
    with track_memory(device) as rep:
        x.add_(1).mul_(2)
    assert rep.peak == 0 and rep.end == 0


def test_out_of_place_ops_allocate_results(device):
    x = torch.ones(512, 512, device=device)  # 1 MiB
    with track_memory(device) as rep:
        y = x + 1            # 1 MiB
        z = (y * 2).sum()    # temp 1 MiB, then a 4-byte scalar (rounded to 512 B on CUDA)
    expected_scalar = 4 if rep.exact else 512
    assert rep.peak == 2 * MiB + expected_scalar or rep.peak == 2 * MiB
    assert rep.end == MiB + expected_scalar
    del y, z


def test_measure_returns_result_and_counts_it(device):
    rep = measure(torch.zeros, 256, 1024, device=device)
    assert rep.result.shape == (256, 1024)
    assert rep.peak == rep.end == MiB


def test_torch_tensor_literal_is_counted_on_cpu():
    with track_memory("cpu") as rep:
        t = torch.tensor([1.0] * 256)
    assert rep.peak == 1024
    del t


def test_training_step_grads_and_adam_state_exact(device):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=128, block_size=32, n_layer=1, n_head=2, d_model=64)).to(device)
    P = model.num_params()
    opt = torch.optim.Adam(model.parameters(), foreach=False)
    x = torch.randint(0, 128, (2, 32), device=device)
    with track_memory(device) as fb:
        model(x, x)[1].backward()
    assert grad_bytes(model) == 4 * P
    if device == "cpu":  # exact storage accounting: only the gradients stay behind
        assert fb.end == 4 * P
    else:                # allocator blocks: each gradient rounded up to 512 B
        assert 4 * P <= fb.end <= 4 * P + 512 * len(list(model.parameters()))
    assert fb.peak > fb.end
    opt.step()
    state = optimizer_state_bytes(opt)
    n = len(list(model.parameters()))
    step_bytes = state - 8 * P
    assert step_bytes in (4 * n, 8 * n, 0)  # fp32 step counters (CPU) or none/ other dtype
    assert param_bytes(model) == 4 * P


def test_timeline_records_rise_and_fall():
    with track_memory("cpu", timeline=True) as rep:
        a = torch.empty(1000)
        del a
    levels = [b for _, b, _ in rep.timeline]
    assert levels == [4000, 0]


def test_tracker_on_meta_device_counts_without_allocating():
    with StorageTracker("meta") as tr:
        x = torch.empty(10**9, device="meta")  # "4 GB" that never exists
        y = x * 2
        del x
    assert tr.peak == 8 * 10**9 and tr.current == 4 * 10**9
    del y


def test_tensor_bytes_and_errors():
    assert tensor_bytes(torch.empty(3, 4, dtype=torch.float16)) == 24
    with pytest.raises(TypeError):
        tensor_bytes([1, 2, 3])
    with pytest.raises(TypeError):
        measure(42)


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="use 'cpu'"):
        with track_memory("tpu"):
            pass
