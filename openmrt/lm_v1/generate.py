"""One 2 s chunk of the v1 decode loop (shared/spec/mrt_v1.md §7): 800 steps over B = 2G rows
(G streams x [conditioned, style-masked] when guidance is on), with EOS handling as t5x does it.

With guidance, both rows of a pair feed the conditioned row's sample (the official copies row 0's
token, sequence and ``ended`` flag over row 1 every step), so a pair's two output rows are equal.
A row ends when it emits EOS (id 1 = MASK); from the next step on it writes 0; the loop stops once
every row has ended.

``ChunkDecoder`` keeps everything a step touches in fixed device buffers (the step index too), so a
step reads no host value: on CUDA its two kinds of step (a frame's first, which runs the temporal stack,
and the 15 others, depth only) are captured once as CUDA graphs and the chunk is 800 replays with no
host sync inside a frame. ``generate_chunk`` is the one-call form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from openmrt.errors import ConfigError
from openmrt.lm_v1.model import BOS, V1LM, V1State
from openmrt.lm_v1.sampling import GREEDY_BELOW, cfg_combine, gumbel_noise, sample
from openmrt.lm_v1.tokens import EOS
from openmrt.streaming import StreamState, kept


@dataclass(frozen=True)
class V1Sampling:
    """The system's defaults (official ``system.py``; the gin's guidance 4.0 is overridden)."""

    guidance: float = 5.0
    temperature: float = 1.1
    top_k: int = 40


@dataclass
class DecodeBuffers(StreamState):
    """The decode loop's own state, beside the model's: all a step reads or writes."""

    step: torch.Tensor  # [1] int64: the step about to run
    token: torch.Tensor  # [B] the previous step's token (BOS at step 0)
    ended: torch.Tensor  # [B] bool
    out: torch.Tensor  # [B, steps] the chunk's tokens
    noise: torch.Tensor  # [levels, B, V] this frame's Gumbel noise, one row per level
    forced: torch.Tensor  # [B, steps] tokens fed back instead of the samples when use_forced
    use_forced: torch.Tensor  # [] bool
    guidance: torch.Tensor  # [] float32 CFG weight
    temperature: torch.Tensor  # [] float32


class ChunkDecoder:
    """Decodes chunks for a fixed number of rows; ``cuda_graph`` replays captured steps (CUDA only); ``state``:
    a model state from ``model.init_state(batch)`` to use (one is made if None)."""

    def __init__(self, model: V1LM, batch: int, cuda_graph: bool = False, state: V1State | None = None):
        cfg, p = model.cfg, model.embed.weight
        if cuda_graph and p.device.type != "cuda":
            raise ConfigError(f"CUDA graphs need the v1 model on a CUDA device, it is on {p.device}")
        self.model, self.batch, self.cuda_graph = model, batch, cuda_graph
        self.state: V1State = model.init_state(batch) if state is None else state
        z = lambda *shape, dtype=torch.long: torch.zeros(shape, dtype=dtype, device=p.device)  # noqa: E731
        f32 = torch.float32
        self.buf = DecodeBuffers(z(1), z(batch), z(batch, dtype=torch.bool), z(batch, cfg.steps),
                                 z(cfg.levels, batch, cfg.num_embeddings, dtype=f32), z(batch, cfg.steps),
                                 z(dtype=torch.bool), z(dtype=f32), z(dtype=f32))
        # Captured steps per (kind, top-k, greedy, guided): the guidance weight and temperature are buffers, so a
        # live slider does not capture new graphs.
        self._graphs: dict[tuple[bool, int, bool, bool], torch.cuda.CUDAGraph] = {}

    def _step(self, kind: tuple[bool, int, bool, bool]) -> torch.Tensor:
        """One step, positions read from the device step counter. Returns the raw logits [B, V].
        ``kind``: (frame start, top-k, greedy, guided), the host-side choices a captured step bakes in."""
        frame_start, top_k, greedy, guided = kind
        b, levels = self.buf, self.model.cfg.levels
        level = b.step % levels
        raw = self.model.advance(self.state, b.token, b.step // levels, level, (b.step - 1) % levels, frame_start)
        logits = cfg_combine(raw, b.guidance) if guided else raw
        new = logits.argmax(-1) if greedy else sample(logits, b.temperature, top_k, b.noise.index_select(0, level)[0])
        if guided:
            new = new[0::2].repeat_interleave(2)
        new = new.masked_fill(b.ended, 0)
        b.out.index_copy_(1, b.step, new[:, None])
        b.token.copy_(torch.where(b.use_forced, b.forced.index_select(1, b.step)[:, 0], new))
        b.ended.logical_or_(b.token == EOS)
        b.step.add_(1)
        return raw

    def _graph(self, kind: tuple[bool, int, bool, bool]) -> torch.cuda.CUDAGraph:
        if kind not in self._graphs:
            with kept(self.state, self.buf):  # warm-up and capture steps must not count
                side = torch.cuda.Stream(self.buf.step.device)
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # warm-up off the capture stream (cuBLAS workspaces)
                    for _ in range(2):
                        self._step(kind)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self._step(kind)
            self._graphs[kind] = graph
        return self._graphs[kind]

    def _fill_noise(self, s: int, count: int, noise, generator) -> None:
        """The noise of steps s .. s + count − 1 into rows s % levels .. of the buffer."""
        b, q = self.buf, s % self.model.cfg.levels
        if noise is None:
            b.noise[q:q + count] = gumbel_noise((count, *b.noise.shape[1:]), generator, b.noise.device)
        else:
            for i in range(count):
                b.noise[q + i] = noise(s + i)

    @torch.no_grad()
    def run(self, enc_ids: torch.Tensor, sampling: V1Sampling = V1Sampling(), *, steps: int | None = None,
            noise: Callable[[int], torch.Tensor] | None = None, generator: torch.Generator | None = None,
            forced: torch.Tensor | None = None, on_logits: Callable[[int, torch.Tensor], None] | None = None,
            ) -> torch.Tensor:
        """Decode one chunk. enc_ids [B, 1006] (rows in (conditioned, unconditioned) pairs when guidance != 0)
        -> tokens [B, steps] (default 800; unwritten slots after an early end stay 0).

        Args:
            noise: step -> Gumbel noise [B, V] for that step (to replay a recorded run); else drawn from ``generator``.
            forced: [B, steps] tokens fed back instead of the samples (teacher forcing through the decode path;
                the samples are still returned).
            on_logits: called with (step, raw logits [B, V]) before guidance, for tracing (not with CUDA graphs).
        """
        cfg, b = self.model.cfg, self.buf
        steps = cfg.steps if steps is None else steps
        if not 0 < steps <= cfg.steps:
            raise ConfigError(f"steps must be in 1..{cfg.steps}, got {steps}")
        if enc_ids.shape[0] != self.batch:
            raise ConfigError(f"this decoder has {self.batch} rows, got encoder ids for {enc_ids.shape[0]}")
        if sampling.guidance != 0 and self.batch % 2:
            raise ConfigError(f"guidance needs (conditioned, unconditioned) row pairs; got {self.batch} rows")
        if forced is not None and (forced.shape[0] != self.batch or forced.shape[1] < steps):
            raise ConfigError(f"forced tokens must be [{self.batch}, >= {steps}], got {list(forced.shape)}")
        if on_logits is not None and self.cuda_graph:
            raise ConfigError("on_logits traces the eager decode; make the decoder without cuda_graph")
        self.model.begin(self.state, enc_ids)
        b.reset_()
        b.token.fill_(BOS)
        b.use_forced.fill_(forced is not None)
        if forced is not None:
            b.forced[:, :steps] = forced[:, :steps]
        b.guidance.fill_(sampling.guidance)
        b.temperature.fill_(sampling.temperature)
        greedy = sampling.temperature <= GREEDY_BELOW  # greedy decoding reads no noise
        kinds = [(start, sampling.top_k, greedy, sampling.guidance != 0) for start in (False, True)]
        levels, done = cfg.levels, 0
        for s in range(steps):
            q, done = s % levels, s + 1
            if not self.cuda_graph:
                if not greedy:
                    self._fill_noise(s, 1, noise, generator)
                raw = self._step(kinds[q == 0])
                if on_logits is not None:
                    on_logits(s, raw)
                if bool(b.ended.all()):
                    break
                continue
            if q == 0:  # one host check and one noise draw per frame, none inside it
                if s and bool(b.ended.all()):
                    done = s
                    break  # the rows ended within the last frame wrote 0s since: the same tokens
                if not greedy:
                    self._fill_noise(s, min(levels, steps - s), noise, generator)
            self._graph(kinds[q == 0]).replay()
        self.state.step.fill_(done)  # the model state's own count, as model.step keeps it
        return b.out[:, :steps].clone()


def generate_chunk(model: V1LM, enc_ids: torch.Tensor, sampling: V1Sampling = V1Sampling(), *,
                   steps: int | None = None, state: V1State | None = None,
                   noise: Callable[[int], torch.Tensor] | None = None, generator: torch.Generator | None = None,
                   forced: torch.Tensor | None = None, on_logits: Callable[[int, torch.Tensor], None] | None = None,
                   ) -> torch.Tensor:
    """One chunk through a fresh eager ``ChunkDecoder`` (``state``: a model state from ``model.init_state(B)``
    to reuse for the model's buffers). Same arguments and result as ``ChunkDecoder.run``."""
    return ChunkDecoder(model, enc_ids.shape[0], state=state).run(
        enc_ids, sampling, steps=steps, noise=noise, generator=generator, forced=forced, on_logits=on_logits)
