"""One file through a codec: metrics and a PNG of both spectrograms (``openmrt eval roundtrip``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from openmrt.eval.codec import onset_f1, perplexity, si_sdr
from openmrt.frame import SAMPLE_RATE
from openmrt.spectral import log_mel, mel_l1, stft_distance

__all__ = ["midi_notes", "roundtrip_file", "spectrogram_png"]


def midi_notes(path: str | Path) -> list[tuple[float, float, int]]:
    """(start, end, pitch) of a MIDI file's pitched notes (drum tracks left out)."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(str(path))
    return sorted((n.start, n.end, n.pitch) for inst in pm.instruments if not inst.is_drum for n in inst.notes)


@torch.inference_mode()
def roundtrip_file(model, audio: np.ndarray, levels: int = 12, midi: str | Path | None = None,
                   onsets: bool = False) -> tuple[np.ndarray, dict]:
    """Encode and decode ``audio`` [N, 2] (48 kHz float). Returns (decoded [M, 2], metrics).

    The decoded audio covers the input's first M = (frames − 1)·1920 samples (the last frame has
    no lookahead); metrics compare that span. With ``midi``, note-onset F1 of the original and the
    decoded audio against its notes; with ``onsets`` alone, the decoded transcription against the
    original's (basic-pitch; its first call compiles for ~25 s).
    """
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None].to(device)
    codes = model.encode(x, levels)
    y = model.decode(codes)
    ref = x[:, : y.shape[1]]
    m = {"seconds": round(y.shape[1] / SAMPLE_RATE, 2), "frames": codes.shape[1], "levels": levels,
         "mel_l1": round(float(mel_l1(ref, y)), 4), "stft_distance": round(float(stft_distance(ref, y)), 4),
         "si_sdr_db": round(float(si_sdr(ref, y).mean()), 2),
         "perplexity": [round(p, 1) for p in perplexity(codes[0].cpu().numpy(), model.config.codebook_size)]}
    out = y[0].float().cpu().numpy()
    if midi or onsets:
        from openmrt.data.transcribe import transcribe_notes

        end = len(out) / SAMPLE_RATE - 0.05

        def notes(a: np.ndarray) -> list:
            return [n for n in transcribe_notes(a.T, SAMPLE_RATE) if n[0] < end]

        dec = notes(out)
        if midi:
            ref_notes = [n for n in midi_notes(midi) if n[0] < end]
            m["onset_f1_original"] = round(onset_f1(ref_notes, notes(audio[: len(out)]))[2], 4)
            m["onset_f1_decoded"] = round(onset_f1(ref_notes, dec)[2], 4)
        else:
            m["onset_f1_decoded_vs_original"] = round(onset_f1(notes(audio[: len(out)]), dec)[2], 4)
    return out, m


def spectrogram_png(original: np.ndarray, decoded: np.ndarray, path: str | Path, title: str = "",
                    names: tuple[str, str] = ("original", "decoded")) -> Path:
    """Log-mel spectrograms (mono mix, 128 bands, 10 ms hop) of original over decoded audio [N, 2]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(decoded)
    specs = [log_mel(torch.from_numpy(np.ascontiguousarray(a[:n].mean(1), dtype=np.float32))[None])[0].numpy()
             for a in (original, decoded)]
    lo, hi = max(min(s.min() for s in specs), max(s.max() for s in specs) - 12.0), max(s.max() for s in specs)
    fig, axes = plt.subplots(2, 1, figsize=(12, 6), sharex=True, constrained_layout=True)
    for ax, s, name in zip(axes, specs, names, strict=True):
        im = ax.imshow(s, origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma",
                       extent=(0, s.shape[1] * 0.01, 0, s.shape[0]))
        ax.set_ylabel("mel band")
        ax.set_title(f"{name} {title}".strip())
    axes[1].set_xlabel("seconds")
    fig.colorbar(im, ax=axes, label="log mel magnitude")
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
