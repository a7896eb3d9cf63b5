"""A single-producer single-consumer ring buffer of stereo float32 samples.

The frame loop writes whole frames; the audio callback reads whatever block size the device
asks for. Each index is written by one side only, so no lock is needed (CPython makes the int
stores atomic). Underruns are zero-filled and counted, never waited for.
"""

from __future__ import annotations

import numpy as np


class RingBuffer:
    def __init__(self, capacity: int, channels: int = 2):
        self.buf = np.zeros((capacity, channels), dtype=np.float32)
        self.capacity = capacity
        self._write = 0  # total samples written (producer only)
        self._read = 0  # total samples read (consumer only)
        self.underrun_samples = 0  # zero-filled samples (consumer only)
        self.underrun_events = 0

    @property
    def written(self) -> int:
        """Samples written so far (the stream position of the next write)."""
        return self._write

    @property
    def consumed(self) -> int:
        """Samples handed to the consumer so far, real ones only (zero fill excluded)."""
        return self._read

    def fill(self) -> int:
        return self._write - self._read

    def free(self) -> int:
        return self.capacity - self.fill()

    def write(self, x: np.ndarray) -> None:
        """Producer: append [n, C] samples; the caller ensures ``free() >= n``."""
        n = len(x)
        if n > self.free():
            raise RuntimeError(f"ring buffer overflow: {n} samples into {self.free()} free")
        start = self._write % self.capacity
        first = min(n, self.capacity - start)
        self.buf[start : start + first] = x[:first]
        self.buf[: n - first] = x[first:]
        self._write += n

    def read(self, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """Consumer: take n samples; what is missing is zeros (an underrun, counted)."""
        out = np.zeros((n, self.buf.shape[1]), np.float32) if out is None else out
        avail = min(n, self.fill())
        start = self._read % self.capacity
        first = min(avail, self.capacity - start)
        out[:first] = self.buf[start : start + first]
        out[first:avail] = self.buf[: avail - first]
        out[avail:] = 0.0
        if avail < n:
            self.underrun_samples += n - avail
            self.underrun_events += 1
        self._read += avail
        return out

    def clear(self) -> None:
        """Producer side only, while the consumer is paused: drop everything queued."""
        self._read = self._write
