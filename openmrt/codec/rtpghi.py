"""The demo codec v2's phase head: causal real-time phase-gradient heap integration (RTPGHI) on a
2160/240 periodic-Hann grid, and the grid's analysis STFT and streaming inverse.

RTPGHI (Průša & Holighaus, "A noniterative method for reconstruction of phase from STFT magnitude",
TASLP 2017, and its real-time variant, DAFx-16) rebuilds the phase of frame n from its log-magnitude
s and that of frame n − 1, with no lookahead. For a Gaussian window exp(−π t²/λ), the magnitude's
slopes give the phase's: along frequency, a partial at bin ξ has s ≈ −πλ(m − ξ)²/M², so its phase
advances per hop by 2π a/M · (m + M²/(2πλ) ∂s/∂m); along time, an impulse at t₀ has s ≈ −π(t₀ − x)²/λ,
so the phase changes per bin by −π − (λ/M) ∂s/∂x (−π: frames are unrotated, their time origin at the
window's start). The Hann window is treated as the Gaussian with λ = 0.25645 M². Bins are visited from
the loudest down (a max-heap holding the previous frame's and the current frame's bins): a previous
bin passes its phase forward in time (trapezoid rule), a current bin to its frequency neighbours; bins
more than ``tol`` under the loudest get the time-integrated phase without heap order.

Grid. Frame g of a clip covers samples [240 g − 1920, 240 g + 240): the audio is padded with 1920
zeros on the left, so the eight frames of token block k end inside token k (frame 8k + 7 ends exactly
at its end) and a causal decoder needs no audio lookahead. Synthesis overlap-adds frames with the
canonical dual window w / Σⱼ w²(n − 240 j) = w / 3.375; after block k, samples before 1920 k are final,
so decoding block k (sent with token k) finishes token k − 1's audio: one token of latency, as the
SpectroStream decoder. The streaming states are fixed-size: previous log-magnitude and phase [B, 1081]
for RTPGHI, the last 1920 samples of overlap [B, C, 1920] for the inverse.

The heap walk runs in numba (installed with librosa); without numba it falls back to the same code in
plain Python (~100× slower: tests and offline use only).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from openmrt.frame import FRAME_SAMPLES
from openmrt.streaming import StreamState

WIN = 2160  # window length = FFT size (45 ms)
HOP = 240  # 5 ms
BINS = WIN // 2 + 1  # 1081
FRAMES_PER_TOKEN = FRAME_SAMPLES // HOP  # 8
PAD = WIN - HOP  # 1920 samples of left padding: frame g starts at 240 g − 1920
LAMBDA = 0.25645 * WIN * WIN  # the Gaussian a Hann window of length WIN is treated as (λ in samples²)
DEFAULT_TOL = 1e-3
_FLOOR = 1e-9  # magnitudes under this count as silence (log floor)


@functools.cache  # built once per (dtype, device, length): the streaming steps ask for it every frame; never mutated
def window(dtype=torch.float32, device=None, length: int = WIN) -> torch.Tensor:
    """Periodic Hann window of ``length`` (the grid's 2160; computed in float64, cast once). [length]"""
    with torch.inference_mode(False):  # cached: a first call under inference mode must not make it unusable in training
        n = torch.arange(length, dtype=torch.float64)
        return (0.5 - 0.5 * torch.cos(2 * math.pi * n / length)).to(device=device, dtype=dtype)


@functools.cache
def dual_window(dtype=torch.float32, device=None) -> torch.Tensor:
    """Synthesis window: w / Σⱼ w²(n − 240 j), the constant 3·2160/(8·240) = 3.375 for this grid. [2160]"""
    with torch.inference_mode(False):
        return (window(torch.float64) / (3 * WIN / (8 * HOP))).to(device=device, dtype=dtype)


def frames_for(samples: int) -> int:
    """Grid frames of a clip of ``samples``: 8 per started token (frame 8k + 7 ends with token k)."""
    return FRAMES_PER_TOKEN * -(-samples // FRAME_SAMPLES)


def analysis(audio: torch.Tensor, frames: int | None = None) -> torch.Tensor:
    """Complex STFT on the grid: [B, N, C] (or [B, N]) -> [B, C, F, 1081], F = ``frames_for(N)`` by default.

    Unnormalised (a full-scale sinusoid of amplitude A peaks near 540 A); zeros before and after the clip.
    """
    x = audio.unsqueeze(-1) if audio.dim() == 2 else audio
    x = x.transpose(1, 2).float()  # [B, C, N]
    f = frames_for(x.shape[-1]) if frames is None else frames
    need = (f - 1) * HOP + WIN
    x = torch.nn.functional.pad(x, (PAD, max(0, need - PAD - x.shape[-1])))[..., :need]
    return torch.fft.rfft(x.unfold(-1, WIN, HOP) * window(device=x.device), n=WIN)


# ------------------------------------------------------------------------------------ RTPGHI kernel


def _heap_push(hv, hi, n, v, i):
    """Push (v, i) on the max-heap held in hv/hi[:n]; returns the new size."""
    k = n
    hv[k], hi[k] = v, i
    while k > 0:
        p = (k - 1) // 2
        if hv[p] >= hv[k]:
            break
        hv[p], hv[k] = hv[k], hv[p]
        hi[p], hi[k] = hi[k], hi[p]
        k = p
    return n + 1


def _heap_pop(hv, hi, n):
    """Pop the largest; returns (index, new size)."""
    top = hi[0]
    n -= 1
    hv[0], hi[0] = hv[n], hi[n]
    k = 0
    while True:
        left, right, big = 2 * k + 1, 2 * k + 2, k
        if left < n and hv[left] > hv[big]:
            big = left
        if right < n and hv[right] > hv[big]:
            big = right
        if big == k:
            break
        hv[big], hv[k] = hv[k], hv[big]
        hi[big], hi[k] = hi[k], hi[big]
        k = big
    return top, n


def _tgrad(s, out, a, m_size, lam):
    """Phase advance per hop at every bin from the log-magnitude's slope along frequency."""
    nb = s.shape[0]
    c = m_size * m_size / (2 * math.pi * lam)
    for m in range(nb):
        lo, hi = max(m - 1, 0), min(m + 1, nb - 1)
        ds = (s[hi] - s[lo]) / (hi - lo)
        out[m] = 2 * math.pi * a / m_size * (m + c * ds)


def _frames(logs, s_prev, phi_prev, phase, a, m_size, lam, tol_log, floor_log):
    """RTPGHI over frames logs [B, F, nb] (log-magnitudes), state s_prev/phi_prev [B, nb] updated in place;
    writes phase [B, F, nb]."""
    bsz, nf, nb = logs.shape
    tg_prev, tg, fg = np.empty(nb), np.empty(nb), np.empty(nb)
    done = np.zeros(nb, np.bool_)
    hv, hi = np.empty(2 * nb), np.empty(2 * nb, np.int64)
    max_shift = m_size / 2.0  # an impulse lies inside the window: bounds the group delay at onsets
    for b in range(bsz):
        for f in range(nf):
            s, sp, pp, phi = logs[b, f], s_prev[b], phi_prev[b], phase[b, f]
            _tgrad(sp, tg_prev, a, m_size, lam)
            _tgrad(s, tg, a, m_size, lam)
            for m in range(nb):
                shift = lam / (2 * math.pi) * (s[m] - sp[m]) / a
                shift = min(max(shift, -max_shift), max_shift)
                fg[m] = -math.pi - 2 * math.pi / m_size * shift
            top = max(s.max(), sp.max())
            thr = max(top + tol_log, floor_log)
            left = 0
            for m in range(nb):
                done[m] = s[m] < thr
                if done[m]:
                    phi[m] = pp[m] + 0.5 * (tg_prev[m] + tg[m])
                else:
                    left += 1
            n = 0
            for m in range(nb):
                if sp[m] >= thr:
                    n = _heap_push(hv, hi, n, sp[m], m)
            while left > 0:
                if n == 0:  # an island the previous frame does not reach: seed its loudest bin in time
                    best, bv = -1, -np.inf
                    for m in range(nb):
                        if not done[m] and s[m] > bv:
                            best, bv = m, s[m]
                    phi[best] = pp[best] + 0.5 * (tg_prev[best] + tg[best])
                    done[best] = True
                    left -= 1
                    n = _heap_push(hv, hi, n, s[best], best + nb)
                    continue
                i, n = _heap_pop(hv, hi, n)
                if i < nb:  # previous frame: pass forward in time
                    if not done[i]:
                        phi[i] = pp[i] + 0.5 * (tg_prev[i] + tg[i])
                        done[i] = True
                        left -= 1
                        n = _heap_push(hv, hi, n, s[i], i + nb)
                else:  # current frame: pass to the frequency neighbours
                    m = i - nb
                    if m + 1 < nb and not done[m + 1]:
                        phi[m + 1] = phi[m] + 0.5 * (fg[m] + fg[m + 1])
                        done[m + 1] = True
                        left -= 1
                        n = _heap_push(hv, hi, n, s[m + 1], m + 1 + nb)
                    if m - 1 >= 0 and not done[m - 1]:
                        phi[m - 1] = phi[m] - 0.5 * (fg[m] + fg[m - 1])
                        done[m - 1] = True
                        left -= 1
                        n = _heap_push(hv, hi, n, s[m - 1], m - 1 + nb)
            for m in range(nb):  # wrap: the state stays bounded however long the stream
                phi[m] -= 2 * math.pi * math.floor(phi[m] / (2 * math.pi) + 0.5)
                pp[m] = phi[m]
                sp[m] = s[m]


try:
    import numba

    _jit = numba.njit(cache=True, nogil=True)
    _heap_push, _heap_pop, _tgrad = _jit(_heap_push), _jit(_heap_pop), _jit(_tgrad)
    _frames = _jit(_frames)
    HAVE_NUMBA = True
except ImportError:  # the GPU image: training needs no phase head
    HAVE_NUMBA = False


# ------------------------------------------------------------------------------------ the phase head


@dataclass
class PhaseState(StreamState):
    """RTPGHI's memory: the last frame's log-magnitude and phase, [B, 1081] float64 (CPU)."""

    logmag: torch.Tensor
    phase: torch.Tensor


def init_phase_state(batch: int) -> PhaseState:
    """A fresh stream: the frame before the first is silence (its log-magnitude is the floor)."""
    return PhaseState(logmag=torch.full((batch, BINS), math.log(_FLOOR), dtype=torch.float64),
                      phase=torch.zeros(batch, BINS, dtype=torch.float64))


def rtpghi_step(mag: torch.Tensor, state: PhaseState, tol: float = DEFAULT_TOL) -> torch.Tensor:
    """Phases [B, F, 1081] (float64, CPU) for magnitudes [B, F, 1081] that follow ``state``'s frame.

    Updates ``state`` in place. ``tol``: bins more than this ratio under the frame's peak skip the heap.
    """
    if mag.dim() != 3 or mag.shape[-1] != BINS:
        raise ValueError(f"RTPGHI takes magnitudes [B, F, {BINS}], got {tuple(mag.shape)}")
    logs = torch.log(mag.detach().to("cpu", torch.float64).clamp(min=_FLOOR)).numpy()
    phase = np.zeros_like(logs)
    sp, pp = state.logmag.numpy(), state.phase.numpy()  # views: the kernel updates the state in place
    _frames(np.ascontiguousarray(logs), sp, pp, phase, float(HOP), float(WIN), LAMBDA, math.log(tol),
            math.log(_FLOOR))
    return torch.from_numpy(phase)


def rtpghi(mag: torch.Tensor, tol: float = DEFAULT_TOL) -> torch.Tensor:
    """Whole sequence: phases [B, F, 1081] for magnitudes [B, F, 1081], from a silent past."""
    return rtpghi_step(mag, init_phase_state(mag.shape[0]), tol)


# ------------------------------------------------------------------------------------ inverse STFT


@dataclass
class SynthesisState(StreamState):
    """Overlap not yet finished: the last 1920 samples the frames so far reach into. [B, C, 1920]"""

    carry: torch.Tensor


def init_synthesis_state(batch: int, channels: int = 2, device=None, dtype=torch.float32) -> SynthesisState:
    return SynthesisState(carry=torch.zeros(batch, channels, PAD, device=device, dtype=dtype))


def _windowed_frames(spec: torch.Tensor) -> torch.Tensor:
    """Complex [B, C, F, 1081] -> dual-windowed time frames [B, C, F, 2160]."""
    return torch.fft.irfft(spec, n=WIN) * dual_window(spec.real.dtype, spec.device)


def synthesis_step(spec: torch.Tensor, state: SynthesisState) -> torch.Tensor:
    """Overlap-add complex frames [B, C, F, 1081] (F a multiple of 8) after those already added:
    returns the 240 F samples they finish, [B, 240 F, C]; updates ``state`` in place."""
    b, c, f, _ = spec.shape
    frames = _windowed_frames(spec)
    n = f * HOP
    buf = torch.zeros(b, c, n + PAD, dtype=frames.dtype, device=frames.device)
    buf[..., :PAD] += state.carry
    # fold: frame j lands at [240 j, 240 j + 2160)
    buf += torch.nn.functional.fold(frames.reshape(b * c, f, WIN).transpose(1, 2), (1, n + PAD), (1, WIN),
                                    stride=(1, HOP)).reshape(b, c, n + PAD)
    state.carry.copy_(buf[..., n:])
    return buf[..., :n].transpose(1, 2)


def synthesis(spec: torch.Tensor) -> torch.Tensor:
    """Whole sequence: complex frames [B, C, F, 1081] of the grid -> audio [B, 240 F − 1920, C] (the
    padding's span dropped; the last 1920 samples of overlap, beyond the clip, are not returned)."""
    b, c = spec.shape[:2]
    out = synthesis_step(spec, init_synthesis_state(b, c, spec.device, spec.real.dtype))
    return out[:, PAD:]


def magnitudes_to_audio(mag: torch.Tensor, tol: float = DEFAULT_TOL) -> torch.Tensor:
    """Whole sequence, magnitudes [B, C, F, 1081] -> audio [B, 240 F − 1920, C]: one phase (RTPGHI on the
    channels' mean magnitude) shared by every channel."""
    phase = rtpghi(mag.mean(1), tol).to(mag.device, mag.dtype)
    return synthesis(torch.polar(mag, phase[:, None].expand_as(mag)))
