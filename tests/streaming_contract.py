"""The streaming contract (DESIGN.md), one function for every streaming module: ``check_streaming``.

A module is described by a :class:`Streaming` adapter that puts time on axis 1 of its input and output
tensors (``[B, T, ...]``) and says how to make, step and reset its state. ``check_streaming`` then checks:

* step == whole: the step outputs, concatenated, with the first ``latency`` dropped, equal the whole-sequence
  output, for chunks of 1, 2 and a random size (a random sequence of sizes when the state takes any chunk),
  with batch > 1;
* a prefix gives a prefix: the whole-sequence output of an input prefix is a prefix of the full output
  (``prefix_drop`` last outputs excepted, for modules that look ahead at the end of their input);
* reset then replay equals a fresh run, bit for bit;
* state shapes, dtypes and storage never change (stepping and resetting write in place).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Streaming", "check_streaming"]


@dataclass
class Streaming:
    """How to drive one streaming module. Time is axis 1 of every tensor passed in or out.

    whole: input [B, T, ...] -> output [B, T_out, ...].
    init: (batch, chunk) -> a handle (the state itself, or an object owning it) for steps of ``chunk`` units.
    step: (handle, input chunk [B, n·unit, ...]) -> output chunk [B, m, ...].
    state / reset: the handle's StreamState; reset the handle to a fresh stream (default: ``state.reset_()``).
    unit: input steps per chunk unit (e.g. the conv's time stride, 1920 samples for the codec encoder).
    latency, pad: (chunk) -> output steps to drop at the start / input steps of zeros to append so the step
        outputs cover the whole output.
    max_chunk: the largest chunk (in units) the step API takes. variable: the state takes any chunk sequence.
    prefix_drop: whole-mode outputs at the end of a prefix that may differ (they look past the prefix).
    """

    whole: Callable[[torch.Tensor], torch.Tensor]
    init: Callable[[int, int], Any]
    step: Callable[[Any, torch.Tensor], torch.Tensor]
    state: Callable[[Any], Any] = lambda h: h
    reset: Callable[[Any], None] | None = None
    unit: int = 1
    latency: Callable[[int], int] = lambda chunk: 0
    pad: Callable[[int], int] = lambda chunk: 0
    max_chunk: int | None = None
    variable: bool = False
    prefix_drop: int = 0
    rtol: float = 1e-5  # of the output's largest magnitude (at least 1)


def _snapshot(state) -> dict[str, tuple]:
    return {k: (tuple(t.shape), t.dtype, t.data_ptr()) for k, t in state.tensors().items()}


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float, what: str) -> None:
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    if not a.is_floating_point():
        assert torch.equal(a, b), what
        return
    scale = max(1.0, b.abs().max().item())
    err = (a.double() - b.double()).abs().max().item()
    assert err <= rtol * scale, f"{what}: max difference {err:.3g} (scale {scale:.3g})"


def _schedule(module: Streaming, steps: int, chunk: int | str, rng: np.random.Generator) -> tuple[int, list[int]]:
    """(the state's chunk, chunk sizes covering ``steps`` input steps plus the padding); a fixed-chunk state gets a
    constant size."""
    top = min(module.max_chunk or 5, 5)
    if chunk == "random" and module.variable:
        sizes: list[int] = []
        while sum(sizes) * module.unit < steps + module.pad(top):
            sizes.append(int(rng.integers(1, top + 1)))
        return top, sizes
    if chunk == "random":
        chunk = int(rng.integers(min(3, top), top + 1))
    return chunk, [chunk] * -(-(steps + module.pad(chunk)) // (chunk * module.unit))


@torch.no_grad()
def check_streaming(module: Streaming, x: torch.Tensor, seed: int = 0, replay_chunks: int = 3) -> None:
    """Assert the streaming contract for ``module`` on input ``x`` [B, T, ...] (B > 1, T a multiple of its unit)."""
    assert x.shape[0] > 1, "check batches of more than one stream"
    assert x.shape[1] % module.unit == 0, (x.shape, module.unit)
    rng = np.random.default_rng(seed)
    whole = module.whole(x)
    assert whole.shape[0] == x.shape[0]
    biggest = {1: 1, 2: 2, "random": 3}  # a random fixed chunk is at least 3 units
    chunks = [c for c in (1, 2, "random") if module.max_chunk is None or biggest[c] <= module.max_chunk]
    for chunk in chunks:
        size, sizes = _schedule(module, x.shape[1], chunk, rng)
        handle = module.init(x.shape[0], size)
        before = _snapshot(module.state(handle))
        # zeros after the input: the latency's worth of padding, then up to a whole last chunk
        total = sum(sizes) * module.unit
        padded = torch.cat([x, x.new_zeros((x.shape[0], total - x.shape[1], *x.shape[2:]))], 1)
        outs, at = [], 0
        for n in sizes:
            outs.append(module.step(handle, padded[:, at:at + n * module.unit]))
            at += n * module.unit
        assert _snapshot(module.state(handle)) == before, f"chunk {chunk}: the state was reallocated or reshaped"
        steps = torch.cat(outs, 1)
        lat = module.latency(size)
        assert steps.shape[1] >= lat + whole.shape[1], (steps.shape, lat, whole.shape)
        _close(steps[:, lat:lat + whole.shape[1]], whole, module.rtol, f"chunks of {chunk} ({sizes[:4]}...)")
        # reset, then replay: bit-identical to the fresh run
        (module.reset or (lambda h: module.state(h).reset_()))(handle)
        assert _snapshot(module.state(handle)) == before, f"chunk {chunk}: reset reallocated the state"
        at = 0
        for k, n in enumerate(sizes[:replay_chunks]):
            again = module.step(handle, padded[:, at:at + n * module.unit])
            at += n * module.unit
            assert torch.equal(again, outs[k]), f"chunk {chunk}: replay after reset differs at chunk {k}"
    # a prefix gives a prefix
    cut = max(module.unit, (x.shape[1] * 2 // 3) // module.unit * module.unit)
    part = module.whole(x[:, :cut])
    keep = part.shape[1] - module.prefix_drop
    assert keep > 0, "prefix too short to compare"
    _close(part[:, :keep], whole[:, :keep], module.rtol, "whole(prefix) vs prefix of whole")
