"""Log-mel features of our style model: 16 kHz mono, 64 mel bands, 20 ms hop (50 frames per second).

16 kHz mono as MusicCoCa hears it (style lives below 8 kHz); librosa supplies the mel filter bank, torch the STFT.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from openmrt import frame
from openmrt.audio import resample

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 320  # 20 ms
N_MELS = 64
FRAMES_PER_SECOND = SAMPLE_RATE // HOP  # 50
LOG_FLOOR = 1e-5
SILENCE = -1.0  # logmel of digital silence: (log10(LOG_FLOOR) + 2.5) / 2.5

__all__ = ["FRAMES_PER_SECOND", "N_MELS", "SAMPLE_RATE", "SILENCE", "logmel", "to_mono16k"]


@functools.cache
def _mel_basis() -> torch.Tensor:
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=30.0,
                                                fmax=SAMPLE_RATE / 2).astype(np.float32))


def to_mono16k(audio: np.ndarray, sample_rate: int = frame.SAMPLE_RATE) -> np.ndarray:
    """[T, C] or [T] float audio -> float32 [T'] mono (channel average) at 16 kHz (soxr)."""
    a = np.asarray(audio, dtype=np.float32)
    mono = a.mean(axis=1) if a.ndim == 2 else a
    return resample(mono[:, None], sample_rate, SAMPLE_RATE)[:, 0]


def logmel(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """16 kHz mono [T] (or [B, T]) -> [N_MELS, F] (or [B, N_MELS, F]) float32, F = T // 320 + 1.

    log10 of mel power with a floor at -5, shifted and scaled to roughly zero mean, unit spread.
    """
    x = torch.as_tensor(np.asarray(x, dtype=np.float32) if not torch.is_tensor(x) else x, dtype=torch.float32)
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True, return_complex=True)
    mel = _mel_basis() @ spec.abs().pow(2)
    return (torch.log10(mel + LOG_FLOOR) + 2.5) / 2.5
