"""The demo codec v2's magnitude decoders: 25 Hz latents -> grid magnitudes [B, 2, 8K, 1081] (L, R) and
pitch logits [B, 8K, 128], one 240-sample hop per frame.

``HarmonicDecoder`` draws the spectrum instead of regressing it, so partials are as sharp as the analysis
window makes them and cannot blur (docs/models.md, "Demo codec v2"). Per frame:

* pitch gates σ(ℓₚ) over the 128 MIDI pitches (supervised with the shards' notes by the trainer);
* G timbre groups: each has a gain per pitch, a mix of two partial roll-offs (k⁰, k^−1.5) and a smooth
  spectral envelope (32 log-frequency bands); a group's harmonic spectrum is Σₚ gate·gain · comb_p,
  shaped by its envelope, where comb_p holds partials k·f0·√(1 + B k²) each drawn as the periodic Hann
  window's main lobe (4 bins) — f0 carries a learned per-pitch tuning (±50 cents) and B a learned
  per-pitch inharmonicity (pianos);
* a smooth noise envelope (48 bands: drums, breath, bow noise) added to the harmonic part;
* onset gates σ(oₚ) (supervised with the notes' onsets): a pitch's partials are lifted for a few frames
  after its note starts, decaying, so a repeated note is heard again (the onset judge and the ear both
  listen for that rise); the lift's shape is learned (rounds 2-5) or fixed (round 6: ×2 at the start,
  ×0.9 a frame over 80 ms, partials below 4 kHz);
* a smooth side ratio s(f) ∈ (−1, 1) (16 bands): L = mid·(1 + s), R = mid·(1 − s).

``PlainDecoder`` is the baseline it must beat: the same trunk regressing log-magnitudes per bin.

Magnitudes are in sinusoid units: a partial of amplitude A peaks at A (the grid STFT divided by 540).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from openmrt.codec.causal1d import CausalStack, StackState
from openmrt.codec.rtpghi import BINS, FRAMES_PER_TOKEN, WIN
from openmrt.frame import SAMPLE_RATE
from openmrt.streaming import StreamState

MAG_SCALE = WIN / 4  # 540: grid STFT magnitude of a unit-amplitude sinusoid
BIN_HZ = SAMPLE_RATE / WIN  # 22.2 Hz
PITCHES = 128
PARTIALS = 64
MAX_PARTIAL_HZ = 22000.0


def log_interp(bands: int, low_hz: float = 40.0) -> torch.Tensor:
    """[bands, 1081] weights that spread ``bands`` values, placed at log-spaced frequencies from ``low_hz`` to
    the Nyquist, linearly (in log frequency) over the bins; bins below ``low_hz`` take the first value."""
    centres = np.log(np.geomspace(low_hz, SAMPLE_RATE / 2, bands))
    f = np.log(np.maximum(np.arange(BINS) * BIN_HZ, low_hz))
    pos = np.clip(np.interp(f, centres, np.arange(bands)), 0, bands - 1)
    lo = np.minimum(np.floor(pos).astype(int), bands - 2)
    frac = pos - lo
    m = np.zeros((bands, BINS), np.float32)
    m[lo, np.arange(BINS)] = 1 - frac
    m[lo + 1, np.arange(BINS)] += frac
    return torch.from_numpy(m)


def encoder_bands() -> torch.Tensor:
    """[1081, NB] averaging matrix for the encoder's input: single bins up to ~760 Hz, then 1/24-octave
    bands (at least one bin each) up to the Nyquist: pitch detail where partials are, few numbers above."""
    edges = list(range(0, 35))
    while edges[-1] < BINS:
        edges.append(max(edges[-1] + 1, int(round(edges[-1] * 2 ** (1 / 24)))))
    edges[-1] = BINS
    m = np.zeros((BINS, len(edges) - 1), np.float32)
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        m[a:b, i] = 1.0 / (b - a)
    return torch.from_numpy(m)


STACK_HARMONICS = (0.5, 1, 2, 3, 4, 5, 6)
# The salience's optional second view: a causal 8640-sample window (5.6 Hz bins) ending where each grid frame ends,
# so a low note's fundamental and its neighbours get bins of their own (on the grid's 22 Hz bins they share one).
LONG_WIN = 4 * WIN
LONG_BINS = LONG_WIN // 2 + 1


def harmonic_stack(win: int = WIN) -> torch.Tensor:
    """[win // 2 + 1, H·128] weights reading each pitch's partials h·f0 (h in STACK_HARMONICS, harmonic major) off an
    STFT of window ``win`` by linear interpolation between bins: the encoder's pitch front end sees a note's
    harmonics as one column, as a harmonic CQT does (0 above the Nyquist)."""
    f0 = 440.0 * 2 ** ((np.arange(PITCHES) - 69) / 12)
    bins = win // 2 + 1
    m = np.zeros((bins, len(STACK_HARMONICS) * PITCHES), np.float32)
    for i, h in enumerate(STACK_HARMONICS):
        pos = h * f0 / (SAMPLE_RATE / win)
        lo = np.floor(pos).astype(int)
        ok = lo + 1 < bins
        cols = i * PITCHES + np.arange(PITCHES)
        m[lo[ok], cols[ok]] = 1 - (pos - lo)[ok]
        m[lo[ok] + 1, cols[ok]] = (pos - lo)[ok]
    return torch.from_numpy(m)


def _stacked(mag: torch.Tensor, stack: torch.Tensor) -> torch.Tensor:
    """Magnitudes [B, F, bins] (sinusoid units) -> log harmonic stack [B·F, H, 128], roughly unit scale."""
    b, f, _ = mag.shape
    return ((torch.log(torch.matmul(mag, stack) + 1e-5) + 7.0) / 3.0).reshape(b * f, len(STACK_HARMONICS), PITCHES)


class Salience(nn.Module):
    """Grid magnitudes [B, 2, F, 1081] -> pitch salience logits [B, F, 128]: the harmonic stack of the mid
    magnitude, a 1×1 mix of its harmonics and an octave-wide conv along the pitch axis (overlapping partials
    of chords), per frame; then, with ``dilations``, a causal conv stack over each pitch's past frames
    (kernel 3: 150 ms of the past at (1, 2, 4, 8)), so a note's attack and decay are read over time, not
    from one 45 ms window: held-out frame F1 0.69 → 0.77 in the round-5 codec (docs/models.md). Supervised with the
    notes (train/codec2.py). Streams with ``step`` and the stack's fixed-size state ([B·128, past, C]).

    ``long_window``: the same harmonic stack read off the LONG_WIN magnitudes too, added through its own 1×1 mix
    (zero-initialised, so a salience without it warm-starts unchanged). Trained alone on the notes, the long view
    took held-out frame F1 from 0.726 to 0.785 (docs/models.md, round 5's "Next")."""

    def __init__(self, channels: int = 32, dilations: tuple[int, ...] = (), long_window: bool = False):
        super().__init__()
        self.register_buffer("stack", harmonic_stack(), persistent=False)
        h = len(STACK_HARMONICS)
        self.net = nn.Sequential(nn.Conv1d(h, channels, 1), nn.GELU(), nn.Conv1d(channels, channels, 13, padding=6),
                                 nn.GELU(), nn.Conv1d(channels, 1, 1))
        self.long = nn.Conv1d(h, channels, 1) if long_window else None
        if self.long is not None:
            self.register_buffer("long_stack", harmonic_stack(LONG_WIN), persistent=False)
            nn.init.zeros_(self.long.weight)
            nn.init.zeros_(self.long.bias)
        self.time = CausalStack(channels, tuple(dilations)) if dilations else None
        if self.time is not None:  # each block starts as the identity: a per-frame salience warm-starts unchanged
            for blk in self.time.blocks:
                nn.init.zeros_(blk.mix.weight)
                nn.init.zeros_(blk.mix.bias)
        self.channels = channels

    def _run(self, mag: torch.Tensor, long: torch.Tensor | None, state: StackState | None) -> torch.Tensor:
        b, _, f, _ = mag.shape
        c = self.channels
        h = self.net[0](_stacked(mag.mean(1), self.stack))  # [B·F, C, 128]
        if self.long is not None:
            if long is None or long.shape[:2] != (b, f):
                raise ValueError("this salience also reads the long window: pass its magnitudes [B, F, "
                                 f"{LONG_BINS}] for the {f} grid frames (CodecV2.encoder_inputs)")
            h = h + self.long(_stacked(long, self.long_stack))
        h = self.net[1:4](h)
        if self.time is not None:  # over frames, one sequence per (row, pitch)
            h = h.view(b, f, c, PITCHES).permute(0, 3, 1, 2).reshape(b * PITCHES, f, c)
            h = self.time(h) if state is None else self.time.step(h, state)
            h = h.view(b, PITCHES, f, c).permute(0, 2, 3, 1).reshape(b * f, c, PITCHES)
        return self.net[4](h).view(b, f, PITCHES)

    def forward(self, mag: torch.Tensor, long: torch.Tensor | None = None) -> torch.Tensor:
        """Whole sequence from zero history: grid magnitudes [B, 2, F, 1081] (and [B, F, LONG_BINS])."""
        return self._run(mag, long, None)

    def step(self, mag: torch.Tensor, long: torch.Tensor | None, state: StackState | None) -> torch.Tensor:
        """The next frames; updates ``state`` (None without a time stack) in place."""
        return self._run(mag, long, state)

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> StackState | None:
        return None if self.time is None else self.time.init_state(batch * PITCHES, device, dtype)


def hann_lobe(delta: torch.Tensor) -> torch.Tensor:
    """Periodic Hann's main lobe at ``delta`` bins from a partial, normalised to 1 at 0, 0 for |δ| ≥ 2."""
    lobe = torch.sinc(delta) + 0.5 * torch.sinc(delta - 1) + 0.5 * torch.sinc(delta + 1)
    return lobe * (delta.abs() < 2)


@dataclass
class DecoderState(StreamState):
    token: StackState  # 25 Hz trunk
    frame: StackState  # 200 Hz trunk
    onsets: torch.Tensor | None = None  # [B, attack_frames − 1, 128] the last frames' onset gates (attack lift)


class DecoderTrunk(nn.Module):
    """Latents [B, K, D] at 25 Hz -> frame features [B, 8K, C] at 200 Hz (causal: frame block k sees latents ≤ k)."""

    def __init__(self, latent_dim: int, width: int, frame_width: int):
        super().__init__()
        self.inp = nn.Linear(latent_dim, width)
        self.token_stack = CausalStack(width, (1, 2, 4, 1))
        self.up = nn.Linear(width, FRAMES_PER_TOKEN * frame_width)
        self.frame_stack = CausalStack(frame_width, (1, 2, 4))
        self.frame_width = frame_width

    def _frames(self, h: torch.Tensor) -> torch.Tensor:
        b, k, _ = h.shape
        return F.gelu(self.up(h)).reshape(b, k * FRAMES_PER_TOKEN, self.frame_width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.frame_stack(self._frames(self.token_stack(self.inp(z))))

    def step(self, z: torch.Tensor, state: DecoderState) -> torch.Tensor:
        return self.frame_stack.step(self._frames(self.token_stack.step(self.inp(z), state.token)), state.frame)

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> DecoderState:
        return DecoderState(self.token_stack.init_state(batch, device, dtype),
                            self.frame_stack.init_state(batch, device, dtype))


class HarmonicDecoder(nn.Module):
    """Harmonic-plus-noise spectral synthesiser on the trunk (module doc)."""

    def __init__(self, latent_dim: int = 128, width: int = 256, frame_width: int = 128, groups: int = 4,
                 env_bands: int = 32, noise_bands: int = 48, side_bands: int = 16, attack_frames: int = 1,
                 attack_lift: tuple[float, ...] = ()):
        super().__init__()
        self.trunk = DecoderTrunk(latent_dim, width, frame_width)
        self.groups = groups
        c = frame_width
        self.pitch = nn.Linear(c, PITCHES)
        self.onset = nn.Linear(c, PITCHES)
        # The lift decays over ``attack_frames`` (ratio σ(decay) a frame, per group) instead of lasting one 5 ms
        # frame: exact note gates with a ~40 ms decaying lift scored an onset ratio of 0.81 against 0.78 without.
        self.attack_frames = attack_frames
        # ``attack_lift`` (peak, decay a frame, top Hz) fixes the lift's shape instead of learning it (round 6): the
        # magnitude losses, unsure of an onset's timing, shrank the learned lift to ×1.37 over ~10 ms, while
        # the onset judge (and a plucked or struck instrument) wants a note louder over its first ~80 ms. The
        # losses never see a fixed lift (``attack=False`` in training): otherwise the gains and onset gates learn
        # to cancel it (measured: onset gates at note starts 0.59 -> 0.44 in 2,400 steps, onset ratio -0.1).
        # It lifts only the partials below its third value (Hz): lifted upper partials of pitched notes made
        # the drums-off clips' percussive energy above 5 kHz 1.7 times as large.
        self.attack_lift = tuple(attack_lift)
        if self.attack_lift:  # 1 up to the top frequency, 0 from 1.25 times it: the lift stays out of the cymbals' band
            top = self.attack_lift[2]
            f = torch.arange(min(BINS, math.ceil(1.25 * top / BIN_HZ))) * BIN_HZ
            self.register_buffer("lift_band", ((1.25 * top - f) / (0.25 * top)).clamp(0, 1), persistent=False)
            peak, decay = self.attack_lift[:2]
            taps = peak * decay ** torch.arange(attack_frames - 1, -1, -1.0)  # oldest frame first, as _lift reads
            self.register_buffer("lift_taps", taps[None], persistent=False)  # [1, k]: one for every group
        else:
            self.attack = nn.Parameter(torch.zeros(groups))  # softplus: the onset lift, ×1.7 at the start
            if attack_frames > 1:
                self.attack_decay = nn.Parameter(torch.zeros(groups))
        self.gain = nn.Linear(c, PITCHES * groups)
        self.rolloff = nn.Linear(c, 2 * groups)
        self.env = nn.Linear(c, groups * env_bands)
        self.noise = nn.Linear(c, noise_bands)
        self.side = nn.Linear(c, side_bands)
        self.tuning = nn.Parameter(torch.zeros(PITCHES))  # tanh -> ±50 cents
        self.inharm = nn.Parameter(torch.full((PITCHES,), -4.0))  # B = 1e-4 · softplus: up to ~1e-3 pianos
        with torch.no_grad():  # start quiet and mostly off: most pitches are silent in most frames
            self.pitch.bias.fill_(-4.0)
            self.onset.bias.fill_(-6.0)
            self.env.bias.fill_(-5.0)
            self.noise.bias.fill_(-7.0)
        self.register_buffer("env_interp", log_interp(env_bands), persistent=False)
        self.register_buffer("noise_interp", log_interp(noise_bands), persistent=False)
        self.register_buffer("side_interp", log_interp(side_bands), persistent=False)
        k = torch.arange(1, PARTIALS + 1, dtype=torch.float32)
        self.register_buffer("k", k, persistent=False)
        self.register_buffer("rolloffs", torch.stack([torch.ones_like(k), k**-1.5]), persistent=False)  # [2, P]

    def combs(self) -> torch.Tensor:
        """[2·128, 1081]: every pitch's partials drawn with the window's main lobe, for each roll-off.

        Without gradients the result is kept until the tuning or inharmonicity change (in-place updates
        and loads bump their versions): the streaming step does not rebuild it every frame."""
        if torch.is_grad_enabled():
            return self._build_combs()
        try:
            version = (self.tuning._version, self.inharm._version)
        except RuntimeError:  # inference tensors (loaded under inference_mode) keep no version: key on storage
            version = None
        key = (version, self.tuning.data_ptr(), self.inharm.data_ptr(), self.tuning.device)
        if getattr(self, "_comb_key", None) != key:
            self._comb_cache, self._comb_key = self._build_combs(), key
        return self._comb_cache

    def _build_combs(self) -> torch.Tensor:
        p = torch.arange(PITCHES, device=self.k.device, dtype=torch.float32)
        f0 = 440.0 * 2 ** ((p - 69) / 12 + torch.tanh(self.tuning) / 24)  # [128]
        b = 1e-4 * F.softplus(self.inharm)
        fk = f0[:, None] * self.k * torch.sqrt(1 + b[:, None] * self.k**2)  # [128, P]
        pos = fk / BIN_HZ
        base = torch.floor(pos.detach())
        offsets = torch.arange(-1, 3, device=pos.device, dtype=torch.float32)  # the 4 bins of the lobe
        bins = base[..., None] + offsets  # [128, P, 4]
        ok = (fk[..., None] < MAX_PARTIAL_HZ) & (bins >= 0) & (bins < BINS)
        val = hann_lobe(bins - pos[..., None]) * ok  # [128, P, 4]
        idx = bins.clamp(0, BINS - 1).long()
        out = []
        for r in self.rolloffs:
            comb = torch.zeros(PITCHES, BINS, device=pos.device, dtype=val.dtype)
            out.append(comb.scatter_add(1, idx.flatten(1), (val * r[None, :, None]).flatten(1)))
        return torch.cat(out)  # [2·128, 1081]: roll-off major

    def _taps(self) -> torch.Tensor:
        """[G, k] (learned) or [1, k] (fixed, every group alike) weights of the last k frames' onset gates,
        oldest first: softplus(attack)·σ(decay)ᵏ or peak·decayᵏ for the frame k back."""
        if self.attack_lift:
            return self.lift_taps
        lift = F.softplus(self.attack)[:, None]  # [G, 1]
        if self.attack_frames == 1:
            return lift
        return lift * torch.sigmoid(self.attack_decay)[:, None] ** torch.arange(
            self.attack_frames - 1, -1, -1, device=lift.device)

    def _lift(self, onsets: torch.Tensor, state: DecoderState | None) -> torch.Tensor:
        """Onset gates [B, T, 128] -> the attack lift [B, T, G, 128] ([B, T, 1, 128] when fixed):
        Σₖ tapₖ·onset[t − k]."""
        taps = self._taps()
        if self.attack_frames == 1:
            return taps * onsets[:, :, None]
        k = self.attack_frames
        past = onsets.new_zeros(onsets.shape[0], k - 1, PITCHES) if state is None else state.onsets
        full = torch.cat([past, onsets], 1)  # [B, k − 1 + T, 128]
        if state is not None:
            state.onsets.copy_(full[:, -(k - 1):])
        return torch.einsum("btpk,gk->btgp", full.unfold(1, k, 1), taps)  # window j holds frame t − (k − 1 − j)

    def heads(self, h: torch.Tensor, state: DecoderState | None = None, attack: bool = True) -> dict:
        """Frame features [B, T, C] -> {"mag": [B, 2, T, 1081], "pitch_logits", "onset_logits": [B, T, 128]}
        (``state``: streaming, the attack lift's onset history; ``attack=False``: without a fixed lift)."""
        b, t, _ = h.shape
        g = self.groups
        logits, onsets = self.pitch(h), self.onset(h)
        gate = torch.sigmoid(logits)  # [B, T, 128]
        # The gain only shades a pitch by e^±2 around its group's envelope: a pitch sounds only where its gate
        # is open, so the gates (supervised with the notes) cannot be bypassed by a large gain.
        amp = gate[:, :, None] * torch.exp(2 * torch.tanh(self.gain(h).view(b, t, g, PITCHES) / 2))  # [B, T, G, 128]
        mix = torch.sigmoid(self.rolloff(h)).view(b, t, g, 2, 1)

        def partials(a: torch.Tensor, bins: int = BINS) -> torch.Tensor:  # [B, T, G, 128] -> [B, T, G, bins]
            return torch.matmul((a[:, :, :, None] * mix).reshape(b, t, g, 2 * PITCHES), self.combs()[:, :bins])

        if not self.attack_lift:
            harm = partials(amp * (1 + self._lift(torch.sigmoid(onsets), state)))
        elif attack:  # the fixed lift, on the partials below its top frequency only (the band's first bins)
            harm = partials(amp)
            n = self.lift_band.shape[0]
            low = harm[..., :n] + partials(amp * self._lift(torch.sigmoid(onsets), state), n) * self.lift_band
            harm = torch.cat([low, harm[..., n:]], -1)
        else:
            harm = partials(amp)
        env = torch.exp(torch.matmul(self.env(h).view(b, t, g, -1).clamp(max=8), self.env_interp))
        noise = torch.exp(torch.matmul(self.noise(h).clamp(max=8), self.noise_interp))  # [B, T, 1081]
        mid = (harm * env).sum(2) + noise
        side = torch.tanh(torch.matmul(self.side(h), self.side_interp))
        return {"mag": torch.stack([mid * (1 + side), mid * (1 - side)], 1), "pitch_logits": logits,
                "onset_logits": onsets}

    def forward(self, z: torch.Tensor, attack: bool = True) -> dict:
        """Whole sequence: latents [B, K, D] -> frame block k of every k (see ``heads``)."""
        return self.heads(self.trunk(z), attack=attack)

    def step(self, z: torch.Tensor, state: DecoderState) -> dict:
        """Next latents [B, k, D] -> their 8k frames; updates ``state`` in place."""
        return self.heads(self.trunk.step(z, state), state)

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> DecoderState:
        state = self.trunk.init_state(batch, device, dtype)
        if self.attack_frames > 1:
            state.onsets = torch.zeros(batch, self.attack_frames - 1, PITCHES, device=device, dtype=dtype)
        return state


class PlainDecoder(HarmonicDecoder):
    """The baseline: the same trunk regressing each bin's log-magnitude (L and R) directly."""

    def __init__(self, latent_dim: int = 128, width: int = 256, frame_width: int = 128, **_):
        nn.Module.__init__(self)
        self.trunk = DecoderTrunk(latent_dim, width, frame_width)
        self.attack_frames = 1  # no onset lift: no onset history in its state
        self.pitch = nn.Linear(frame_width, PITCHES)
        self.onset = nn.Linear(frame_width, PITCHES)
        self.out = nn.Linear(frame_width, 2 * BINS)
        with torch.no_grad():
            self.out.bias.fill_(math.log(1e-4))

    def heads(self, h: torch.Tensor, state: DecoderState | None = None, attack: bool = True) -> dict:
        b, t, _ = h.shape
        mag = torch.exp(self.out(h).clamp(max=8)).view(b, t, 2, BINS).transpose(1, 2)
        return {"mag": mag, "pitch_logits": self.pitch(h), "onset_logits": self.onset(h)}
