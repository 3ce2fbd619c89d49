import pytest
import torch

from vramlib import describe_device, device_info, experiment_scale, pick_device, seed_everything


def test_pick_device_defaults_to_best_available(monkeypatch):
    monkeypatch.delenv("VRAMLIB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu")
    assert pick_device().type == expected


def test_environment_variable_forces_cpu(monkeypatch):
    monkeypatch.setenv("VRAMLIB_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "", "gpu0"])
def test_unknown_device_names_say_what_to_use(bad):
    with pytest.raises(ValueError, match="cpu"):
        pick_device(bad)


def test_bad_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("VRAMLIB_DEVICE", "quantum")
    with pytest.raises(ValueError, match="VRAMLIB_DEVICE"):
        pick_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_missing_cuda_explains():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda")


def test_describe_device_is_one_line_with_torch_version(device):
    line = describe_device(device)
    assert "\n" not in line and torch.__version__ in line
    info = device_info(device)
    assert info["kind"] == device and info["memory_bytes"] and info["memory_bytes"] > 0


def test_scale_policy(monkeypatch):
    monkeypatch.delenv("VRAMLIB_SCALE", raising=False)
    assert experiment_scale("cpu").name == "small"
    assert experiment_scale("cpu").pick(small=1, full=2) == 1
    monkeypatch.setenv("VRAMLIB_SCALE", "full")
    assert experiment_scale("cpu").pick(small=1, full=2) == 2
    monkeypatch.setenv("VRAMLIB_SCALE", "huge")
    with pytest.raises(ValueError, match="small"):
        experiment_scale("cpu")


def test_seed_everything_reproduces_and_validates():
    seed_everything(3)
    a = torch.randn(4)
    seed_everything(3)
    assert torch.equal(a, torch.randn(4))
    with pytest.raises(ValueError):
        seed_everything(-1)
