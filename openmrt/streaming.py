"""Fixed-size streaming state shared by every streaming module.

The convention, applied everywhere in openmrt:

* A streaming module has a whole-sequence mode (``forward``) and a step mode (``step``).
* Step mode takes an explicit state object made once by ``init_state(batch_size, ...)``.
  ``step`` updates that state **in place**: tensors keep their shapes, dtypes and storage
  for the life of the stream (no growing caches, no per-frame allocation of cache memory),
  so buffers captured by CUDA graphs stay valid and memory stays flat.
* A module declares its latency in frames; stepping a padded input and dropping the first
  ``latency`` outputs equals the whole-sequence output.

States are dataclasses whose fields are tensors, nested states or lists of states. This
base gives them in-place reset, copying, cloning and (de)serialisation for saving a stream.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch

from openmrt import weights


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, StreamState):
        for f in dataclasses.fields(obj):
            _flatten(getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name, out)
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _flatten(item, f"{prefix}.{i}" if prefix else str(i), out)
    elif obj is not None:
        raise TypeError(f"streaming state field {prefix!r} holds {type(obj).__name__}, not a tensor")


@dataclasses.dataclass
class StreamState:
    """Base class of streaming states (subclass it with ``@dataclass`` and tensor fields)."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """All tensors of this state, keyed by dotted field path (stable order)."""
        out: dict[str, torch.Tensor] = {}
        _flatten(self, "", out)
        return out

    def reset_(self) -> None:
        """Zero every buffer in place (a fresh stream, same storage)."""
        for t in self.tensors().values():
            t.zero_()

    def copy_(self, other: StreamState) -> None:
        """Copy ``other``'s values into this state's buffers, in place."""
        mine, theirs = self.tensors(), other.tensors()
        if mine.keys() != theirs.keys():
            raise ValueError("states have different structure")
        for k, t in mine.items():
            t.copy_(theirs[k])

    def clone(self) -> StreamState:
        """A deep copy with new storage."""

        def rec(obj: Any) -> Any:
            if isinstance(obj, torch.Tensor):
                return obj.clone()
            if isinstance(obj, StreamState):
                return dataclasses.replace(
                    obj, **{f.name: rec(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
                )
            if isinstance(obj, list):
                return [rec(o) for o in obj]
            if isinstance(obj, tuple):
                return tuple(rec(o) for o in obj)
            return obj

        return rec(self)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """CPU copies of every buffer, for saving (e.g. with safetensors)."""
        return {k: t.detach().cpu().clone().contiguous() for k, t in self.tensors().items()}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Fill this state's buffers from ``state_dict`` output; shapes must match exactly."""
        mine = self.tensors()
        missing, extra = mine.keys() - sd.keys(), sd.keys() - mine.keys()
        if missing or extra:
            raise ValueError(f"state keys differ: missing {sorted(missing)}, unexpected {sorted(extra)}")
        for k, t in mine.items():
            if tuple(sd[k].shape) != tuple(t.shape):
                raise ValueError(f"state {k}: shape {tuple(sd[k].shape)} != {tuple(t.shape)}")
            t.copy_(sd[k])


STATE_KIND = "openmrt-stream-state"


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a stream state (tensors + string metadata) with the package's one atomic writer."""
    weights.save_tensors(path, tensors, kind=STATE_KIND, metadata=metadata)


def load_tensors(path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a stream-state file; any failure is a CheckpointError naming ``what`` and the file."""
    return weights.load_tensors(path, what, kind=STATE_KIND)


@contextlib.contextmanager
def kept(*states: StreamState | torch.Tensor) -> Iterator[None]:
    """Steps run inside leave ``states`` (streaming states or buffers) as they were: warm-up, capture and compile
    steps of CUDA graphs and compiled steps must not count as frames played."""
    saved = [s.clone() for s in states]
    try:
        yield
    finally:
        for s, v in zip(states, saved, strict=True):
            s.copy_(v)
