"""Many players, one model: a batch of independent player slots stepped together.

Each slot is a player of its own: its conditioning, seed, temperature, top-k and guidance scales,
its own frame counter and K/V rings. Players join, leave, reset and prefill without touching the
other slots: a frame runs only the slots that are playing (the others do not advance), resets
and control changes are writes into the step's tensors, and nothing is ever recaptured.

On CUDA the frame runs as a captured graph (``cuda_graph=True``) of the first ``b`` slots, with
``b`` the next of ``SIZES`` above the highest slot in use; each size is captured once (``capture``
does them all up front). The codec decode of the batch is the codec's batch dimension:
``codec.decode_step(tokens.from_unique(players.out), codec_state_for_capacity)``.

    players = Players(bundle.lm, capacity=64, cuda_graph=True)
    a = players.join(seed=1, temperature=1.2, top_k=40)
    toks = players.step(cond)            # cond [capacity, 144] model tokens -> [capacity, 12] on the host
"""

from __future__ import annotations

import torch

from openmrt import tokens as tk
from openmrt.errors import ConfigError, ControlError
from openmrt.lm.generate import GUIDANCE_KEYS, check_cond, check_forced, check_temperature, check_top_k
from openmrt.lm.graphs import StepGraph, require_cuda
from openmrt.lm.model import Depthformer
from openmrt.lm.packed import PackedLM, pack
from openmrt.lm.step import FrameStep

SIZES = (1, 8, 32, 64, 128)  # captured batch sizes on CUDA; more slots round up to a multiple of 128


def padded(n: int) -> int:
    return next((s for s in SIZES if s >= n), -(-n // SIZES[-1]) * SIZES[-1])


class Players:
    """Args:
        model: the LM (its device and dtype are used).
        capacity: most players at once (padded to the next of ``SIZES`` on CUDA).
        guidance: signals with batched-CFG rows for every slot (e.g. ("musiccoca", "notes")); each
            slot sets its own scales. () = guidance as conditioning tokens only.
        int8, cuda_graph, packed: as for ``LMGenerator``.
    """

    def __init__(self, model: Depthformer, capacity: int, guidance: tuple[str, ...] = (), *, int8: bool = False,
                 cuda_graph: bool = False, packed: PackedLM | None = None):
        if capacity < 1:
            raise ConfigError(f"players capacity must be at least 1, got {capacity}")
        if set(guidance) - set(GUIDANCE_KEYS):
            raise ConfigError(f"guidance keys must be among {GUIDANCE_KEYS}, got {sorted(guidance)}")
        dev = next(model.parameters()).device
        if cuda_graph:
            require_cuda(dev)
        self.cuda_graph = cuda_graph
        self.guidance_keys = tuple(k for k in GUIDANCE_KEYS if k in guidance)
        self.capacity = padded(capacity) if dev.type == "cuda" else capacity
        with torch.no_grad():
            self.core = FrameStep(packed if packed is not None else pack(model, int8), self.capacity,
                                  self.guidance_keys)
        self.core.exec.fill_(False)
        self.active = [False] * self.capacity
        self.graphs: dict[int, StepGraph] = {}
        self.host = torch.zeros(self.capacity, self.core.levels, dtype=torch.long,
                                pin_memory=dev.type == "cuda")

    # ----------------------------------------------------------------- slots
    def join(self, seed: int = 0, temperature: float = 1.3, top_k: int = 40,
             guidance: dict[str, float] | None = None) -> int:
        """A new player in the lowest free slot (fresh stream); returns the slot."""
        try:
            slot = self.active.index(False)
        except ValueError:
            raise ControlError(f"all {self.capacity} player slots are taken") from None
        self.set(slot, temperature=temperature, top_k=top_k, guidance=guidance or {})
        self.reset(slot, seed)
        self.active[slot] = True
        self.core.exec[slot] = True
        return slot

    def leave(self, slot: int) -> None:
        self._check(slot)
        self.active[slot] = False
        self.core.exec[slot] = False

    def reset(self, slot: int, seed: int | None = None) -> None:
        """The slot's stream starts afresh (optionally with a new seed); the others are untouched."""
        self._check(slot, joined=False)
        mask = torch.zeros(self.capacity, dtype=torch.bool)
        mask[slot] = True
        seeds = None if seed is None else torch.full((self.capacity,), int(seed), dtype=torch.long)
        with torch.no_grad():
            self.core.reset(mask, seeds)

    def set(self, slot: int, *, temperature: float | None = None, top_k: int | None = None,
            guidance: dict[str, float] | None = None) -> None:
        """Change a slot's sampling controls between frames (a write into the step's tensors)."""
        self._check(slot, joined=False)
        c = self.core
        if temperature is not None:
            c.temperature[slot] = check_temperature(temperature)
        if top_k is not None:
            c.top_k[slot] = check_top_k(top_k, c.codebook)
        if guidance:
            unknown = set(guidance) - set(self.guidance_keys)
            if unknown:
                raise ControlError(f"guidance {sorted(unknown)} has no rows in this batch (made with "
                                   f"{self.guidance_keys})")
            for i, k in enumerate(self.guidance_keys):
                if k in guidance:
                    c.cfg[slot, i] = float(guidance[k])

    def _check(self, slot: int, joined: bool = True) -> None:
        if not 0 <= slot < self.capacity or (joined and not self.active[slot]):
            raise ControlError(f"no player in slot {slot}")

    # ----------------------------------------------------------------- frames
    def rows(self) -> int:
        """Slots a frame runs: up to the highest one in use, padded to a captured size on CUDA."""
        top = max((i for i, a in enumerate(self.active) if a), default=0) + 1
        return min(padded(top), self.capacity) if self.cuda_graph else top

    def capture(self) -> None:
        """Capture every size up front (otherwise the first frame at a new size captures it)."""
        for b in sorted({min(padded(s), self.capacity) for s in SIZES if s <= self.capacity} | {self.capacity}):
            self._graph(b)

    def _graph(self, b: int) -> StepGraph:
        if b not in self.graphs:
            with torch.inference_mode():
                self.graphs[b] = StepGraph(self.core, b)
        return self.graphs[b]

    @torch.inference_mode()
    def _run(self, b: int, skip_depth: bool = False) -> None:
        if self.cuda_graph:
            self._graph(b).replay()
        else:
            self.core.run(b, skip_depth=skip_depth)

    @torch.inference_mode()
    def step(self, cond: torch.Tensor) -> torch.Tensor:
        """One frame for every player: cond [capacity, 144] model tokens (rows of empty slots are
        ignored) -> tokens [capacity, 12] on the host (rows of empty slots are meaningless).

        One device->host copy per frame (into a pinned buffer on CUDA)."""
        if cond.shape != (self.capacity, tk.NUM_COND):
            raise ControlError(f"cond must be [{self.capacity}, {tk.NUM_COND}], got {list(cond.shape)}")
        check_cond(cond)
        c = self.core
        c.cond.copy_(cond, non_blocking=True)
        c.force.fill_(False)
        self._run(self.rows())
        self.host.copy_(c.out, non_blocking=True)
        if c.device.type == "cuda":
            torch.cuda.current_stream(c.device).synchronize()
        return self.host.clone()

    @torch.inference_mode()
    def prefill(self, slot: int, cond: torch.Tensor, tokens: torch.Tensor) -> None:
        """Teacher-force known frames into one slot (cond [T, 144], tokens [T, 12] unique ids);
        only that slot advances."""
        self._check(slot)
        if cond.shape[0] != tokens.shape[0]:
            raise ControlError(f"prefill: {cond.shape[0]} conditioning frames for {tokens.shape[0]} token frames")
        check_cond(cond)
        check_forced(tokens)
        c, b = self.core, self.rows()
        c.exec.fill_(False)
        c.exec[slot] = True
        c.force[slot] = True
        try:
            for t in range(cond.shape[0]):
                c.cond[slot] = cond[t].to(c.device)
                c.forced[slot] = tokens[t].to(c.device)
                self._run(b, skip_depth=True)
        finally:
            c.force.fill_(False)
            c.exec.copy_(torch.as_tensor(self.active))

    def frame(self, slot: int) -> int:
        """Frames the slot's stream has played (a host read: not for the frame loop)."""
        return int(self.core.state.frame[slot * self.core.arity])
