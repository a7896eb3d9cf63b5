"""Where a model runs: the one ``--device`` / ``--dtype`` rule every command shares.

``auto`` means the first CUDA GPU when PyTorch sees one, else the CPU. The LM computes in bfloat16
on a GPU (the official default) and in float32 on the CPU unless asked otherwise; the codec stays
in float32 everywhere (its speed-ups are the codec's own options, measured in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os

import torch

from openmrt.errors import ConfigError

DTYPES = {"float32": torch.float32, "f32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "f16": torch.float16}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a torch.device (ConfigError when it is not there)."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: PyTorch sees no CUDA GPU here (use --device cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type != "cpu":
        raise ConfigError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    return dev


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The LM's compute dtype: ``auto``/None = bfloat16 on CUDA, float32 on the CPU; ``int8`` keeps a
    float32 model (the int8 weights are packed from it when a stream starts)."""
    if isinstance(name, torch.dtype):
        return name
    if name == "int8":
        if device.type != "cpu":
            raise ConfigError("--dtype int8 runs on the CPU only; on a GPU use --dtype auto (bfloat16)")
        return torch.float32
    if name in (None, "", "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ConfigError(f"--dtype: expected auto, float32 or bfloat16, got {name!r}") from None


def add_device_args(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype`` for a command that runs a model."""
    p.add_argument("--device", default="auto", help="compute device: auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto",
                   help="compute precision: auto (the fastest measured setting on this device: bfloat16 + CUDA graphs "
                        "on a GPU; on a CPU int8 LM weights and a bfloat16/int8 codec for full-size models, float32 "
                        "for small ones), float32 (exact), bfloat16, int8 (CPU)")


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask), busy or not."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_cores() -> int:
    """CPU cores this process may use that are not busy with other work right now (at least 1).

    Uses the 1-minute load average against the cores in our affinity mask: two compute threads
    spinning against a busy neighbour collapse (docs/benchmarks.md), one thread slows gracefully."""
    cores = cpu_cores()
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))
