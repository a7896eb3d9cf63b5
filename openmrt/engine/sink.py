"""A virtual audio sink: drains a session like a sound card would, on the wall clock.

Reads ``block`` samples every ``block / 48000`` seconds on an absolute schedule (no drift),
for machines with no audio device (CI) and for measuring a session's steadiness.
"""

from __future__ import annotations

import threading
import time

import numpy as np


class ClockSink:
    def __init__(self, read, block: int = 480, sample_rate: int = 48000, keep: bool = False):
        self.read, self.block, self.sample_rate = read, block, sample_rate
        self.keep = keep
        self.blocks: list[np.ndarray] = []
        self.late_ms_max = 0.0  # how late the sink itself woke up (should stay small)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self, seconds: float) -> None:
        period = self.block / self.sample_rate
        n = int(round(seconds / period))
        t0 = time.perf_counter()
        for i in range(n):
            if self._stop.is_set():
                break
            due = t0 + i * period
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                self.late_ms_max = max(self.late_ms_max, -delay * 1e3)
            out = self.read(self.block)
            if self.keep:
                self.blocks.append(out.copy())

    def play(self, seconds: float) -> None:
        """Drain for ``seconds`` of audio (blocking)."""
        self._run(seconds)

    def start(self, seconds: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(seconds,), daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def audio(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.zeros((0, 2), np.float32)
