"""Shared helpers for benchmarks: machine description, percentiles, JSON output."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

FRAME_MS = 40.0  # one frame of audio


def _cpuinfo() -> tuple[str, set[str]]:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return cpu, flags


def loadavg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine() -> dict:
    """What the numbers were measured on (CPU and its vector units, cores, load, versions, GPU)."""
    cpu, flags = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    info = {
        "cpu": cpu,
        "cpu_flags": sorted(flags & {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16"}),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": loadavg(),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(), gpu_capability=f"{p.major}.{p.minor}",
                    gpu_memory_gib=round(p.total_memory / 2**30, 1), gpu_sms=p.multi_processor_count,
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
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


def frame_stats(ms) -> dict:
    """The row fields of benchmarks/realtime.py: p50/p95/p99/max/mean ms per frame and rtf = 40 / p50."""
    a = np.asarray(ms, dtype=np.float64)
    p50, p95, p99 = (float(np.percentile(a, q)) for q in (50, 95, 99))
    return {"frames": int(a.size), "p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "p99_ms": round(p99, 3),
            "max_ms": round(float(a.max()), 3), "mean_ms": round(float(a.mean()), 3),
            "rtf": round(FRAME_MS / p50, 3), "rtf_p99": round(FRAME_MS / p99, 3)}


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


def _tree(pid: int) -> list[int]:
    """pid and its descendants (Linux /proc), deepest last."""
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        try:
            for task in os.listdir(f"/proc/{q}/task"):
                with open(f"/proc/{q}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def run_group(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """subprocess.run that, on a timeout, also ends the processes the command started (by id).

    Raises subprocess.TimeoutExpired (with the output so far) after killing them."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in _tree(p.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = p.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout, out, err) from None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)
