"""Magenta RealTime v1 as a frame stream: 2 s chunks behind ``FrameStream``'s interface.

v1 writes 50 frames x 16 RVQ levels at a time from the last 10 s of codes (250 frames, of which the
encoder sees levels 0-3) and 6 style tokens (shared/spec/mrt_v1.md §5-§8). ``ChunkStream`` hands the
chunk out one 40 ms frame per ``step`` so that offline ``render`` and the live ``Session`` use it
unchanged. While chunk n plays, chunk n + 1 is generated on a worker thread from the controls read
at chunk n's first frame; ``step`` blocks only when that chunk is not ready in time.

Latency, honestly: a frame's audio comes out with its own tokens (``latency_frames = 0``, nothing for
``render`` to skip), but a control change is heard only 50-100 frames (2-4 s) later
(``control_latency_frames``): the style is read once per chunk, at the start of the chunk before the
one it shapes. Notes and drums are ignored (v1 has no such conditioning).

Each chunk is decoded on its own: [last context frame, 50 new frames] -> 51 x 1920 samples with the
SpectroStream decoder, the first 96,000 kept and the last 1920 joined to the next chunk with the
official equal-power crossfade (§8).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

import numpy as np
import torch

from openmrt import tokens as tk
from openmrt.controls import DEFAULTS
from openmrt.engine.bundle import Bundle
from openmrt.errors import ConfigError, DataError
from openmrt.frame import FRAME_MS, FRAME_SAMPLES
from openmrt.lm_v1.generate import ChunkDecoder, V1Sampling
from openmrt.lm_v1.model import V1LM
from openmrt.lm_v1.tokens import CONTEXT_FRAMES, MASK, STYLE_TOKENS, encoder_ids, tokens_to_codes

log = logging.getLogger(__name__)

CHUNK_FRAMES = 50  # 2 s at 25 Hz
CHUNK_SAMPLES = CHUNK_FRAMES * FRAME_SAMPLES  # 96,000
XFADE_SAMPLES = FRAME_SAMPLES  # crossfade_length_frames = round(0.04 * 25) = 1
LEVELS = 16
V1_GUIDANCE = V1Sampling().guidance  # official system default (5.0)
STYLE_FIRST = 1000  # encoder input positions 1000..1005 hold the style tokens


def is_v1(bundle: Bundle) -> bool:
    return isinstance(bundle.lm, V1LM)


def crossfade_ramp(n: int = XFADE_SAMPLES) -> np.ndarray:
    """The official equal-power ramp r[i] = sin(pi/2 * i/n), i = 0..n-1 (endpoint excluded), float32."""
    return np.sin(np.float32(np.pi / 2) * np.linspace(0, 1, n, endpoint=False, dtype=np.float32)).astype(np.float32)


def join_chunk(decoded: np.ndarray, tail: np.ndarray, ramp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """decoded [51 * 1920, C] (last context frame + 50 new ones), tail [1920, C] (the previous chunk's last frame)
    -> (chunk [96,000, C], next tail [1920, C]): chunk[:1920] = chunk[:1920] * r + tail * reverse(r)."""
    ramp = crossfade_ramp(len(tail)) if ramp is None else ramp
    n = len(decoded) - len(tail)
    chunk = decoded[:n].copy()
    chunk[: len(ramp)] = chunk[: len(ramp)] * ramp[:, None] + tail * ramp[::-1, None]
    return chunk, decoded[n:].copy()


def style_of(cond_raw: np.ndarray) -> np.ndarray:
    """The 6 style codes v1 reads (-1 = masked) from a frame's raw conditioning: the coarsest MusicCoCa levels."""
    return np.asarray(cond_raw)[tk.STYLE][:STYLE_TOKENS].astype(np.int64)


def v1_encoder_ids(context: torch.Tensor, style: np.ndarray) -> torch.Tensor:
    """encoder_ids with per-token style masking: a masked (-1) style code becomes MASK in the conditioned row."""
    s = torch.as_tensor(style, dtype=torch.long)
    if (s < 0).all():
        return encoder_ids(context, None)
    ids = encoder_ids(context, s.clamp(min=0))
    ids[0, STYLE_FIRST:][s < 0] = MASK
    return ids


class V1Generator:
    """The stream's sampling settings, under the names the live ``Session`` sets (temperature, top_k, seeds,
    guidance as a list over ``guidance_keys``). Chunk n samples with seed + n (the official PRNGKey(seed + n)).
    Only the style is guided; without a style weight the official 5.0 applies."""

    def __init__(self, temperature: float, top_k: int, guidance: dict[str, float], seed: int):
        self.temperature, self.top_k, self.seed = float(temperature), int(top_k), int(seed)
        self.guidance_keys = tuple(k for k in guidance if k == "musiccoca")
        self.guidance = [float(guidance[k]) for k in self.guidance_keys]

    def set_seeds(self, seed: int) -> None:
        self.seed = int(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.seed = int(seed)

    def sampling(self) -> V1Sampling:
        return V1Sampling(self.guidance[0] if self.guidance else V1_GUIDANCE, self.temperature, self.top_k)


class ChunkStream:
    """Args:
        bundle: a v1 bundle (``bundle.lm`` a ``V1LM``, ``bundle.codec`` a SpectroStream with >= 16 levels).
        seed: chunk n samples with seed + n; ``reset(seed)`` restarts with another.
        temperature, top_k: sampling (the official v1 defaults are 1.1 and 40).
        guidance: {"musiccoca": w} sets the CFG weight (default 5.0, official); 0 turns CFG off (one LM row).
        prefetch: generate the next chunk on a worker thread while the current one plays (default on). Off, a
            chunk is generated when its first frame is asked for, from that frame's controls.
        threads: torch threads of the worker.
    """

    latency_frames = 0  # step t returns frame t's audio (no frames for render to skip)

    def __init__(self, bundle: Bundle, seed: int = DEFAULTS["seed"], temperature: float = V1Sampling().temperature,
                 top_k: int = V1Sampling().top_k, guidance: dict[str, float] | None = None,
                 prefetch: bool = True, threads: int | None = None):
        if not is_v1(bundle):
            raise ConfigError(f"{bundle.name} is not a v1 bundle: play it with FrameStream")
        if bundle.codec.config.num_quantizers < LEVELS:
            raise ConfigError(f"{bundle.name}: v1 decodes {LEVELS} RVQ levels but its codec holds "
                              f"{bundle.codec.config.num_quantizers}")
        ignored = sorted(set(guidance or {}) - {"musiccoca"})
        if ignored:  # a warning, not an error: a live /guidance message must not leave the session without a stream
            log.warning("v1 guides on the style only: guidance on %s ignored", ", ".join(ignored))
        self.bundle, self.model, self.codec = bundle, bundle.lm, bundle.codec
        self.device = next(self.model.parameters()).device
        self.lm = V1Generator(temperature, top_k, guidance or {}, seed)
        self.levels = LEVELS
        self.prefetch = prefetch
        # A control is read at a chunk's first frame and shapes the chunk after it (prefetch) or that chunk itself.
        self.control_latency_frames = (2 if prefetch else 1) * CHUNK_FRAMES  # the worst case
        self.threads = threads or max(1, torch.get_num_threads())
        # One decoder per row count (1 or 2), reused every chunk; on CUDA its steps replay as CUDA graphs.
        self._decoders: dict[int, ChunkDecoder] = {}
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="openmrt-v1-chunks",
                                          initializer=torch.set_num_threads, initargs=(self.threads,))
        self._ramp = crossfade_ramp()
        self.chunk_lm_ms = self.chunk_codec_ms = 0.0  # LM and codec time of the last chunk generated (of 2000 ms)
        # Per step, as FrameStream reports them: the time this step blocked waiting for its chunk, and no codec work.
        self.lm_ms = self.codec_ms = 0.0
        self._initial_context = torch.full((CONTEXT_FRAMES, LEVELS), -1, dtype=torch.long)
        self._pending: Future | None = None  # the next chunk, being generated
        self.reset(seed)

    # -- chunk generation (worker thread) ----------------------------------------------------------------------------
    def _generate(self, index: int, context: torch.Tensor, style: np.ndarray, sampling: V1Sampling, seed: int):
        t0 = time.perf_counter()
        ids = v1_encoder_ids(context, style).to(self.device)
        if sampling.guidance == 0:
            ids = ids[:1]
        rows = ids.shape[0]
        if rows not in self._decoders:
            self._decoders[rows] = ChunkDecoder(self.model, rows, cuda_graph=self.device.type == "cuda")
        gen = torch.Generator(device=self.device).manual_seed(seed + index)
        with torch.inference_mode():
            tokens = self._decoders[rows].run(ids, sampling, generator=gen)
        codes = tokens_to_codes(tokens[0].cpu(), LEVELS)  # [50, 16]
        t1 = time.perf_counter()
        prev = context[-1:] if (context[-1] >= 0).all() else torch.zeros(1, LEVELS, dtype=torch.long)
        decoded = self.decode(torch.cat([prev, codes]))
        t2 = time.perf_counter()
        return codes, decoded, (t1 - t0) * 1e3, (t2 - t1) * 1e3

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """codes [K, 16] -> audio [K * 1920, 2] float32, decoded from a fresh codec history. The last frame's
        lookahead sees a zero latent (the end padding of the official whole-sequence decode)."""
        emb = self.codec.quantizer.decode(codes[None].to(self.device))
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
        audio = self.codec.decode_latents(emb)[0].float().clamp(-1.0, 1.0)
        return audio.cpu().numpy()

    def _submit(self, cond_raw: np.ndarray) -> None:
        self._pending = self._worker.submit(self._generate, self._index, self.context.clone(), style_of(cond_raw),
                                            self.lm.sampling(), self.lm.seed)

    def _next_chunk(self, cond_raw: np.ndarray) -> None:
        t0 = time.perf_counter()
        if self._pending is None:
            self._submit(cond_raw)
        job, self._pending = self._pending, None  # a failed chunk is asked for again by the next step
        codes, decoded, self.chunk_lm_ms, self.chunk_codec_ms = job.result()
        self.lm_ms = (time.perf_counter() - t0) * 1e3
        self.context = torch.cat([self.context[CHUNK_FRAMES:], codes])
        self._audio, self._tail = join_chunk(decoded, self._tail, self._ramp)
        self._codes = codes.numpy()
        self._index += 1
        self._pos = 0
        if self.prefetch:
            self._submit(cond_raw)

    # -- FrameStream interface ---------------------------------------------------------------------------------------
    def step(self, cond_raw: np.ndarray, forced: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """cond_raw [144] raw conditioning (only its first 6 style codes are read, once per chunk) ->
        (audio [1920, 2] float32 of this frame, its 16 RVQ codes)."""
        if forced is not None:
            raise ConfigError("v1 streams cannot teacher-force single frames; give the audio as context instead")
        self.lm_ms = 0.0
        if self._audio is None or self._pos == CHUNK_FRAMES:
            self._next_chunk(cond_raw)
        p = self._pos
        self._pos += 1
        self.frames_out += 1
        return self._audio[p * FRAME_SAMPLES:(p + 1) * FRAME_SAMPLES], self._codes[p]

    def warm_up(self) -> None:
        """Nothing: a chunk takes seconds to make, and the first one is generated before any sound anyway."""

    def _drain(self) -> None:
        if self._pending is not None:  # the worker keeps one decode state: never start another chunk beside it
            wait([self._pending])  # its result (or error) is dropped with it
            self._pending = None

    def reset(self, seed: int | None = None) -> None:
        """Back to the initial context (empty, or the one ``set_context`` gave) and silence before it."""
        self._drain()
        self.lm.reset(seed)
        self.context = self._initial_context.clone()
        self._tail = np.zeros((XFADE_SAMPLES, 2), np.float32)
        self._audio = self._codes = None
        self._index = self._pos = 0
        self.frames_out = 0

    def set_context(self, codes: torch.Tensor | np.ndarray) -> int:
        """Continue from known codes [T, >= 16] (0..1023): the last 250 frames become the context of the first
        chunk (and of every reset). Returns the frames used."""
        c = torch.as_tensor(np.asarray(codes)).long()
        if c.dim() != 2 or c.shape[1] < LEVELS or not len(c):
            raise DataError(f"v1 context must be codes [frames, >= {LEVELS}], got {list(c.shape)}")
        if (c < 0).any() or (c >= tk.CODEBOOK_SIZE).any():
            raise DataError(f"v1 context codes must be in 0..{tk.CODEBOOK_SIZE - 1}")
        c = c[-CONTEXT_FRAMES:, :LEVELS]
        ctx = torch.full((CONTEXT_FRAMES, LEVELS), -1, dtype=torch.long)
        ctx[CONTEXT_FRAMES - len(c):] = c
        self._initial_context = ctx
        self.reset()
        return len(c)

    def set_context_audio(self, audio: np.ndarray, trim_frames: int = 25) -> int:
        """Continue from audio [N, 2] at 48 kHz: encoded with the bundle's codec (16 levels); the last
        ``trim_frames`` frames (zero-padded lookahead) are dropped when the clip is long enough."""
        with torch.inference_mode():
            codes = self.codec.encode(torch.as_tensor(audio, dtype=torch.float32)[None].to(self.device), LEVELS)[0]
        if len(codes) > 2 * trim_frames + 1:
            codes = codes[:-trim_frames]
        return self.set_context(codes.cpu())

    def prefill(self, cond_raw: np.ndarray, tokens: np.ndarray) -> None:
        """Known frames as context (v1 has no per-frame teacher forcing): tokens [T, 16] in the unique-id form the
        session's prefill uses (6 + 1024 q + c, openmrt.tokens.to_unique)."""
        t = torch.as_tensor(np.asarray(tokens)).long()
        if t.dim() != 2 or t.shape[1] != LEVELS:
            raise DataError(f"v1 prefill needs tokens of all {LEVELS} levels [frames, {LEVELS}], got {list(t.shape)}")
        codes = t - tk.to_unique(torch.zeros_like(t))
        if (codes < 0).any() or (codes >= tk.CODEBOOK_SIZE).any():
            raise DataError("v1 prefill tokens are not unique ids of their levels (6 + 1024 q + c)")
        self.set_context(codes)

    def describe(self) -> str:
        s = self.lm.sampling()
        return (f"v1 chunks: 2 s (50 frames x 16 levels) from 10 s of context, guidance {s.guidance:g}, temperature "
                f"{s.temperature:g}, top-k {s.top_k}; it cannot react within a chunk: a style change is heard "
                f"{(self.control_latency_frames - CHUNK_FRAMES) * FRAME_MS / 1000:g}-"
                f"{self.control_latency_frames * FRAME_MS / 1000:g} s later; notes and drums are ignored")

    def close(self) -> None:
        self._drain()
        self._worker.shutdown(wait=True)

    def __del__(self):
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.shutdown(wait=False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Context, the playing chunk, crossfade tail, chunk index, position and seed (an in-flight prefetch is
        finished and dropped: a stream loaded from this state generates it again)."""
        self._drain()
        playing = self._audio is not None
        return {
            "context": self.context.clone(), "initial_context": self._initial_context.clone(),
            "tail": torch.from_numpy(self._tail.copy()),
            "audio": torch.from_numpy(self._audio.copy()) if playing else torch.zeros(0, 2),
            "codes": torch.from_numpy(self._codes.copy()) if playing else torch.zeros(0, LEVELS, dtype=torch.long),
            "index": torch.tensor(self._index), "pos": torch.tensor(self._pos), "seed": torch.tensor(self.lm.seed),
            "frames_out": torch.tensor(self.frames_out),
        }

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self._drain()
        if tuple(sd["context"].shape) != (CONTEXT_FRAMES, LEVELS):
            raise ValueError(f"v1 state context is {list(sd['context'].shape)}, not [{CONTEXT_FRAMES}, {LEVELS}]")
        self.context, self._initial_context = sd["context"].clone().long(), sd["initial_context"].clone().long()
        self._tail = sd["tail"].numpy().copy()
        playing = len(sd["audio"]) > 0
        self._audio = sd["audio"].numpy().copy() if playing else None
        self._codes = sd["codes"].numpy().copy() if playing else None
        self._index, self._pos = int(sd["index"]), int(sd["pos"])
        self.lm.set_seeds(int(sd["seed"]))
        self.frames_out = int(sd["frames_out"])


def open_stream(bundle: Bundle, **kwargs):
    """The stream for ``bundle``: a ``ChunkStream`` for v1, else a ``FrameStream`` (same arguments)."""
    if is_v1(bundle):
        return ChunkStream(bundle, **kwargs)
    from openmrt.engine.frames import FrameStream

    return FrameStream(bundle, **kwargs)
