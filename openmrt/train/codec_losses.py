"""Codec training losses: spectral reconstruction and the optional adversarial part.

Reconstruction uses the definitions the codec metrics use (openmrt/spectral.py: multi-resolution
STFT distance, log-mel L1). The adversary is a multi-scale STFT discriminator: one small 2-D conv
net per FFT size on the (Re, Im) spectrogram of each channel, hinge losses, and L1 feature
matching on its hidden activations (normalised by the real activations' mean magnitude, so the
term's scale does not drift as the discriminator grows confident).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from openmrt.codec.stft import stft
from openmrt.spectral import frame_magnitudes, mel_l1, stft_complex, stft_distance

__all__ = ["MultiScaleSTFTDiscriminator", "complex_spectral_loss", "discriminator_loss", "feature_matching",
           "frame_spectrum_loss", "generator_adv_loss", "phase_derivative_loss",
           "reconstruction_loss"]


def reconstruction_loss(ref: torch.Tensor, est: torch.Tensor, mel_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """{"stft", "mel"} for audio [B, N, 2] (computed in float32 whatever the autocast dtype)."""
    ref, est = ref.float(), est.float()
    return {"stft": stft_distance(ref, est), "mel": mel_weight * mel_l1(ref, est)}


def complex_spectral_loss(ref: torch.Tensor, est: torch.Tensor, n_fft: int = 960, power: float = 0.3) -> torch.Tensor:
    """Mean |C(ref) − C(est)| of power-law compressed complex STFTs, C(X) = |X|^p · X/|X|.

    The magnitude losses leave the phase free, and a decoder trained on them alone outputs
    incoherent partials (a buzzing wash, no pitch); this term supervises the phase directly
    at the codec's own resolution (960-point frames), while the compression keeps quiet
    harmonics from being drowned by the loud low bins.
    """

    def compressed(x: torch.Tensor) -> torch.Tensor:
        spec = stft_complex(x, n_fft)
        mag = spec.abs().clamp(min=1e-7)
        return spec * (mag.pow(power) / mag)

    return (compressed(ref) - compressed(est)).abs().mean()


def frame_spectrum_loss(ref: torch.Tensor, spec: torch.Tensor, floor: float = 1e-2) -> torch.Tensor:
    """Magnitudes of the decoder's own STFT frames ``spec`` [B, 4, T, 480] against the reference's.

    The waveform losses only see the overlap-add of the decoder's frames, and a decoder trained on
    them alone learns frames several times too loud whose phases cancel in the sum (measured on the
    first demo codec: 3× the reference magnitude, 99 % of it cancelled): the output's magnitude is
    right on average but every partial is noise. Matching each frame's magnitude (log L1 plus
    linear L1 relative to the reference's) takes that way out, leaving coherent phase as the only
    way to a low waveform loss.
    """
    m_ref = frame_magnitudes(stft(ref.float(), num_frames=spec.shape[2]), 1e-12)
    m_est = frame_magnitudes(spec, 1e-12)
    log_l1 = (torch.log(m_est.clamp(min=floor)) - torch.log(m_ref.clamp(min=floor))).abs().mean()
    return log_l1 + (m_est - m_ref).abs().sum() / m_ref.sum().clamp(min=1e-8)


def phase_derivative_loss(ref: torch.Tensor, est: torch.Tensor, n_fft: int = 960, power: float = 0.3,
                          eps: float = 1e-3) -> torch.Tensor:
    """Weighted distance of the phase *differences* along time and along frequency, [B, N, C] audio.

    A decoder trained on magnitudes alone gives each STFT frame its own phase, and the overlap-add
    of incoherent frames is a noise wash: with the true magnitudes and random phases, basic-pitch
    finds 1 % of the onsets it finds in the original (docs/models.md). Absolute phase (the complex
    loss) is more than 120 bits a frame can carry; what makes a partial a tone is its phase advance
    from frame to frame (instantaneous frequency) and the phase relation of the bins it spans (group
    delay). Both are compared as unit phasors, |u_est − u_ref| = 2|sin(Δ/2)| (no wrapping), weighted
    by the reference's compressed magnitude so that silent bins do not count; a constant phase
    rotation of the whole signal costs nothing.
    """

    def term(p_ref: torch.Tensor, p_est: torch.Tensor) -> torch.Tensor:
        w = p_ref.abs().pow(power / 2)  # |X_a X_b|^(p/2): the pair's geometric-mean magnitude, compressed
        return (w * (unit(p_est) - unit(p_ref)).abs()).sum() / w.sum().clamp(min=1e-8)

    def unit(p: torch.Tensor) -> torch.Tensor:  # smooth near 0, where the angle is undefined
        return p / torch.sqrt(p.real**2 + p.imag**2 + eps**2)

    x, y = stft_complex(ref, n_fft), stft_complex(est, n_fft)  # [rows, F, T]
    along_time = term(x[..., 1:] * x[..., :-1].conj(), y[..., 1:] * y[..., :-1].conj())
    along_freq = term(x[:, 1:] * x[:, :-1].conj(), y[:, 1:] * y[:, :-1].conj())
    return along_time + along_freq


class _STFTDisc(nn.Module):
    """Conv net on one resolution's complex STFT [B·C, 2, T, F] -> (logits, hidden activations)."""

    def __init__(self, n_fft: int, channels: int = 16):
        super().__init__()
        self.n_fft = n_fft
        c = channels
        self.convs = nn.ModuleList([
            nn.Conv2d(2, c, (3, 9), padding=(1, 4)),
            nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4)),
            nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4)),
            nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4)),
            nn.Conv2d(c, c, (3, 3), padding=(1, 1)),
        ])
        self.out = nn.Conv2d(c, 1, (3, 3), padding=(1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        rows = x.transpose(1, 2).reshape(-1, x.shape[1]).float()  # [B, N, C] -> [B·C, N]
        win = torch.hann_window(self.n_fft, device=x.device)
        spec = torch.stft(rows, self.n_fft, self.n_fft // 4, window=win, return_complex=True)
        h = torch.view_as_real(spec).permute(0, 3, 2, 1)  # [B·C, 2, T, F]
        feats = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
            feats.append(h)
        return self.out(h), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    """One ``_STFTDisc`` per FFT size (fine time to fine frequency resolution)."""

    def __init__(self, sizes: tuple[int, ...] = (512, 1024, 2048), channels: int = 16):
        super().__init__()
        self.discs = nn.ModuleList([_STFTDisc(n, channels) for n in sizes])

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """Audio [B, N, 2] -> per scale (logits [B·2, 1, T, F'], features)."""
        return [d(x) for d in self.discs]


def discriminator_loss(real: list, fake: list) -> torch.Tensor:
    """Hinge loss: mean over scales of relu(1 − D(real)) + relu(1 + D(fake))."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake, strict=True)) / len(
        real)


def generator_adv_loss(fake: list) -> torch.Tensor:
    """Hinge generator loss: mean over scales of relu(1 − D(fake))."""
    return sum(F.relu(1 - f).mean() for f, _ in fake) / len(fake)


def feature_matching(real: list, fake: list) -> torch.Tensor:
    """Mean over scales and layers of |f_real − f_fake| / mean |f_real| (real features detached)."""
    total, n = 0.0, 0
    for (_, fr), (_, ff) in zip(real, fake, strict=True):
        for a, b in zip(fr, ff, strict=True):
            a = a.detach()
            total = total + (a - b).abs().mean() / a.abs().mean().clamp(min=1e-5)
            n += 1
    return total / n
