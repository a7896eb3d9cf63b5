"""Loading the official SpectroStream weights (shared/spec/spectrostream.md §9, §10).

Official keys are Flax scopes joined by ``/``: the decoder and codebook live in the LM
checkpoint under ``params/soundstream/``, the encoder in ``encoder.safetensors`` under
``params/encoder/``. Kernels are HWIO ``[kT, kF, Cin, Cout]``:

* conv: ``kernel.permute(3, 2, 0, 1)`` -> torch ``[Cout, Cin, kT, kF]``;
* transposed conv (JAX correlates the dilated input with an unflipped kernel):
  ``kernel.flip(0, 1).permute(2, 3, 0, 1)`` -> torch ``[Cin, Cout, kT, kF]``;
* dense 1×1 (``Pointwise``): ``kernel[0, 0].T`` -> ``[Cout, Cin]``.

:func:`load_official_state` takes a flat ``{official key: array}`` dict (what safetensors
gives, or the seeded golden rebuild), so every source goes through the same converter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from openmrt.codec.layers import CausalConv2d, CausalConvTranspose2d, Conv1x1, Pointwise
from openmrt.errors import CheckpointError

ENCODER_PREFIX = "params/encoder/"
DECODER_PREFIX = "params/soundstream/decoder/"
CODEBOOK_KEY = "params/soundstream/quantizer/embedding"
PARTS = ("encoder", "decoder", "quantizer")


@dataclass(frozen=True)
class Slot:
    """Where one official tensor goes: our parameter name, the official shape and the layout kind."""

    param: str
    shape: tuple[int, ...]
    kind: str  # "conv", "convT", "dense", "bias", "embedding"
    part: str  # "encoder", "decoder" or "quantizer"


def _official_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "conv":  # [Cout, Cin, kT, kF] -> [kT, kF, Cin, Cout]
        return (shape[2], shape[3], shape[1], shape[0])
    if kind == "convT":  # [Cin, Cout, kT, kF]
        return (shape[2], shape[3], shape[0], shape[1])
    if kind == "dense":  # [Cout, Cin]
        return (1, 1, shape[1], shape[0])
    return tuple(shape)


def _to_torch(kind: str, w: torch.Tensor) -> torch.Tensor:
    if kind == "conv":
        return w.permute(3, 2, 0, 1)
    if kind == "convT":
        return w.flip(0, 1).permute(2, 3, 0, 1)
    if kind == "dense":
        return w[0, 0].t()
    return w


def official_layout(model: nn.Module) -> dict[str, Slot]:
    """Official key -> :class:`Slot` for every parameter of a :class:`SpectroStream`."""
    slots: dict[str, Slot] = {}
    for name, m in model.named_modules():
        kind = {CausalConv2d: "conv", Conv1x1: "conv", CausalConvTranspose2d: "convT", Pointwise: "dense"}.get(type(m))
        if kind is None:
            continue
        part, _, rest = name.partition(".")
        prefix = ENCODER_PREFIX if part == "encoder" else DECODER_PREFIX
        scope = prefix + rest.replace(".", "/") + "/conv/"
        slots[scope + "kernel"] = Slot(f"{name}.weight", _official_shape(kind, tuple(m.weight.shape)), kind, part)
        slots[scope + "bias"] = Slot(f"{name}.bias", tuple(m.bias.shape), "bias", part)
    emb = model.quantizer.embedding
    slots[CODEBOOK_KEY] = Slot("quantizer.embedding", tuple(emb.shape), "embedding", "quantizer")
    return slots


def _is_codec_key(key: str) -> bool:
    return key.startswith((ENCODER_PREFIX, "params/soundstream/"))


def convert_official(
    model: nn.Module, flat: Mapping[str, np.ndarray | torch.Tensor], parts: Iterable[str] = PARTS
) -> dict[str, torch.Tensor]:
    """Official flat dict -> our state-dict entries for ``parts``; keys outside the codec are ignored.

    Raises:
        CheckpointError: naming every missing, unexpected or mis-shaped key.
    """
    parts = tuple(parts)
    if unknown := set(parts) - set(PARTS):
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    layout = official_layout(model)
    wanted = {k: s for k, s in layout.items() if s.part in parts}
    given = {k for k in flat if _is_codec_key(k) and (k not in layout or layout[k].part in parts)}
    missing = sorted(wanted.keys() - given)
    unexpected = sorted(given - wanted.keys())
    misshaped = [
        f"{k}: file {tuple(flat[k].shape)}, model expects {wanted[k].shape}"
        for k in sorted(given & wanted.keys())
        if tuple(flat[k].shape) != wanted[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {', '.join(unexpected[:8])}")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped keys: {'; '.join(misshaped[:8])}")
    if problems:
        raise CheckpointError(
            f"official SpectroStream weights ({', '.join(parts)}) do not fit a codec of width "
            f"{getattr(model, 'config', None) and model.config.width}: " + " | ".join(problems)
        )
    out = {}
    for key, slot in wanted.items():
        w = flat[key]
        w = torch.from_numpy(np.asarray(w)) if not isinstance(w, torch.Tensor) else w
        out[slot.param] = _to_torch(slot.kind, w.to(torch.float32)).contiguous()
    return out


def load_official_state(
    model: nn.Module, flat: Mapping[str, np.ndarray | torch.Tensor], parts: Iterable[str] = PARTS
) -> None:
    """Copy official weights for ``parts`` into ``model`` in place (meta-device models get them assigned)."""
    sd = convert_official(model, flat, parts)
    on_meta = any(p.is_meta for p in model.parameters())
    if not on_meta:
        device, dtype = model.quantizer.embedding.device, model.quantizer.embedding.dtype
        sd = {k: v.to(device=device, dtype=dtype) for k, v in sd.items()}
    model.load_state_dict(sd, strict=False, assign=on_meta)


def read_official_file(path: str | Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file whose keys start with one of ``prefixes``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file {path} not found; download the official MRT2 files (docs/codec.md)")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefixes)}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"cannot read {path} as safetensors: {e}") from e


def load_official(
    model: nn.Module, lm_checkpoint: str | Path | None = None, encoder_file: str | Path | None = None
) -> None:
    """Load the decoder + codebook from an MRT2 LM checkpoint (``checkpoints/mrt2_*.safetensors``)
    and/or the encoder from ``resources/spectrostream/encoder.safetensors``."""
    if lm_checkpoint is not None:
        flat = read_official_file(lm_checkpoint, ("params/soundstream/",))
        if not flat:
            raise CheckpointError(f"{lm_checkpoint} has no params/soundstream/ tensors (not an MRT2 checkpoint?)")
        load_official_state(model, flat, ("decoder", "quantizer"))
    if encoder_file is not None:
        flat = read_official_file(encoder_file, (ENCODER_PREFIX,))
        if not flat:
            raise CheckpointError(f"{encoder_file} has no params/encoder/ tensors (not the SpectroStream encoder?)")
        load_official_state(model, flat, ("encoder",))


def to_official(model: nn.Module, parts: Iterable[str] = PARTS) -> dict[str, torch.Tensor]:
    """The inverse of :func:`convert_official`: our weights under official keys and layouts."""
    parts = tuple(parts)
    params = dict(model.named_parameters())
    out = {}
    for key, slot in official_layout(model).items():
        if slot.part not in parts:
            continue
        w = params[slot.param].detach()
        if slot.kind == "conv":
            w = w.permute(2, 3, 1, 0)
        elif slot.kind == "convT":
            w = w.permute(2, 3, 0, 1).flip(0, 1)
        elif slot.kind == "dense":
            w = w.t()[None, None]
        out[key] = w.contiguous()
    return out
