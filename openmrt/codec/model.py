"""SpectroStream: 48 kHz stereo audio <-> 25 Hz frames of RVQ codes, whole-sequence and streaming.

Output level: :meth:`SpectroStream.decode` and :meth:`SpectroStream.decode_step` return the
decoder's raw float audio. The official ``generate()`` additionally halves it and rounds it to
int16 (shared/spec/spectrostream.md §11); :func:`openmrt.codec.output.official_output`
reproduces that stage bit for bit. See docs/codec.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from openmrt.codec.decoder import Decoder, DecoderState
from openmrt.codec.encoder import FRAMES_PER_STEP, Encoder, EncoderState
from openmrt.codec.quantizer import ResidualVQ
from openmrt.codec.stft import (
    HOP,
    IstftState,
    StftState,
    analysis_window,
    init_istft_state,
    init_stft_state,
    istft,
    istft_step,
    stft,
    stft_step,
    synthesis_window,
)
from openmrt.config import CodecConfig
from openmrt.streaming import StreamState

FRAME_SAMPLES = FRAMES_PER_STEP * HOP  # 1920 samples = 40 ms per code frame


@dataclass
class EncodeStreamState(StreamState):
    """Streaming waveform -> latents. Outputs are valid once ``steps`` reaches the latency."""

    stft: StftState
    encoder: EncoderState
    steps: torch.Tensor  # [] int64, steps taken, saturating at the latency (zero = fresh, so reset_ works)


@dataclass
class DecodeStreamState(StreamState):
    """Streaming codes -> waveform. Outputs are valid once ``steps`` reaches the lookahead."""

    decoder: DecoderState
    istft: IstftState
    steps: torch.Tensor  # [] int64, steps taken, saturating at the latency (zero = fresh)


class SpectroStream(nn.Module):
    """The codec. Audio is ``[B, N, 2]`` float at 48 kHz; codes are ``[B, K, L]`` ints in 0..1023.

    Latencies (frames of 1920 samples):
        * encoder: step ``k`` returns code frame ``k − 1`` (step 0 is invalid); a stream must be
          fed ``encoder_input_latency`` = 2399 samples past the end of the audio (padding) to
          get every frame.
        * decoder: step ``t`` returns the audio of code frame ``t − 1``; step 0 returns 1920 zeros.
    """

    sample_rate = 48000
    frame_samples = FRAME_SAMPLES
    encoder_latency_frames = 1
    encoder_input_latency = FRAME_SAMPLES + HOP - 1  # 2399: the STFT window reaches 479 samples ahead
    decoder_latency_frames = 1

    def __init__(self, config: CodecConfig | None = None):
        super().__init__()
        self.config = config or CodecConfig()
        c = self.config
        self.encoder = Encoder(c.encoder_base, c.latent_dim)
        self.quantizer = ResidualVQ(c.num_quantizers, c.codebook_size, c.latent_dim)
        self.decoder = Decoder(c.decoder_base, c.latent_dim)
        self.register_buffer("analysis_window", analysis_window(), persistent=False)
        self.register_buffer("synthesis_window", synthesis_window(), persistent=False)
        # Conv weights channels-last: oneDNN's fast kernels on CPU (loading copies in place, keeping it).
        self.to(memory_format=torch.channels_last)

    # ----------------------------------------------------------------------------------------
    # Whole sequence

    def encode_latents(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, N, 2] (or mono [B, N]) -> latents [B, ceil(N / 1920), D], from zero history.

        The clip is zero-padded to whole frames; nothing is trimmed (the first frames see the
        silence before the clip, as in the official layer mode).
        """
        frames = -(-audio.shape[1] // FRAME_SAMPLES)
        spec = stft(audio, num_frames=frames * FRAMES_PER_STEP)
        return self.encoder(spec)

    def encode(self, audio: torch.Tensor, num_levels: int | None = None) -> torch.Tensor:
        """[B, N, 2] -> codes [B, ceil(N / 1920), L] int64; L = ``num_levels`` (default all levels)."""
        return self.quantizer.encode(self.encode_latents(audio), num_levels)

    def decoder_spectrogram(self, emb: torch.Tensor) -> torch.Tensor:
        """Embeddings [B, K, D] -> packed STFT [B, 4, 4(K − 1), 480] after the one-frame lookahead."""
        return self.decoder(emb)[:, :, FRAMES_PER_STEP:]

    def decode_latents(self, emb: torch.Tensor) -> torch.Tensor:
        """Embeddings [B, K, D] -> raw decoder audio [B, (K − 1)·1920, 2]."""
        return istft(self.decoder_spectrogram(emb))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, L] (any L ≤ num_quantizers) -> raw decoder audio [B, (K − 1)·1920, 2].

        The last code frame's audio needs the next frame (lookahead), so K frames give K − 1.
        Raises DataError for codes outside 0..1023 (checked here, at the boundary, not per step).
        """
        self.quantizer.check_codes(codes)
        return self.decode_latents(self.quantizer.decode(codes))

    # ----------------------------------------------------------------------------------------
    # Streaming encoder

    def init_encode_state(self, batch: int, device=None, dtype=torch.float32) -> EncodeStreamState:
        return EncodeStreamState(
            stft=init_stft_state(batch, FRAME_SAMPLES, device, dtype),
            encoder=self.encoder.init_state(batch, device, dtype),
            steps=torch.zeros((), dtype=torch.long, device=device),
        )

    def encode_latents_step(self, block: torch.Tensor, state: EncodeStreamState) -> torch.Tensor:
        """One block of 1920 samples [B, 1920, 2] -> latent [B, D] of the *previous* block's frame.

        Step 0 is invalid and returns zeros; it leaves the conv state at zero history, so
        step k + 1 equals whole-sequence frame k.
        """
        if block.shape[1] != FRAME_SAMPLES:
            raise ValueError(f"encode_step takes blocks of {FRAME_SAMPLES} samples, got {block.shape[1]}; buffer")
        valid = (state.steps >= self.encoder_latency_frames).to(block.dtype)
        spec = stft_step(block, state.stft, self.analysis_window)  # frames that start in the previous block
        latent = self.encoder.step(spec, state.encoder)[:, 0] * valid
        for buf in state.encoder.tensors().values():  # an invalid step must not leave history behind
            buf.mul_(valid)
        state.steps.add_(1).clamp_(max=self.encoder_latency_frames)
        return latent

    def encode_step(self, block: torch.Tensor, state: EncodeStreamState, num_levels: int | None = None) -> torch.Tensor:
        """[B, 1920, 2] -> codes [B, L] of the previous frame (step 0: codes of a zero latent, invalid)."""
        return self.quantizer.encode(self.encode_latents_step(block, state), num_levels)

    # ----------------------------------------------------------------------------------------
    # Streaming decoder

    def init_decode_state(self, batch: int, device=None, dtype=torch.float32) -> DecodeStreamState:
        return DecodeStreamState(
            decoder=self.decoder.init_state(batch, device, dtype),
            istft=init_istft_state(batch, device, dtype),
            steps=torch.zeros((), dtype=torch.long, device=device),
        )

    def decode_latents_step(self, emb: torch.Tensor, state: DecodeStreamState) -> torch.Tensor:
        """One embedding frame [B, D] -> raw audio [B, 1920, 2] of the previous frame (step 0: zeros)."""
        spec = self.decoder.step(emb[:, None], state.decoder)  # [B, 4, 4, 480]
        # The first frame's STFT frames are what the lookahead drops: silence them (and the carry).
        spec = spec * (state.steps >= self.decoder_latency_frames).to(spec.dtype)
        state.steps.add_(1).clamp_(max=self.decoder_latency_frames)
        return istft_step(spec, state.istft, self.synthesis_window)

    def decode_step(self, codes: torch.Tensor, state: DecodeStreamState) -> torch.Tensor:
        """One code frame [B, L] -> raw audio [B, 1920, 2] of the previous code frame.

        No value check and no host sync: codes must be valid (``quantizer.check_codes`` where they
        enter; the LM's tokens always are).
        """
        return self.decode_latents_step(self.quantizer.decode(codes), state)
