"""Peak-memory measurement against allocations of known size, in a known order.

Sizes are multiples of 512 bytes so that the CUDA allocator's rounding (512-byte blocks)
does not blur them: the same assertions then hold exactly on the CPU (storage accounting)
and on a GPU (allocator statistics).
"""

import pytest
import torch

from vramlib.measure import measure
from vramlib import (StorageTracker, grad_bytes, optimizer_state_bytes, param_bytes,
                     tensor_bytes, track_memory, warm_up)
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
    if rep.exact:  # storage accounting: y, the temporary y * 2, and the 4-byte scalar
        assert rep.peak == 2 * MiB + 4
        assert rep.end == MiB + 4
    else:          # allocator: 512-byte blocks, plus the reduction kernel's small scratch block(s)
        assert 2 * MiB + 512 <= rep.peak <= 2 * MiB + 4096
        assert rep.end == MiB + 512
    del y, z


def test_measure_returns_result_and_counts_it(device):
    rep = measure(lambda: torch.zeros(256, 1024, device=device), device=device)
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
    warm_up(device)  # on CUDA: cuBLAS workspaces, once per thread, are not the step's memory
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
    # one fp32 `step` counter per parameter tensor; for non-capturable Adam it lives on the CPU
    assert step_bytes == 4 * n
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


def test_cublas_workspace_is_allocator_memory_that_warm_up_absorbs():
    if not torch.cuda.is_available():
        pytest.skip("the cuBLAS workspace exists only on CUDA")
    warm_up("cuda")
    a = torch.randn(256, 256, device="cuda", requires_grad=True)
    with track_memory("cuda") as rep:
        (a @ a).sum().backward()
    # a.grad (256 KiB), the product and its scalar: no tens of MiB of workspace any more
    assert rep.end >= 256 * 1024 and rep.peak < 2 * MiB
