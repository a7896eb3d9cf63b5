"""``openmrt bench soak``: a live session into a null sink at real-time pace for a set time.

The sink is ``ClockSink`` (a sound card's schedule on the wall clock, the audio thrown away). Every frame's
compute time, the buffer fill after it and the cumulative drops come from the session's own metrics, so the
figures are what ``openmrt play`` would see on this machine. ``hog`` runs a one-core busy loop in another
process beside it (a browser, a DAW, a video call). A measurement, not a test: the tests drive sessions on a
virtual clock (engine/sink.py ``play_virtual``).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

from openmrt import tokens as tk
from openmrt.engine.bundle import Bundle
from openmrt.engine.session import FrameInput, Session
from openmrt.engine.sink import ClockSink
from openmrt.errors import ControlError
from openmrt.frame import FRAME_MS, FRAME_RATE, FRAME_SAMPLES


def machine() -> dict:
    """What the figures were measured on: CPU, cores, load, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def soak(bundle: Bundle, seconds: float, buffer_samples: int = 2048, hog: bool = False, block: int = 480) -> dict:
    """Play ``bundle`` for ``seconds`` of wall-clock time; the figures and the per-frame timeline."""
    if not seconds > 0 or not np.isfinite(seconds):
        raise ControlError(f"--seconds must be a positive number, got {seconds}")
    info = machine()
    cond = tk.make_conditioning()
    session = Session(bundle, lambda: FrameInput(cond), buffer_samples=buffer_samples,
                      history=int(seconds * FRAME_RATE) + 100)
    hog_proc = None
    if hog:  # a separate process: a thread would share our interpreter lock instead of a core
        hog_proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    fills: list[int] = []  # queued samples as the card comes to read: how close each read came to an underrun

    def read(n: int) -> np.ndarray:
        fills.append(session.ring.fill())
        return session.read(n)

    sink = ClockSink(read, block=block)
    t0 = time.perf_counter()
    try:
        session.start()
        sink.play(seconds)
    finally:
        session.stop()
        if hog_proc is not None:
            hog_proc.kill()
            hog_proc.wait()
    wall = time.perf_counter() - t0
    m = list(session.metrics)
    ms = np.array([x.compute_ms for x in m]) if m else np.zeros(1)
    st = session.stats()
    per = max(1, FRAME_SAMPLES // block)
    lows = np.array(fills[: len(fills) // per * per]).reshape(-1, per).min(axis=1) if len(fills) >= per else []
    return {
        "model": bundle.name, "speed": getattr(session.stream, "speed", bundle.speed).describe(),
        "seconds": seconds, "wall_seconds": round(wall, 2), "buffer": buffer_samples,
        "hog": hog, "frames": st.frames, "dropped_frames": st.dropped_frames,
        "underrun_events": st.underrun_events,
        "p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3), "max_ms": round(float(ms.max()), 3),
        "rtf_p50": round(FRAME_MS / max(float(np.percentile(ms, 50)), 1e-9), 2),
        "sink_late_ms_max": round(sink.late_ms_max, 3), "faults": st.extra.get("faults", []),
        "machine": {**info, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "timeline": {
            "t_s": [round(x.t_written - t0, 4) for x in m],
            "compute_ms": [round(x.compute_ms, 3) for x in m],
            "buffer_fill": [x.buffer_fill for x in m],
            "dropped_frames": [x.dropped_frames for x in m],
            "buffer_low": [int(x) for x in lows],  # fewest samples queued at a card read, per 40 ms of playback
        },
    }


def plot(result: dict, path: str) -> None:
    """Compute time per frame against the 40 ms budget, buffer fill, and cumulative drops, over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = result["timeline"]
    fig, (a, b, c) = plt.subplots(3, 1, figsize=(12, 7), sharex=True)
    a.plot(tl["t_s"], tl["compute_ms"], lw=0.6)
    a.axhline(FRAME_MS, color="r", lw=0.8, label="40 ms (real time)")
    a.set_ylabel("compute ms")
    a.legend(loc="upper right")
    a.set_title(f"soak: {result['model']}, buffer {result['buffer']}{', one-core hog' if result['hog'] else ''}: "
                f"p50 {result['p50_ms']:.1f} p99 {result['p99_ms']:.1f} max {result['max_ms']:.1f} ms, "
                f"{result['dropped_frames']} dropped of {result['frames']}")
    low = tl["buffer_low"]
    b.plot(np.arange(len(low)) * FRAME_MS / 1e3, low, lw=0.6)
    b.axhline(result["buffer"], color="gray", lw=0.8)
    b.set_ylabel("fewest queued\nsamples at a read")
    c.plot(tl["t_s"], tl["dropped_frames"], lw=0.8)
    c.set_ylabel("dropped frames")
    c.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
