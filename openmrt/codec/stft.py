"""SpectroStream's STFT front end and its causal inverse (shared/spec/spectrostream.md §3, §7).

Layout inside the codec is ``[B, 4, T, 480]`` (channels first, then 100 Hz STFT frames, then
frequency bins) with the channels ``[Re L, Im L, Re R, Im R]``. Frame ``f`` covers samples
``[480 f, 480 f + 960)``; the DC bin is kept and the Nyquist bin dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from openmrt.streaming import StreamState

FRAME = 960  # window length = n_fft
HOP = 480
BINS = 480  # rfft gives 481; the Nyquist bin is dropped


def analysis_window(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """Periodic Hann window of 960, computed in float64 then cast once. [960]"""
    n = torch.arange(FRAME, dtype=torch.float64)
    w = 0.5 - 0.5 * torch.cos(2 * math.pi * n / FRAME)
    return w.to(device=device, dtype=dtype)


def synthesis_window(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """Griffin–Lim synthesis window w[n] / (w[n]² + w[n+480 mod 960]²) (tf inverse_stft_window_fn). [960]"""
    w = analysis_window(torch.float64)
    ws = w / (w * w + torch.roll(w, -HOP) ** 2)
    return ws.to(device=device, dtype=dtype)


def _as_stereo(audio: torch.Tensor) -> torch.Tensor:
    """[B, N] (mono, duplicated) or [B, N, 2] -> [B, N, 2]."""
    if audio.dim() == 2:
        return audio.unsqueeze(-1).expand(-1, -1, 2)
    if audio.dim() != 3 or audio.shape[-1] != 2:
        raise ValueError(f"audio must be [B, N, 2] or [B, N], got {tuple(audio.shape)}")
    return audio


def frames_to_spec(frames: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Windowed frames [B, 2, T, 960] -> packed spectrogram [B, 4, T, 480]."""
    b, _, t, _ = frames.shape
    z = torch.fft.rfft(frames * window, n=FRAME)[..., :BINS]  # [B, 2, T, 480] complex, Nyquist dropped
    z = torch.view_as_real(z)  # [B, 2, T, 480, (re, im)]
    return z.permute(0, 1, 4, 2, 3).reshape(b, 4, t, BINS)


def stft(audio: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
    """Whole-sequence STFT (layer mode).

    Args:
        audio: [B, N, 2] stereo (or [B, N] mono, giving dual mono).
        num_frames: frames to produce; default ceil(N / 480). Missing samples are zeros.
    Returns:
        [B, 4, num_frames, 480] with channels [Re L, Im L, Re R, Im R].
    """
    audio = _as_stereo(audio)
    n = audio.shape[1]
    t = -(-n // HOP) if num_frames is None else num_frames
    need = (t - 1) * HOP + FRAME
    x = audio.transpose(1, 2)  # [B, 2, N]
    x = torch.nn.functional.pad(x, (0, max(need - n, 0)))[..., :need]
    frames = x.unfold(-1, FRAME, HOP)  # [B, 2, T, 960]
    return frames_to_spec(frames, analysis_window(audio.dtype, audio.device))


def spec_to_frames(spec: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Packed spectrogram [B, 4, T, 480] -> windowed time frames [B, 2, T, 960]."""
    b, _, t, _ = spec.shape
    z = spec.reshape(b, 2, 2, t, BINS).permute(0, 1, 3, 4, 2)  # [B, 2, T, 480, (re, im)]
    z = torch.nn.functional.pad(z, (0, 0, 0, 1))  # zero Nyquist bin -> 481
    z = torch.view_as_complex(z.contiguous())
    return torch.fft.irfft(z, n=FRAME) * window  # imag part of DC is ignored by irfft


def istft(spec: torch.Tensor) -> torch.Tensor:
    """Whole-sequence causal inverse STFT: T frames give exactly 480·T samples.

    Args:
        spec: [B, 4, T, 480] packed as :func:`stft` returns.
    Returns:
        [B, 480 T, 2]; the overlap tail of the last frame is trimmed.
    """
    b, _, t, _ = spec.shape
    frames = spec_to_frames(spec, synthesis_window(spec.dtype, spec.device))  # [B, 2, T, 960]
    head, tail = frames[..., :HOP], frames[..., HOP:]
    out = head + torch.nn.functional.pad(tail, (0, 0, 1, 0))[:, :, :t]  # frame j gets tail of j-1
    return out.reshape(b, 2, t * HOP).transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# Streaming


@dataclass
class StftState(StreamState):
    """Analysis side: the previous input block, whose samples the next frames overlap. [B, 2, block]"""

    prev: torch.Tensor


@dataclass
class IstftState(StreamState):
    """Synthesis side: the second half of the last frame, added to the next one. [B, 2, 480]"""

    carry: torch.Tensor


def init_stft_state(batch: int, block: int, device=None, dtype=torch.float32) -> StftState:
    return StftState(prev=torch.zeros(batch, 2, block, device=device, dtype=dtype))


def stft_step(block: torch.Tensor, state: StftState, window: torch.Tensor) -> torch.Tensor:
    """STFT of one block of ``k·480`` new samples, one block late.

    Emits the k frames that start in the *previous* block; the last of them reaches 480
    samples into the current block, so one block of delay suffices.

    Args:
        block: [B, k·480, 2]
    Returns:
        [B, 4, k, 480]; frames of a fresh state's first call start before sample 0 (see the encoder).
    """
    x = block.transpose(1, 2)  # [B, 2, k·480]
    k = x.shape[-1] // HOP
    buf = torch.cat([state.prev, x[..., :HOP]], dim=-1)  # [B, 2, (k+1)·480]
    frames = buf.unfold(-1, FRAME, HOP)  # [B, 2, k, 960]
    spec = frames_to_spec(frames, window)
    state.prev.copy_(x)
    assert spec.shape[2] == k
    return spec


def init_istft_state(batch: int, device=None, dtype=torch.float32) -> IstftState:
    return IstftState(carry=torch.zeros(batch, 2, HOP, device=device, dtype=dtype))


def istft_step(spec: torch.Tensor, state: IstftState, window: torch.Tensor) -> torch.Tensor:
    """Causal inverse STFT of k frames: 480·k finished samples; the last half frame is carried.

    Args:
        spec: [B, 4, k, 480]
    Returns:
        [B, 480 k, 2]
    """
    b, _, k, _ = spec.shape
    frames = spec_to_frames(spec, window)  # [B, 2, k, 960]
    head = frames[..., :HOP].clone()
    head[:, :, 0] += state.carry
    if k > 1:
        head[:, :, 1:] += frames[:, :, :-1, HOP:]
    state.carry.copy_(frames[:, :, -1, HOP:])
    return head.reshape(b, 2, k * HOP).transpose(1, 2)
