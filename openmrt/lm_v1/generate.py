"""One 2 s chunk of the v1 decode loop (shared/spec/mrt_v1.md §7): 800 steps over B = 2G rows
(G streams x [conditioned, style-masked] when guidance is on), with EOS handling as t5x does it.

With guidance, both rows of a pair feed the conditioned row's sample (the official copies row 0's
token, sequence and ``ended`` flag over row 1 every step), so a pair's two output rows are equal.
A row ends when it emits EOS (id 1 = MASK); from the next step on it writes 0; the loop stops once
every row has ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from openmrt.errors import ConfigError
from openmrt.lm_v1.model import BOS, V1LM, V1State
from openmrt.lm_v1.sampling import cfg_combine, sample
from openmrt.lm_v1.tokens import EOS


@dataclass(frozen=True)
class V1Sampling:
    """The system's defaults (official ``system.py``; the gin's guidance 4.0 is overridden)."""

    guidance: float = 5.0
    temperature: float = 1.1
    top_k: int = 40


@torch.no_grad()
def generate_chunk(
    model: V1LM,
    enc_ids: torch.Tensor,
    sampling: V1Sampling = V1Sampling(),
    *,
    steps: int | None = None,
    state: V1State | None = None,
    noise: Callable[[int], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    forced: torch.Tensor | None = None,
    on_logits: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Decode one chunk. enc_ids [B, 1006] (rows in (conditioned, unconditioned) pairs when guidance != 0)
    -> tokens [B, steps] (default 800; unwritten slots after an early end stay 0).

    Args:
        state: a state from ``model.init_state(B)`` to reuse (one is made if None).
        noise: step -> Gumbel noise [B, V] for that step (to replay a recorded run); else drawn from ``generator``.
        forced: [B, steps] tokens fed back instead of the samples (teacher forcing through the decode path;
            the samples are still returned).
        on_logits: called with (step, raw logits [B, V]) before guidance, for tracing.
    """
    b = enc_ids.shape[0]
    steps = model.cfg.steps if steps is None else steps
    if not 0 < steps <= model.cfg.steps:
        raise ConfigError(f"steps must be in 1..{model.cfg.steps}, got {steps}")
    if sampling.guidance != 0 and b % 2:
        raise ConfigError(f"guidance needs (conditioned, unconditioned) row pairs; got {b} rows")
    if forced is not None and (forced.shape[0] != b or forced.shape[1] < steps):
        raise ConfigError(f"forced tokens must be [{b}, >= {steps}], got {list(forced.shape)}")
    state = model.init_state(b) if state is None else state
    model.begin(state, enc_ids)
    out = torch.zeros(b, steps, dtype=torch.long, device=enc_ids.device)
    token = torch.full((b,), BOS, dtype=torch.long, device=enc_ids.device)
    ended = torch.zeros(b, dtype=torch.bool, device=enc_ids.device)
    for s in range(steps):
        raw = model.step(state, token)
        if on_logits is not None:
            on_logits(s, raw)
        new = sample(cfg_combine(raw, sampling.guidance), sampling.temperature, sampling.top_k,
                     None if noise is None else noise(s), generator)
        if sampling.guidance != 0:
            new = new[0::2].repeat_interleave(2)
        new = new.masked_fill(ended, 0)
        out[:, s] = new
        token = new if forced is None else forced[:, s].long()
        ended |= token == EOS
        if bool(ended.all()):
            break
    return out
