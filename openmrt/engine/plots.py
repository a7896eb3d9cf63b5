"""Pictures of what was generated."""

from __future__ import annotations

import numpy as np


def notes_vs_spectrogram(notes: np.ndarray, audio: np.ndarray, path: str) -> None:
    """The notes asked for (values per frame x pitch) over a log spectrogram of the output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mono = audio.mean(axis=1)
    fig, (a, b) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    seconds = len(mono) / 48000
    a.imshow(np.where(notes.T < 0, np.nan, notes.T), aspect="auto", origin="lower", cmap="viridis",
             extent=(0, seconds, 0, 128), interpolation="nearest", vmin=0, vmax=3)
    a.set_ylabel("MIDI pitch (asked)")
    a.set_title("notes asked for: 0 off, 1 held, 2 onset, 3 either; masked = blank")
    b.specgram(mono, NFFT=2048, Fs=48000, noverlap=1536, cmap="magma")
    b.set_ylim(0, 8000)
    b.set_ylabel("Hz")
    b.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
