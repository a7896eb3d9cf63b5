"""Control-to-sound latency: from a MIDI note-on to the first output samples that can reflect it.

A live session plays into a wall-clock sink; note-ons are injected at random times. A note that
arrives at time τ is first read by the frame loop at the next control snapshot (frame f); frame
f's tokens become audio one step later (the codec's one-frame lookahead, frame f + 1's step), or
two when the stream is pipelined (the codec decodes on its own thread while the LM makes the next
frame: ``pipeline_ms``); those samples then wait in the buffer until the device reads them at time r.
Latency = r − τ, broken down into those stages.
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np

from openmrt.controls import Controls, LiveControls
from openmrt.engine.bundle import Bundle
from openmrt.engine.session import FrameInput, Session
from openmrt.engine.sink import ClockSink

STAGES = ("frame_boundary_ms", "lm_ms", "codec_ms", "lookahead_ms", "pipeline_ms", "buffer_ms", "total_ms")


def measure(bundle: Bundle, trials: int = 40, buffer_samples: int = 2048, block: int = 480,
            seed: int = 0) -> dict:
    live = LiveControls(Controls(style_tokens=tuple(range(12)), auto_strum=False))
    session = Session(bundle, lambda: FrameInput.from_live(live), buffer_samples=buffer_samples)
    reads: list[tuple[float, int]] = []  # (time of a device read, stream position after it)

    def read(n: int) -> np.ndarray:
        t = time.perf_counter()
        out = session.read(n)
        reads.append((t, session.ring.consumed))
        return out

    rng = random.Random(seed)
    injected: list[float] = []
    session.start()
    seconds = 1.0 + trials * 0.5 + 1.0
    sink = ClockSink(read, block=block)
    sink.start(seconds)

    def inject() -> None:
        time.sleep(1.0)  # past priming
        for i in range(trials):
            time.sleep(0.3 + 0.2 * rng.random())
            pitch = 48 + i % 24
            injected.append(time.perf_counter())
            live.note_on(pitch, 100)
            time.sleep(0.05)
            live.note_off(pitch)

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    injector.join()
    sink.join()
    session.stop()

    frames = list(session.metrics)
    snaps = np.array([m.t_snapshot for m in frames])
    read_t = np.array([t for t, _ in reads])
    read_pos = np.array([p for _, p in reads])
    rows = []
    trail = session.stream.latency_frames  # steps from a frame's tokens to its audio
    for tau in injected:
        f = int(np.searchsorted(snaps, tau))  # first snapshot at or after the note
        if f + trail >= len(frames):
            continue
        this, nxt, sounding = frames[f], frames[f + 1], frames[f + trail]
        k = int(np.searchsorted(read_pos, sounding.start_sample, side="right"))  # first read past its start
        if k >= len(read_t):
            continue
        r = read_t[k]
        rows.append({
            "frame_boundary_ms": (this.t_snapshot - tau) * 1e3,
            "lm_ms": this.lm_ms,
            "codec_ms": this.codec_ms,
            "lookahead_ms": (nxt.t_written - (this.t_snapshot + this.compute_ms / 1e3)) * 1e3,
            "pipeline_ms": (sounding.t_written - nxt.t_written) * 1e3,
            "buffer_ms": (r - sounding.t_written) * 1e3,
            "total_ms": (r - tau) * 1e3,
        })
    summary = {s: {q: round(float(np.percentile([row[s] for row in rows], q)), 2) for q in (50, 95, 99)}
               for s in STAGES} if rows else {}
    return {"trials": len(rows), "buffer_samples": buffer_samples, "device_block": block, "latency_frames": trail,
            "dropped_frames": session.stats().dropped_frames, "stages": summary}
