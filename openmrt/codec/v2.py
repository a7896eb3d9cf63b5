"""Demo codec v2: 48 kHz stereo <-> 25 Hz frames of 12 RVQ codes (1024 each), keeping the notes by design.

    audio -> grid magnitudes (2160/240, rtpghi.py) -> encoder -> RVQ 12 × 1024 -> magnitude decoder
          (harmonic.py: harmonic-plus-noise synthesiser, or the plain baseline) -> one phase by causal
          RTPGHI -> inverse STFT

Same token interface as SpectroStream (codes [B, K, 12] in 0..1023, 1920 samples per frame). Latencies:
``encode_step`` on block k returns code frame k at once (the grid's frames of block k end with token k);
``decode_step`` with code frame k returns token k − 1's audio (step 0 returns 1920 zeros). Whole sequence:
K code frames decode to (K − 1)·1920 samples, as SpectroStream's ``decode``.

Weights go to a safetensors file with the config in its metadata (``save_codec_v2``/``load_codec_v2``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from openmrt.codec.causal1d import CausalStack, StackState
from openmrt.codec.harmonic import (
    LONG_WIN,
    MAG_SCALE,
    PITCHES,
    DecoderState,
    HarmonicDecoder,
    PlainDecoder,
    Salience,
    encoder_bands,
)
from openmrt.codec.quantizer import ResidualVQ
from openmrt.codec.rtpghi import (
    DEFAULT_TOL,
    FRAMES_PER_TOKEN,
    HOP,
    PAD,
    WIN,
    PhaseState,
    SynthesisState,
    analysis,
    init_phase_state,
    init_synthesis_state,
    rtpghi,
    rtpghi_step,
    synthesis,
    synthesis_step,
    window,
)
from openmrt.errors import CheckpointError, ConfigError
from openmrt.frame import FRAME_SAMPLES, SAMPLE_RATE
from openmrt.streaming import StreamState

FORMAT = "openmrt-codec-v2"
# A decoded frame's energy (Σ over bins of the mid magnitude², output EQ applied, sinusoid units) is capped at
# what a −6 dBFS sinusoid gives at the output (amplitude 1 before the output stage's 0.5). Real audio decodes to
# at most ~0.3 (held-out and training clips); an LM can sample token combinations the decoder never saw, and
# one such frame reached 4·10¹¹: a full-scale burst. Per frame and stateless, so both modes keep agreeing.
MAX_FRAME_ENERGY = 1.5
# The same cap per 2 kHz band (bin k is in band k·SAMPLE_RATE/WIN // BAND_HZ, the top bin in the last band), 12 dB
# above the most that real audio reaches there: the maximum over 72 rendered 8 s training clips (compose seeds 7100,
# 7300, 7400) of their own magnitudes and of the round-6 codec's decode (held-out clips stay within 1.4× of it). A
# drums-off clip of the demo LM had one frame with 10⁷ times that at 8–16 kHz: a hiss burst that the frame cap
# alone turned into a dropout (the whole frame scaled down to the burst); capped per band, the frame keeps its music.
BAND_HZ = 2000
MAX_BAND_ENERGY = 16.0 * torch.tensor([1.86, 0.227, 2.54e-2, 1.54e-2, 5.28e-3, 3.78e-3, 3.11e-3, 1.32e-3, 1.05e-3,
                                       8.66e-4, 1.27e-4, 3.71e-6])


@dataclass(frozen=True)
class CodecV2Config:
    name: str = "demo-v2"
    decoder: str = "harmonic"  # or "plain" (the regression baseline)
    latent_dim: int = 128
    width: int = 256  # 25 Hz trunks
    frame_width: int = 128  # 200 Hz layers
    groups: int = 4  # timbre groups of the harmonic decoder
    salience_dilations: tuple[int, ...] = ()  # the encoder salience's causal time stack (() = per frame: rounds 2-4)
    long_window: bool = False  # the salience also reads a causal 8640-sample window (harmonic.Salience)
    attack_frames: int = 1  # frames the decoder's onset lift lasts, decaying (1: one frame, rounds 2-4)
    attack_lift: tuple[float, ...] = ()  # (peak, decay a frame, top Hz) of a fixed lift (round 6); () = learned
    num_quantizers: int = 12
    codebook_size: int = 1024
    token_levels: int = 12
    sample_rate: int = SAMPLE_RATE
    channels: int = 2
    hop: int = FRAME_SAMPLES

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CodecV2Config:
        d = json.loads(text)
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


def grid_magnitudes(audio: torch.Tensor, frames: int | None = None) -> torch.Tensor:
    """Audio [B, N, 2] -> grid magnitudes in sinusoid units [B, 2, F, 1081] (the decoder's targets)."""
    return analysis(audio, frames).abs() / MAG_SCALE


def frame_pitch_targets(notes: torch.Tensor) -> torch.Tensor:
    """25 Hz note states [B, K, 128] -> 0/1 targets [B, 8K, 128] of the decoder's frames: frame g is centred
    on sample 240 g − 840 and takes the label of the token frame there (before the clip: off)."""
    k = notes.shape[1]
    g = torch.arange(k * FRAMES_PER_TOKEN, device=notes.device)
    centre = HOP * g + WIN // 2 - PAD  # the window's centre, in clip samples
    tok = torch.div(centre, FRAME_SAMPLES, rounding_mode="floor")
    on = (notes != 0).float()
    out = on[:, tok.clamp(0, k - 1)]
    return out * (tok >= 0).float()[None, :, None]


def long_magnitudes(audio: torch.Tensor, frames: int) -> torch.Tensor:
    """Audio [B, N, 2] -> the salience's long view [B, F, 4321]: mean L/R magnitude (sinusoid units) of a periodic
    Hann window of LONG_WIN samples ending where grid frame g ends (240 g + 240), zeros before the clip."""
    x = audio.transpose(1, 2).float()  # [B, 2, N]
    need = (frames - 1) * HOP + LONG_WIN
    x = F.pad(x, (LONG_WIN - HOP, max(0, need - (LONG_WIN - HOP) - x.shape[-1])))[..., :need]
    return _long_frames(x.unfold(-1, LONG_WIN, HOP))


def _long_frames(frames: torch.Tensor) -> torch.Tensor:
    """[B, 2, F, LONG_WIN] samples -> [B, F, LONG_WIN // 2 + 1] mean magnitude in sinusoid units."""
    hann = window(frames.dtype, frames.device, LONG_WIN)
    return (torch.fft.rfft(frames * hann, n=LONG_WIN).abs() / (LONG_WIN / 4)).mean(1)


@dataclass
class EncoderState(StreamState):
    prev: torch.Tensor  # [B, N=1920, 2] the previous block: block k's frames start 1920 samples back
    stack: StackState
    salience: StackState | None = None  # the salience's time stack (None when it reads single frames)
    history: torch.Tensor | None = None  # [B, 8400, 2] the long window's past (None without one)


class EncoderV2(nn.Module):
    """Grid magnitudes [B, 2, 8K, 1081] -> latents [B, K, D]; latent k sees frames ≤ 8k + 7 (causal).

    Two views of each frame enter the 25 Hz stack: learned features of the banded log-magnitudes, and the
    pitch salience (harmonic.Salience, supervised with the notes), so the code carries pitch from the start
    instead of having to discover it through the decoder."""

    def __init__(self, latent_dim: int, width: int, frame_width: int, salience_dilations: tuple[int, ...] = (),
                 long_window: bool = False):
        super().__init__()
        self.register_buffer("bands", encoder_bands(), persistent=False)
        nb = self.bands.shape[1]
        self.salience = Salience(dilations=salience_dilations, long_window=long_window)
        self.frame_in = nn.Linear(2 * nb, frame_width)
        self.token_in = nn.Linear(FRAMES_PER_TOKEN * (frame_width + PITCHES), width)
        self.stack = CausalStack(width, (1, 2, 4, 1))
        self.out = nn.Linear(width, latent_dim)

    def _tokens(self, mag: torch.Tensor, long: torch.Tensor | None,
                state: EncoderState | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, f, _ = mag.shape
        x = (torch.log(torch.matmul(mag, self.bands) + 1e-5) + 7.0) / 3.0  # [B, 2, F, NB], roughly unit scale
        x = F.gelu(self.frame_in(x.transpose(1, 2).reshape(b, f, -1)))
        sal = self.salience(mag, long) if state is None else self.salience.step(mag, long, state.salience)
        x = torch.cat([x, torch.sigmoid(sal)], -1)
        return self.token_in(x.reshape(b, f // FRAMES_PER_TOKEN, -1)), sal

    def features(self, mag: torch.Tensor, long: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents [B, K, D], pitch salience logits [B, 8K, 128]) of a whole sequence; ``long``: the long
        window's magnitudes (``long_magnitudes``) when the salience reads one."""
        x, sal = self._tokens(mag, long)
        return self.out(self.stack(x)), sal

    def forward(self, mag: torch.Tensor, long: torch.Tensor | None = None) -> torch.Tensor:
        return self.features(mag, long)[0]

    def step(self, mag: torch.Tensor, long: torch.Tensor | None, state: EncoderState) -> torch.Tensor:
        return self.out(self.stack.step(self._tokens(mag, long, state)[0], state.stack))


@dataclass
class DecodeState(StreamState):
    decoder: DecoderState
    phase: PhaseState  # CPU float64 (the heap walk runs in numba on the CPU)
    synth: SynthesisState
    steps: torch.Tensor  # [] int64, saturating at 1: step 0 returns the padding's span, silenced


class CodecV2(nn.Module):
    """The demo codec v2. Audio ``[B, N, 2]`` float at 48 kHz; codes ``[B, K, L]`` ints in 0..1023."""

    sample_rate = SAMPLE_RATE
    frame_samples = FRAME_SAMPLES
    encoder_latency_frames = 0
    decoder_latency_frames = 1

    def __init__(self, config: CodecV2Config | None = None):
        super().__init__()
        self.config = c = config or CodecV2Config()
        if c.decoder not in ("harmonic", "plain"):
            raise ConfigError(f"codec v2 decoder {c.decoder!r}: use 'harmonic' or 'plain'")
        if c.attack_lift and (len(c.attack_lift) != 3 or not 0 <= c.attack_lift[1] < 1 or c.attack_lift[2] <= 0):
            raise ConfigError(f"codec v2 attack_lift {c.attack_lift}: give (peak, decay a frame, top Hz), "
                              "decay in [0, 1), top > 0")
        self.encoder = EncoderV2(c.latent_dim, c.width, c.frame_width, c.salience_dilations, c.long_window)
        self.quantizer = ResidualVQ(c.num_quantizers, c.codebook_size, c.latent_dim)
        cls = HarmonicDecoder if c.decoder == "harmonic" else PlainDecoder
        self.decoder = cls(c.latent_dim, c.width, c.frame_width, groups=c.groups, attack_frames=c.attack_frames,
                           attack_lift=c.attack_lift)
        # Output EQ: natural-log gain per grid bin on the magnitudes the inverse STFT receives (after the phase
        # head, which thus sees the decoder's own magnitudes). Fitted after training on training clips
        # (openmrt.train.codec2.fit_output_gain): the L1-type losses leave the decoder ~0.35 nats too quiet.
        self.register_buffer("out_gain", torch.zeros(WIN // 2 + 1))
        bins = torch.arange(WIN // 2 + 1) * SAMPLE_RATE // WIN
        self.register_buffer("band_of_bin", torch.clamp(bins // BAND_HZ, max=len(MAX_BAND_ENERGY) - 1),
                             persistent=False)
        self.register_buffer("band_ceiling", MAX_BAND_ENERGY.clone(), persistent=False)  # moves with the module
        self.tol = DEFAULT_TOL

    # ---------------------------------------------------------------------------------- whole sequence

    def encoder_inputs(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, N, 2] -> (grid magnitudes [B, 2, F, 1081], the long window's [B, F, 4321] or None): what
        ``encoder`` / ``encoder.features`` take."""
        mag = grid_magnitudes(audio)
        return mag, long_magnitudes(audio, mag.shape[2]) if self.config.long_window else None

    def encode_latents(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, N, 2] -> latents [B, ceil(N / 1920), D] (zero-padded to whole frames)."""
        return self.encoder(*self.encoder_inputs(audio))

    def encode(self, audio: torch.Tensor, num_levels: int | None = None) -> torch.Tensor:
        """[B, N, 2] -> codes [B, ceil(N / 1920), L] int64."""
        return self.quantizer.encode(self.encode_latents(audio), num_levels)

    def decode_magnitudes(self, emb: torch.Tensor, attack: bool = True) -> dict:
        """Embeddings [B, K, D] -> {"mag": grid magnitudes [B, 2, 8K, 1081] of blocks −1..K − 2,
        "pitch_logits": [B, 8K, 128]}: output block k is the target frames 8k..8k + 7 of ``grid_magnitudes``
        (``attack=False``: without a fixed onset lift, as the training losses see them)."""
        return self.decoder(emb, attack)

    def magnitudes_to_audio(self, mag: torch.Tensor) -> torch.Tensor:
        """Decoder magnitudes [B, 2, 8K, 1081] -> audio [B, (K − 1)·1920, 2] (phase head + inverse STFT)."""
        mag = self._limit(mag)
        phase = rtpghi(mag.mean(1), self.tol).to(mag.device, mag.dtype)
        return synthesis(self._spectrum(mag, phase))

    def _limit(self, mag: torch.Tensor) -> torch.Tensor:
        """Fold back bands louder than MAX_BAND_ENERGY, then scale down frames louder than MAX_FRAME_ENERGY (before
        the phase head, so it sees sane magnitudes). Per token (a streaming step's 8 frames) and stateless, so both
        modes keep agreeing.

        A band over its ceiling (12 dB above anything real audio makes there) is a decoder failure, not music, so
        the further over it is the less of it is kept: energy e becomes c² / e (continuous at the ceiling). The
        verdict holds for the band in all 8 frames of the token (one embedding made them, and a burst's
        neighbouring frames are off too, only less), so a burst 10⁷ times too loud leaves near silence instead
        of a hiss at the ceiling's level."""
        power = (mag.mean(1) * self.out_gain.exp()) ** 2  # [B, F, 1081]
        band, ceiling = self.band_of_bin, self.band_ceiling.to(power.dtype)
        energy = power.new_zeros(*power.shape[:2], len(ceiling)).index_add_(-1, band, power)  # [B, F, bands]
        b, f, n = energy.shape  # a token's 8 frames come from one embedding: one verdict per band and token
        over = torch.clamp(energy.view(b, f // FRAMES_PER_TOKEN, FRAMES_PER_TOKEN, n).amax(2) / ceiling, min=1.0)
        over = over.repeat_interleave(FRAMES_PER_TOKEN, 1)  # [B, F, bands]
        mag = mag * over.reciprocal()[..., band][:, None]
        energy = (energy / over**2).sum(-1)  # the frame's energy after the band cap
        return mag * torch.rsqrt(torch.clamp(energy / MAX_FRAME_ENERGY, min=1.0))[:, None, :, None]

    def _spectrum(self, mag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """Magnitudes [B, 2, F, 1081] and the shared phase [B, F, 1081] -> the complex frames to invert."""
        return torch.polar(mag * (MAG_SCALE * self.out_gain.exp()), phase[:, None].expand_as(mag))

    def decode_latents(self, emb: torch.Tensor) -> torch.Tensor:
        return self.magnitudes_to_audio(self.decode_magnitudes(emb)["mag"])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, L] -> audio [B, (K − 1)·1920, 2]."""
        self.quantizer.check_codes(codes)  # where codes enter, as SpectroStream.decode (decode_step never syncs)
        return self.decode_latents(self.quantizer.decode(codes))

    # ---------------------------------------------------------------------------------- streaming

    def init_encode_state(self, batch: int, device=None, dtype=torch.float32) -> EncoderState:
        return EncoderState(prev=torch.zeros(batch, FRAME_SAMPLES, 2, device=device, dtype=dtype),
                            stack=self.encoder.stack.init_state(batch, device, dtype),
                            salience=self.encoder.salience.init_state(batch, device, dtype),
                            history=torch.zeros(batch, LONG_WIN - HOP, 2,
                                                device=device, dtype=dtype) if self.config.long_window else None)

    def encode_latents_step(self, block: torch.Tensor, state: EncoderState) -> torch.Tensor:
        """Block k [B, 1920, 2] -> latent k [B, D]."""
        if block.shape[1] != FRAME_SAMPLES:
            raise ValueError(f"encode_step takes blocks of {FRAME_SAMPLES} samples, got {block.shape[1]}; buffer")
        both = torch.cat([state.prev, block], 1)  # samples 1920(k − 1) .. 1920(k + 1)
        frames = both.transpose(1, 2).unfold(-1, WIN, HOP)  # [B, 2, 8, 2160]
        mag = torch.fft.rfft(frames * window(device=block.device), n=WIN).abs() / MAG_SCALE
        state.prev.copy_(block)
        long = None
        if state.history is not None:  # samples 1920k − 8400 .. 1920(k + 1): 8 long frames ending with the grid's
            past = torch.cat([state.history, block], 1)
            long = _long_frames(past.transpose(1, 2).unfold(-1, LONG_WIN, HOP))
            state.history.copy_(past[:, FRAME_SAMPLES:])
        return self.encoder.step(mag, long, state)[:, 0]

    def encode_step(self, block: torch.Tensor, state: EncoderState, num_levels: int | None = None) -> torch.Tensor:
        """[B, 1920, 2] -> codes [B, L] of this block."""
        return self.quantizer.encode(self.encode_latents_step(block, state), num_levels)

    def init_decode_state(self, batch: int, device=None, dtype=torch.float32) -> DecodeState:
        return DecodeState(self.decoder.init_state(batch, device, dtype), init_phase_state(batch),
                           init_synthesis_state(batch, 2, device, dtype),
                           torch.zeros((), dtype=torch.long, device=device))

    def decode_latents_step(self, emb: torch.Tensor, state: DecodeState) -> torch.Tensor:
        """Embedding of code frame k [B, D] -> audio of frame k − 1 [B, 1920, 2] (step 0: zeros)."""
        mag = self._limit(self.decoder.step(emb[:, None], state.decoder)["mag"])  # [B, 2, 8, 1081]
        phase = rtpghi_step(mag.mean(1), state.phase, self.tol).to(mag.device, mag.dtype)
        out = synthesis_step(self._spectrum(mag, phase), state.synth)
        out = out * (state.steps >= self.decoder_latency_frames).to(out.dtype)
        state.steps.add_(1).clamp_(max=self.decoder_latency_frames)
        return out

    def decode_step(self, codes: torch.Tensor, state: DecodeState) -> torch.Tensor:
        """Code frame k [B, L] -> audio [B, 1920, 2] of code frame k − 1."""
        return self.decode_latents_step(self.quantizer.decode(codes), state)


def save_codec_v2(model: CodecV2, path: str | Path, extra: dict | None = None, dtype=torch.float32) -> None:
    """Weights (``dtype``: float32, or float16 for a half-size file) + config in the metadata, written by the
    one atomic writer (openmrt.weights). Loading casts back to float32."""
    from openmrt.weights import save_tensors

    tensors = {k: v.detach().to(dtype) for k, v in model.state_dict().items()}
    save_tensors(path, tensors, kind=FORMAT, config=model.config.to_json(),
                 metadata={k: str(v) for k, v in (extra or {}).items()})


def _kind(meta: dict[str, str]) -> str | None:
    return meta.get("kind", meta.get("format"))  # files written before the one writer said "format"


def is_codec_v2_file(path: str | Path) -> bool:
    """Whether ``path`` is a codec v2 weight file (for loaders that dispatch on the file's format)."""
    from openmrt.weights import read_metadata

    try:
        return _kind(read_metadata(path, "codec v2")) == FORMAT
    except CheckpointError:
        return False


def load_codec_v2(path: str | Path, device=None) -> CodecV2:
    from openmrt.weights import check_shapes, config_json, load_tensors

    tensors, meta = load_tensors(path, "codec v2")
    if _kind(meta) != FORMAT:
        raise CheckpointError(f"{path} is not a codec v2 file (kind {_kind(meta)!r})")
    cfg = CodecV2Config.from_json(config_json(meta, path, "codec v2"))
    tensors.setdefault("out_gain", torch.zeros(WIN // 2 + 1))  # files from before the output EQ: flat
    check_shapes(lambda: CodecV2(cfg), tensors, path, "codec v2")  # e.g. a file of an earlier design
    model = CodecV2(cfg)
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return model.to(device).eval()


__all__ = ["CodecV2", "CodecV2Config", "frame_pitch_targets", "grid_magnitudes", "is_codec_v2_file", "load_codec_v2",
           "save_codec_v2"]
