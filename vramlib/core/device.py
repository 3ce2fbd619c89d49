"""Which device runs the book's experiments, and a one-line description of it.

Order of preference: CUDA, then Apple MPS, then the CPU.  The environment variable
``VRAMLIB_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) forces a choice.
Defined in Chapter 0, "Which device am I on?".
"""

from __future__ import annotations

import os
import platform

import torch

from .units import fmt_bytes

ENV_VAR = "VRAMLIB_DEVICE"
_KINDS = ("cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _parse(name: str) -> torch.device:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"device must be a name such as 'cpu', 'cuda', 'cuda:1' or 'mps', got {name!r}")
    text = name.strip().lower()
    kind, _, index = text.partition(":")
    if kind not in _KINDS or (index and not index.isdigit()):
        raise ValueError(
            f"unknown device {name!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps' "
            f"(or unset {ENV_VAR} to let the book choose)"
        )
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} was asked for but torch sees no CUDA GPU "
                f"(torch {torch.__version__}); use 'cpu', or install a CUDA build of torch"
            )
        n = torch.cuda.device_count()
        if index and int(index) >= n:
            raise ValueError(f"device {name!r} does not exist: torch sees {n} CUDA device(s), cuda:0..cuda:{n - 1}")
    if kind == "mps" and not _mps_available():
        raise ValueError(f"device {name!r} was asked for but Apple MPS is not available here; use 'cpu'")
    return torch.device(text)


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return the device the experiments run on.

    ``prefer`` (or else the ``VRAMLIB_DEVICE`` environment variable) forces a device;
    otherwise CUDA, then MPS, then CPU.  An unknown or unavailable device raises a
    ``ValueError`` that says what to use instead.  Defined in Chapter 0, "Which device am I on?".
    """
    if isinstance(prefer, torch.device):
        return _parse(str(prefer))
    if prefer is not None:
        return _parse(prefer)
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced:
        try:
            return _parse(forced)
        except ValueError as e:
            raise ValueError(f"{ENV_VAR}={forced!r}: {e}") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def device_info(device: str | torch.device | None = None) -> dict:
    """The facts about a device that the book records next to every measurement.

    Keys: ``kind``, ``name``, ``memory_bytes``, ``torch``, and for CUDA ``capability``,
    ``cuda`` and ``driver`` where torch can tell.  Defined in Chapter 0, "Which device am I on?".
    """
    dev = pick_device(device)
    info: dict = {"kind": dev.type, "torch": torch.__version__}
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update(
            name=props.name,
            memory_bytes=int(props.total_memory),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
        )
        try:
            import subprocess

            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10,
            )
            if out.returncode == 0:
                info["driver"] = out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
    elif dev.type == "mps":
        info.update(name=f"Apple MPS ({platform.machine()})", memory_bytes=_ram_bytes())
    else:
        info.update(name=_cpu_name(), memory_bytes=_ram_bytes(), cores=os.cpu_count())
    return info


def describe_device(device: str | torch.device | None = None) -> str:
    """One line for a notebook: device name, memory and torch version.

    Defined in Chapter 0, "Which device am I on?".
    """
    info = device_info(device)
    mem = fmt_bytes(info["memory_bytes"]) if info.get("memory_bytes") else "unknown memory"
    if info["kind"] == "cuda":
        return (f"CUDA GPU: {info['name']}, {mem}, compute capability {info['capability']}, "
                f"torch {info['torch']} (CUDA {info['cuda']})")
    if info["kind"] == "mps":
        return f"Apple GPU (MPS), sharing {mem} of system memory, torch {info['torch']}"
    return f"CPU: {info['name']} ({info.get('cores')} cores), {mem} RAM, torch {info['torch']}"
