"""Virtual audio sinks: drain a session like a sound card would.

``ClockSink`` reads ``block`` samples every ``block / 48000`` seconds of the wall clock on an absolute schedule
(no drift), for machines with no audio device (CI) and for measuring a session's steadiness. ``play_virtual``
runs the same back-pressure schedule on a virtual clock, with the engine's frame times given, so tests of
dropping and recovering do not depend on how busy the machine is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from openmrt.frame import FRAME_SAMPLES, SAMPLE_RATE


class ClockSink:
    def __init__(self, read, block: int = 480, sample_rate: int = 48000, keep: bool = False):
        self.read, self.block, self.sample_rate = read, block, sample_rate
        self.keep = keep
        self.blocks: list[np.ndarray] = []
        self.late_ms_max = 0.0  # how late a read finished after its due time (should stay small)
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
            out = self.read(self.block)
            # After the read: a thread that holds the interpreter lock delays a card's callback the same way.
            self.late_ms_max = max(self.late_ms_max, (time.perf_counter() - due) * 1e3)
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


def play_virtual(session, seconds: float, frame_ms: Callable[[int], float], block: int = 480,
                 sample_rate: int = SAMPLE_RATE, prime: int = 3) -> np.ndarray:
    """Play a (not started) session for ``seconds`` of virtual time and return what the card played.

    The engine makes frame i in ``frame_ms(i)`` virtual ms and writes it as soon as it is done and the lead
    (``session.buffer_samples``) has room, else right after the read that makes room (back-pressure, as the frame
    loop does); the card reads ``block`` samples every ``block / sample_rate`` s. ``prime`` frames are queued at
    time 0, as ``Session.start`` does. Underruns are zero-filled and counted by the session's ring buffer."""
    period = block / sample_rate

    def room() -> bool:
        return session.buffer_samples - session.ring.fill() >= FRAME_SAMPLES

    for _ in range(prime):
        session.produce()
    i = prime
    t_ready = frame_ms(i) / 1e3
    out = []
    for k in range(int(round(seconds / period))):
        t_read = k * period
        while t_ready <= t_read and room():  # done before this read, with room: written when done
            session.produce()
            i += 1
            t_ready += frame_ms(i) / 1e3
        out.append(session.read(block).copy())
        if t_ready <= t_read and room():  # it was waiting for room: written right after this read
            session.produce()
            i += 1
            t_ready = t_read + frame_ms(i) / 1e3
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)
