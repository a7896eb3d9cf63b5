"""Offline generation: run a ``FrameStream`` for an exact number of samples."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from openmrt.engine.frames import FRAME, FrameStream


def render(stream: FrameStream, num_samples: int, cond_for_frame: Callable[[int], np.ndarray],
           progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Generate exactly ``num_samples`` stereo samples from a fresh or prefilled stream.

    ``cond_for_frame(t)`` gives frame t's raw conditioning. The stream's latency is absorbed:
    frame t's audio arrives with step t + ``stream.latency_frames`` (1, or 2 when pipelined), so
    the first silent steps are dropped and as many extra steps are run (the stream's own thread
    choice, ``FrameStream(threads=, pipeline=)``, decides how many cores it uses).
    Returns (audio [num_samples, 2] float32, tokens [T, 12]).
    """
    frames = -(-num_samples // FRAME)
    lag = stream.latency_frames
    audio, tokens = [], []
    for t in tqdm(range(frames + lag), desc="generating", unit="frame", disable=not progress):
        a, tok = stream.step(cond_for_frame(min(t, frames - 1)))
        if t >= lag:
            audio.append(a)
        if t < frames:
            tokens.append(tok)
    out = np.concatenate(audio)[:num_samples] if audio else np.zeros((0, 2), np.float32)
    return out, np.stack(tokens) if tokens else np.zeros((0, 12), np.int64)
