"""Spectral primitives shared by the codec trainer's losses and the codec metrics: STFTs of audio
[B, N, C], log-mel, the multi-resolution STFT distance, magnitudes of the codec's packed STFT frames.

One definition each, so a logged training loss and a reported metric of the same name agree
(openmrt/train/codec_losses.py, openmrt/eval/codec.py). Differentiable torch code.
"""

from __future__ import annotations

import functools

import torch

from openmrt.frame import SAMPLE_RATE

__all__ = ["LOG_FLOOR", "MEL_BANDS", "MEL_FFT", "MEL_HOP", "STFT_SIZES", "frame_magnitudes", "log_mel", "mel_l1",
           "mono_rows", "stft_complex", "stft_distance", "stft_mag"]

STFT_SIZES = (512, 1024, 2048)  # 11, 21, 43 ms windows at 48 kHz; three sizes keep the CPU cost down
MEL_FFT, MEL_HOP, MEL_BANDS = 2048, 480, 128
LOG_FLOOR = 1e-5


def mono_rows(x: torch.Tensor) -> torch.Tensor:
    """[B, N, C] -> [B·C, N] (channels become rows); [B, N] passes."""
    return x.transpose(1, 2).reshape(-1, x.shape[1]) if x.dim() == 3 else x


def stft_complex(x: torch.Tensor, n_fft: int, hop: int | None = None) -> torch.Tensor:
    """Complex STFT [B·C, n_fft/2 + 1, T] of audio [B, N, C] or [B, N] (float32, Hann window, hop n_fft/4)."""
    x = mono_rows(x).float()
    return torch.stft(x, n_fft, hop or n_fft // 4, window=torch.hann_window(n_fft, device=x.device),
                      return_complex=True)


def stft_mag(x: torch.Tensor, n_fft: int, hop: int | None = None) -> torch.Tensor:
    """Magnitudes [B·C, n_fft/2 + 1, T] of audio [B, N, C] or [B, N] (float32, Hann window)."""
    return stft_complex(x, n_fft, hop).abs().clamp(min=LOG_FLOOR)


@functools.lru_cache(maxsize=8)
def _mel_basis(device: str) -> torch.Tensor:
    import librosa

    fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=MEL_FFT, n_mels=MEL_BANDS, fmin=0.0, fmax=SAMPLE_RATE / 2)
    return torch.from_numpy(fb).float().to(device)


def log_mel(x: torch.Tensor) -> torch.Tensor:
    """Natural-log mel magnitudes [B·C, 128, T] (2048-point FFT, 10 ms hop) of [B, N, C] audio."""
    mag = stft_mag(x, MEL_FFT, MEL_HOP)
    return torch.log(torch.matmul(_mel_basis(str(mag.device)), mag).clamp(min=LOG_FLOOR))


def mel_l1(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    """Mean |log mel(ref) − log mel(est)| (natural log): 0 for identical audio."""
    return (log_mel(ref) - log_mel(est)).abs().mean()


def stft_distance(ref: torch.Tensor, est: torch.Tensor, sizes: tuple[int, ...] = STFT_SIZES) -> torch.Tensor:
    """Multi-resolution STFT distance: mean over sizes of spectral convergence + mean |Δ log magnitude|."""
    total = ref.new_zeros((), dtype=torch.float32)
    for n in sizes:
        r, e = stft_mag(ref, n), stft_mag(est, n)
        sc = torch.linalg.vector_norm(r - e, dim=(1, 2)) / torch.linalg.vector_norm(r, dim=(1, 2)).clamp(min=1e-3)
        total = total + sc.mean() + (r.log() - e.log()).abs().mean()
    return total / len(sizes)


def frame_magnitudes(spec: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Packed codec STFT [B, 4, T, 480] ([Re, Im] per channel) -> magnitudes [B, 2, T, 480] (float32);
    ``eps`` under the root keeps the gradient finite at 0 (losses)."""
    spec = spec.float()
    return torch.sqrt(spec[:, 0::2] ** 2 + spec[:, 1::2] ** 2 + eps)
