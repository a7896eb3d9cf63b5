"""Shared helpers for benchmarks: machine description, percentiles, JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

FRAME_MS = 40.0  # one frame of audio


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def summarize(ms: list[float]) -> dict:
    """p50/p95/p99 ms per frame and the real-time factor (40 ms / frame time: higher is better)."""
    a = np.asarray(ms)
    p50, p95, p99 = (float(np.percentile(a, q)) for q in (50, 95, 99))
    return {
        "frames": len(a),
        "p50_ms": round(p50, 3),
        "p95_ms": round(p95, 3),
        "p99_ms": round(p99, 3),
        "mean_ms": round(float(a.mean()), 3),
        "rtf_p50": round(FRAME_MS / p50, 2),
        "rtf_p99": round(FRAME_MS / p99, 2),
    }


def timed(fn, device: torch.device) -> float:
    """Wall ms of one call (synchronising CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def write(results: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {path}")
