"""A WAV/FLAC recorder that never loses what was played.

The audio callback only enqueues copies of its blocks; a writer thread appends them to the file
and flushes after every block, so a crash loses at most the blocks still in the queue and the
file on disk is always a valid, readable recording up to that point.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from openmrt.errors import DataError


class Recorder:
    def __init__(self, path: str | Path, sample_rate: int = 48000, channels: int = 2):
        self.path = Path(path)
        fmt = {".wav": "WAV", ".flac": "FLAC"}.get(self.path.suffix.lower())
        if fmt is None:
            raise DataError(f"can record to .wav or .flac, not {self.path.name}")
        if self.path.exists():
            raise DataError(f"{self.path} exists; not overwriting a recording (choose another name)")
        self._file = sf.SoundFile(str(self.path), "w", samplerate=sample_rate, channels=channels, format=fmt,
                                  subtype="PCM_24" if fmt == "FLAC" else "FLOAT")
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue()
        self.frames_written = 0
        self._thread = threading.Thread(target=self._run, name="openmrt-recorder", daemon=True)
        self._thread.start()

    def push(self, block: np.ndarray) -> None:
        """Audio thread: queue a copy (never blocks, never touches the disk)."""
        self._queue.put_nowait(np.array(block, dtype=np.float32, copy=True))

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            self._file.write(block)
            self._file.flush()
            self.frames_written += len(block)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._file.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
