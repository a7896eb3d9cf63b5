"""A WAV/FLAC recorder that never loses what was played.

The audio callback only enqueues copies of its blocks; a writer thread appends them to the file
and flushes after every block, so a crash loses at most the blocks still in the queue and the
file on disk is always a valid, readable recording up to that point.

A write that fails (disk full: OSError ENOSPC, or the disk gone) stops the recording with one
clear message (``error``, the log, ``on_error``); what was written stays readable, further blocks
are dropped, and the stream plays on.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from openmrt.errors import DataError

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, path: str | Path, sample_rate: int = 48000, channels: int = 2,
                 on_error: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.sample_rate, self.on_error = sample_rate, on_error
        self.error: str | None = None  # why recording stopped early, None while it records
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
        if self.error is None:
            self._queue.put_nowait(np.array(block, dtype=np.float32, copy=True))

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            if self.error is not None:
                continue  # stopped: drain the queue until close
            try:
                self._file.write(block)
                self._file.flush()
            except Exception as e:  # disk full or gone: stop recording, keep what is on disk, never stop the stream
                self._fail(e)
                continue
            self.frames_written += len(block)

    def _fail(self, e: Exception) -> None:
        full = getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e)  # libsndfile says it in words
        why = "the disk is full" if full else f"writing failed ({e})"
        self.error = (f"recording to {self.path} stopped: {why}; the first {self.frames_written / self.sample_rate:.1f}"
                      " s are kept in the file (free some space and record to a new file)")
        log.error("%s", self.error)
        if self.on_error is not None:
            try:
                self.on_error(self.error)
            except Exception:
                log.exception("recorder: on_error raised")

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        try:
            self._file.close()
        except Exception as e:  # the header update can fail on a full disk too: the samples are on disk already
            if self.error is None:
                self._fail(e)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
