"""The streaming LM generator: one call per 40 ms frame, 12 sampled tokens out.

``LMGenerator`` owns the stream state of one or more parallel streams (batch rows) in a
``FrameStep`` (openmrt/lm/step.py): the temporal ring buffers, the previous frame's tokens, the
per-row frame counters and the per-stream noise seeds, all allocated once and written in place.

Guidance runs two ways (shared/spec/mrt2_lm.md §10): always as CFG-scale conditioning tokens
(channels 141..143, the caller's conditioning), and optionally as batched logit mixing with
extra rows per stream ``[positive, style masked, notes masked]`` (``guidance`` scales).

Settings (``SETTINGS``; the model is used on its own device and dtype, so move the bundle first):

* ``"eager"``: fused inference weights, eager PyTorch; any device and dtype.
* ``"graphs"``: the same code with the whole frame (temporal step + 12-level depth loop with
  sampling) captured as one CUDA graph and replayed per frame: the same tokens as "eager" on the
  same device and dtype (``graphs.graph_vs_eager`` checks it). CUDA only; on the CPU a ConfigError.
* ``"compiled"``: the "eager" step compiled once by TorchInductor (CPU; ``openmrt.lm.compiled``):
  the same tokens as "eager" on the demo LM at 0.6x its frame time, after a compile before the first
  frame (3-10 s cached, ~75 s the first time); eager where no C++ compiler is found.
* ``"int8"``: int8 weights for the temporal and depth transformers and the 12 logit heads (CPU,
  float32 model): an approximation, 95 % greedy agreement with the float golden on mrt2_small
  (benchmarks/lm_int8_agreement.py).

The API the benchmarks and the engine use::

    bundle.to("cuda", torch.bfloat16)                       # or stay on the CPU in float32
    gen = make_generator(bundle.lm, best_setting(device, bundle.lm), temperature=1.3, top_k=40, seed=0)
    toks = gen.step(cond)            # cond [B, 144] model tokens -> [B, 12] token ids on the device
    gen.temperature, gen.top_k, gen.guidance = 1.1, 30, [...]   # between frames, never recaptures
    players = Players(bundle.lm, capacity=64, cuda_graph=True)  # openmrt/engine/players.py
    slot = players.join(seed=1, temperature=1.3, top_k=40); toks = players.step(cond_for_all_slots)

Noise: each stream draws Gumbel noise from a counter-based hash of (seed, frame, level, index)
(``sampling.hashed_gumbel``), so a stream's tokens depend only on its own seed and inputs, never
on the batch around it, and the same seed replays the same stream on any batch size.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from openmrt import tokens as tk
from openmrt.errors import CheckpointError, ConfigError, ControlError
from openmrt.lm.compiled import CompiledStep, compile_available
from openmrt.lm.graphs import StepGraph, require_cuda
from openmrt.lm.model import Depthformer
from openmrt.lm.packed import PackedLM, pack
from openmrt.lm.step import FrameStep, GenState, negative_rows
from openmrt.streaming import load_tensors, save_tensors

GUIDANCE_KEYS = ("musiccoca", "notes")  # sorted key order = official row order
SETTINGS = ("eager", "int8", "graphs", "compiled")


def check_temperature(t: float) -> float:
    t = float(t)
    if not (math.isfinite(t) and t >= 0):
        raise ControlError(f"temperature must be a finite number >= 0 (0 = greedy), got {t}")
    return t


def check_top_k(k: int, vocab: int) -> int:
    """Clamped to 1..vocab (vocab = keep all), as the sampler always did."""
    if isinstance(k, bool) or int(k) != k:
        raise ControlError(f"top_k must be a whole number, got {k!r}")
    return max(1, min(int(k), vocab))


def check_cond(cond: torch.Tensor) -> None:
    """Model conditioning tokens must index the encoder's tables (checked on the host only:
    a device tensor is the caller's responsibility, so the step never syncs)."""
    if cond.device.type != "cpu" or cond.numel() == 0:
        return
    style, regular = cond[:, tk.STYLE], cond[:, tk.STYLE.stop :]
    if int(cond.min()) < 0 or int(style.max()) >= tk.STYLE_VOCAB or \
            int((regular + _REGULAR_OFFSETS).max()) >= tk.REGULAR_ROWS:
        raise ControlError("conditioning tokens out of range: pass raw values through tokens.encode_conditioning")


_REGULAR_OFFSETS = torch.as_tensor(tk.REGULAR_OFFSETS)  # made once: check_cond runs every frame


def check_forced(forced: torch.Tensor) -> None:
    """Forced tokens must be each level's own ids (6 + 1024 q + code)."""
    if forced.device.type != "cpu":
        return
    start = torch.as_tensor([tk.level_slice(q).start for q in range(forced.shape[-1])])
    code = forced - start
    if forced.numel() and (int(code.min()) < 0 or int(code.max()) >= tk.CODEBOOK_SIZE):
        raise ControlError("forced tokens must be level q's ids 6 + 1024*q + code (see tokens.to_unique)")


class LMGenerator:
    """Streams frames from a Depthformer.

    Args:
        model: the network (its parameters' dtype is the compute dtype).
        batch_size: number of independent streams.
        guidance: optional batched-CFG scales, e.g. {"musiccoca": 3.0, "notes": 1.0}; each key
            adds one masked-negative row per stream. None: one row per stream (the official
            Python systems' path: guidance as tokens only).
        temperature, top_k: sampling settings (may be changed between frames; no recapture).
        seed: seeds the noise; stream i uses seed + i.
        int8: int8 weights (CPU, float32 model).
        cuda_graph: capture the frame as a CUDA graph (ConfigError unless the model is on CUDA).
        compiled: compile the frame step with TorchInductor (CPU; ConfigError elsewhere). Where it cannot
            (no C++ compiler, ``OPENMRT_COMPILE=0``, a compile error) the generator says why and stays eager.
        packed: inference weights to share between generators of one model (``packed.pack``).
    """

    def __init__(
        self,
        model: Depthformer,
        batch_size: int = 1,
        guidance: dict[str, float] | None = None,
        temperature: float = 1.3,
        top_k: int = 40,
        seed: int = 0,
        *,
        int8: bool = False,
        cuda_graph: bool = False,
        compiled: bool = False,
        packed: PackedLM | None = None,
    ):
        self.model = model
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        if cuda_graph:
            require_cuda(self.device)
        if compiled and self.device.type != "cpu":
            raise ConfigError(f"the compiled setting is for the CPU, the model is on {self.device}: use graphs")
        if guidance and set(guidance) - set(GUIDANCE_KEYS):
            raise ConfigError(f"guidance keys must be among {GUIDANCE_KEYS}, got {sorted(guidance)}")
        self.batch_size = batch_size
        self.guidance_keys = tuple(k for k in GUIDANCE_KEYS if guidance and k in guidance)
        self.arity = 1 + len(self.guidance_keys)
        with torch.no_grad():  # normal tensors: controls are written outside inference mode too
            self.core = FrameStep(packed if packed is not None else pack(model, int8), batch_size,
                                  self.guidance_keys)
        self.guidance = [guidance[k] for k in self.guidance_keys]
        self.temperature, self.top_k = temperature, top_k
        self.seed = seed
        self.set_seeds(seed)
        self._graph = self._compiled = None
        if cuda_graph:
            with torch.inference_mode():
                self._graph = StepGraph(self.core, batch_size)
        if compiled:
            self._compiled = self._compile()

    def _compile(self) -> CompiledStep | None:
        ok, why = compile_available()
        if ok:
            try:
                with torch.inference_mode():
                    return CompiledStep(self.core, self.batch_size)
            except Exception as e:  # inductor raises many types; eager is always a working fallback
                first = (str(e).strip().splitlines() or [""])[0]
                why = f"{type(e).__name__}: {first[:200]}"
        print(f"openmrt: the LM frame step stays eager (not compiled: {why})", file=sys.stderr)
        return None

    @property
    def compiled(self) -> bool:
        """Whether frames run through the compiled step."""
        return self._compiled is not None

    @property
    def state(self) -> GenState:
        return self.core.state

    @property
    def guidance(self) -> list[float]:
        """Batched-CFG scales in ``guidance_keys`` order (settable between frames)."""
        return list(self._guidance)

    @guidance.setter
    def guidance(self, scales: list[float]) -> None:
        scales = [float(s) for s in scales]
        if len(scales) != len(self.guidance_keys) or not all(math.isfinite(s) for s in scales):
            raise ControlError(f"guidance: {len(self.guidance_keys)} finite scales for {self.guidance_keys}, "
                               f"got {scales}")
        self._guidance = scales
        if scales:
            self.core.cfg.copy_(torch.tensor([scales]))

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, t: float) -> None:
        self._temperature = check_temperature(t)
        self.core.temperature.fill_(self._temperature)

    @property
    def top_k(self) -> int:
        return self._top_k

    @top_k.setter
    def top_k(self, k: int) -> None:
        self._top_k = check_top_k(k, self.core.codebook)
        self.core.top_k.fill_(self._top_k)

    def set_seeds(self, seed: int) -> None:
        """Noise seeds seed, seed + 1, ... for the streams (the only thing a new seed changes)."""
        self.core.state.seed.copy_(torch.arange(self.batch_size) + int(seed))

    def reset(self, seed: int | None = None) -> None:
        """Back to a fresh stream (buffers reset in place)."""
        with torch.no_grad():
            self.core.reset(torch.ones(self.batch_size, dtype=torch.bool))
            self.set_seeds(self.seed if seed is None else seed)

    @property
    def frame(self) -> int:
        return int(self.state.frame[0])

    @torch.inference_mode()
    def step(
        self,
        cond: torch.Tensor,
        gumbel: torch.Tensor | None = None,
        forced: torch.Tensor | None = None,
        trace: dict | None = None,
    ) -> torch.Tensor:
        """One frame for every stream.

        Args:
            cond: [B, 144] model conditioning tokens (raw + 7; see ``tokens.encode_conditioning``).
            gumbel: optional [B, 12, 1024] noise to use instead of the generator's (golden replay).
            forced: optional [B, 12] tokens to emit instead of sampling (prefill/teacher forcing);
                without ``trace`` (and without a CUDA graph) the depth transformer is skipped.
            trace: if a dict, filled with this frame's intermediates (source, temporal output,
                per-level capped logits of every row, and the guided logits that were sampled).
        Returns:
            [B, 12] token ids (6 + 1024*q + code), on the model's device.
        """
        core, b = self.core, self.batch_size
        if cond.shape != (b, tk.NUM_COND):
            raise ValueError(f"cond must be [{b}, {tk.NUM_COND}], got {list(cond.shape)}")
        check_cond(cond)
        core.cond.copy_(cond, non_blocking=True)
        core.force.fill_(forced is not None)
        if forced is not None:
            check_forced(forced)
            core.forced.copy_(forced, non_blocking=True)
        if self._graph is not None and gumbel is None and trace is None:
            self._graph.replay()
        elif self._compiled is not None and gumbel is None and trace is None and forced is None:
            self._compiled.replay()
        else:
            g = None if gumbel is None else gumbel.to(self.device, torch.float32)
            core.run(b, g, trace, skip_depth=forced is not None and trace is None and self._graph is None)
        return core.out.clone()

    # ----------------------------------------------------------------- saving a stream
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state.state_dict()

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.state.load_state_dict(sd)

    def save(self, path: str | Path) -> None:
        """Write the stream state to a safetensors file (write-then-rename: never half a file)."""
        meta = {"model": self.model.cfg.to_json(), "arity": str(self.arity), "batch_size": str(self.batch_size)}
        save_tensors(path, self.state_dict(), meta)

    def load(self, path: str | Path) -> None:
        sd, meta = load_tensors(path, "stream state")
        if meta.get("model") != self.model.cfg.to_json() or meta.get("arity") != str(self.arity):
            raise CheckpointError(f"stream state {path} was saved for another model or guidance setup")
        try:
            self.load_state_dict(sd)
        except ValueError as e:
            raise CheckpointError(f"stream state {path} does not fit (saved by another openmrt version?): {e}") from e


FULL_WIDTH_LM = 512  # below this int8 does not pay on the CPU (demo 0.95x, tiny 1.17x the float32 frame time)


def best_setting(device: torch.device | str, model: Depthformer | None = None) -> str:
    """openmrt's fastest LM setting on a device: CUDA graphs on a GPU; on the CPU int8, except for
    models narrower than 512 (int8 took 1.17x the float32 frame time on tiny, 0.95x on demo, 0.46x on
    mrt2_small; benchmarks/results/lm_step_before_after.json): those run compiled (demo 11.0 ms
    against 17.8 eager, tiny 2.3 against 7.8; benchmarks/results/lm_step_compiled.json), or eager where no
    compiler is found."""
    if torch.device(device).type == "cuda":
        return "graphs"
    if model is not None and model.cfg.temporal.dim < FULL_WIDTH_LM:
        return "compiled" if compile_available()[0] else "eager"
    return "int8"


def make_generator(model: Depthformer, setting: str = "eager", **kwargs) -> LMGenerator:
    """An ``LMGenerator`` for ``setting`` in ``SETTINGS`` ("eager", "int8" on the CPU, "graphs" on CUDA)."""
    if setting not in SETTINGS:
        raise ConfigError(f"unknown generator setting {setting!r}; choose one of {SETTINGS}")
    return LMGenerator(model, int8=setting == "int8", cuda_graph=setting == "graphs", compiled=setting == "compiled",
                       **kwargs)


__all__ = ["LMGenerator", "GenState", "SETTINGS", "best_setting", "make_generator", "negative_rows"]
