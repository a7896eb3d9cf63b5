"""A picture of one example of a shard: spectrogram, piano roll (onsets marked) and drum flag, on
one time axis, so label alignment can be checked by eye."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from openmrt.data.shards import load_shard
from openmrt.errors import DataError
from openmrt.frame import FRAME_RATE, FRAME_SAMPLES, SAMPLE_RATE

__all__ = ["show_example"]


def show_example(shard_file: str | Path, out_png: str | Path, example: int = 0, seconds: float | None = 20.0) -> Path:
    """Write a PNG of example ``example`` (its first ``seconds``, or all of it with None)."""
    import librosa
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    shard = load_shard(shard_file)
    if not 0 <= example < len(shard):
        raise DataError(f"{shard_file} has {len(shard)} examples; no example {example}")
    ex = shard.example(example)
    frames = ex["notes"].shape[0] if seconds is None else min(ex["notes"].shape[0], int(seconds * FRAME_RATE))
    notes, drums = ex["notes"][:frames], ex["drums"][:frames]
    mono = ex["audio"][:, : frames * FRAME_SAMPLES].astype(np.float32).mean(0) / 32768.0
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=mono, sr=SAMPLE_RATE, n_fft=4096,
                                                             hop_length=FRAME_SAMPLES, n_mels=128, fmax=16000),
                              ref=np.max)
    t_end = frames / FRAME_RATE
    fig, axes = plt.subplots(3, 1, figsize=(14, 9), sharex=True, gridspec_kw={"height_ratios": [3, 4, 0.6]})
    axes[0].imshow(mel, origin="lower", aspect="auto", extent=[0, t_end, 0, 128], cmap="magma")
    axes[0].set_ylabel("mel band")
    axes[0].set_title(ex["meta"].get("caption", "")[:160], fontsize=9)
    active = np.nonzero((notes > 0).any(0))[0]
    lo, hi = (int(active.min()) - 2, int(active.max()) + 3) if len(active) else (36, 96)
    roll = np.where(notes == 2, 2.0, np.where(notes == 1, 1.0, 0.0)).T[lo:hi]
    axes[1].imshow(roll, origin="lower", aspect="auto", extent=[0, t_end, lo, hi], cmap="Greys", vmin=0, vmax=2,
                   interpolation="nearest")
    axes[1].set_ylabel("MIDI pitch (black: onset frame)")
    axes[2].fill_between(np.arange(frames + 1) / FRAME_RATE, np.append(drums, drums[-1:]), step="post", color="tab:red")
    axes[2].set_yticks([0, 1])
    axes[2].set_ylabel("drums")
    axes[2].set_xlabel("seconds")
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
