"""The streaming LM generator: one call per 40 ms frame, 12 sampled tokens out.

``LMGenerator`` owns the stream state of one or more parallel streams (batch rows): the
temporal ring buffers, the previous frame's tokens, the frame counter and the random
generator. All buffers are allocated once; ``step`` writes into them in place.

Guidance runs two ways (shared/spec/mrt2_lm.md §10): always as CFG-scale conditioning tokens
(channels 141..143, the caller's conditioning), and optionally as batched logit mixing with
extra rows per stream ``[positive, style masked, notes masked]`` (``guidance`` scales).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from openmrt import tokens as tk
from openmrt.errors import CheckpointError
from openmrt.lm.attention import KVCache
from openmrt.lm.model import Depthformer, TemporalState
from openmrt.lm.sampling import cfg_mix, gumbel_noise, sample
from openmrt.streaming import StreamState, load_tensors, save_tensors

GUIDANCE_KEYS = ("musiccoca", "notes")  # sorted key order = official row order


@dataclass
class GenState(StreamState):
    temporal: TemporalState
    prev: torch.Tensor  # [R, 12] previous frame's tokens per row (SOS at the start)
    frame: torch.Tensor  # [] int64 frames generated so far


def negative_rows(cond: torch.Tensor, keys: tuple[str, ...]) -> torch.Tensor:
    """cond [B, 144] (+7) -> [B, 1 + len(keys), 144]: positive, then one row per guided signal
    with that signal fully masked (token 6). The CFG tokens stay as they are."""
    rows = [cond]
    for key in keys:
        neg = cond.clone()
        neg[:, tk.STYLE if key == "musiccoca" else tk.NOTES] = tk.MASKED + tk.COND_OFFSET
        rows.append(neg)
    return torch.stack(rows, dim=1)


class LMGenerator:
    """Streams frames from a Depthformer.

    Args:
        model: the network (its parameters' dtype is the compute dtype).
        batch_size: number of independent streams.
        guidance: optional batched-CFG scales, e.g. {"musiccoca": 3.0, "notes": 1.0}; each key
            adds one masked-negative row per stream. None: one row per stream (the official
            Python systems' path: guidance as tokens only).
        temperature, top_k: sampling settings (may be changed between frames).
        seed: seeds the Gumbel noise stream.
    """

    def __init__(
        self,
        model: Depthformer,
        batch_size: int = 1,
        guidance: dict[str, float] | None = None,
        temperature: float = 1.3,
        top_k: int = 40,
        seed: int = 0,
    ):
        self.model = model
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.batch_size = batch_size
        self.guidance_keys = tuple(k for k in GUIDANCE_KEYS if guidance and k in guidance)
        if guidance and set(guidance) - set(GUIDANCE_KEYS):
            raise ValueError(f"guidance keys must be among {GUIDANCE_KEYS}, got {sorted(guidance)}")
        self.guidance = [float(guidance[k]) for k in self.guidance_keys] if guidance else []
        self.arity = 1 + len(self.guidance_keys)
        self.temperature, self.top_k = temperature, top_k
        rows = batch_size * self.arity
        self.state = GenState(
            model.init_temporal_state(rows, self.device, self.dtype),
            torch.full((rows, model.cfg.num_levels), tk.SOS_ID, dtype=torch.long, device=self.device),
            torch.zeros((), dtype=torch.long),
        )
        self._depth = model.init_depth_cache(rows, self.device, self.dtype)
        self.rng = torch.Generator(device=self.device)
        self.seed = seed
        self.rng.manual_seed(seed)

    def reset(self, seed: int | None = None) -> None:
        """Back to a fresh stream (buffers zeroed in place)."""
        self.state.reset_()
        self.state.prev.fill_(tk.SOS_ID)
        self.rng.manual_seed(self.seed if seed is None else seed)

    @property
    def frame(self) -> int:
        return int(self.state.frame)

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
                without ``trace`` the depth transformer is skipped.
            trace: if a dict, filled with this frame's intermediates (source, temporal output,
                per-level capped logits of every row, and the guided logits that were sampled).
        Returns:
            [B, 12] token ids (6 + 1024*q + code).
        """
        m, a = self.model, self.arity
        cond = cond.to(self.device).long()
        if cond.shape != (self.batch_size, tk.NUM_COND):
            raise ValueError(f"cond must be [{self.batch_size}, {tk.NUM_COND}], got {list(cond.shape)}")
        rows = negative_rows(cond, self.guidance_keys).flatten(0, 1) if a > 1 else cond
        frame = self.frame
        src, h = m.temporal_step(rows, self.state.prev, self.state.temporal, frame)
        if trace is not None:
            trace.update(source=src.float(), temporal_out=h.float(), logits=[], guided=[])
        if forced is not None and trace is None:
            out = forced.to(self.device).long()
        else:
            out = self._depth_loop(h, gumbel, forced, trace)
        self.state.prev.copy_(out.repeat_interleave(a, dim=0))
        self.state.frame += 1
        return out

    def _depth_loop(self, h, gumbel, forced, trace) -> torch.Tensor:
        m, a, n = self.model, self.arity, self.model.cfg.num_levels
        out = torch.empty((self.batch_size, n), dtype=torch.long, device=self.device)
        z = h
        for q in range(n):
            logits = m.level_logits(m.depth_step(z, self._depth, q), q).view(self.batch_size, a, -1)
            guided = cfg_mix(logits, self.guidance) if a > 1 else logits[:, 0]
            if forced is not None:
                tok = forced[:, q].to(self.device).long()
            else:
                noise = None
                if self.temperature > 0:
                    noise = gumbel[:, q] if gumbel is not None else gumbel_noise(
                        guided.shape, self.rng, self.device)
                tok = sample(guided, self.temperature, self.top_k, noise) + tk.level_slice(q).start
            out[:, q] = tok
            if trace is not None:
                trace["logits"].append(logits)
                trace["guided"].append(guided)
            if q + 1 < n:
                z = m.embed(tok).repeat_interleave(a, dim=0)
        return out

    # ----------------------------------------------------------------- saving a stream
    def state_dict(self) -> dict[str, torch.Tensor]:
        sd = self.state.state_dict()
        sd["rng"] = self.rng.get_state()
        return sd

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        sd = dict(sd)
        self.rng.set_state(sd.pop("rng"))
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
            raise CheckpointError(f"stream state {path} does not fit: {e}") from e


__all__ = ["LMGenerator", "GenState", "KVCache", "negative_rows"]
