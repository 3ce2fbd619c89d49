import pytest
import torch


def available_devices() -> list[str]:
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devs.append("mps")
    return devs


@pytest.fixture(params=available_devices())
def device(request) -> str:
    """Every test that takes ``device`` runs on the CPU and on each accelerator present."""
    return request.param
