"""Our own LM weight files: safetensors with the config as JSON in the metadata, so a file
alone is enough to rebuild the model."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from openmrt.config import LMConfig
from openmrt.errors import CheckpointError
from openmrt.lm.model import Depthformer
from openmrt.weights import check_shapes, load_tensors, parse_config, read_metadata, save_tensors

KIND = "openmrt-lm"


Q8 = ".q8"  # suffix of an int8-stored table; its per-row scales sit under ".q8scale"


def save_lm(model: Depthformer, path: str | Path, extra: dict[str, str] | None = None,
            int8_tables: bool = False) -> Path:
    """Write ``model``'s weights and config; ``extra`` adds string metadata (e.g. training step).
    ``int8_tables``: the token embedding and output tables (most of a small LM) stored as int8 with one
    float16 scale per row, the rest float16 (shipped files: half the float16 size of those tables)."""
    sd = model.state_dict()
    if int8_tables:
        out = {}
        for k, v in sd.items():
            if k in ("embedding.weight", "to_logits.weight"):
                scale = v.abs().amax(1, keepdim=True).clamp(min=1e-8) / 127
                out[k + Q8] = torch.round(v / scale).to(torch.int8)
                out[k + Q8 + "scale"] = scale.half()
            else:
                out[k] = v.half()
        sd = out
    return save_tensors(path, sd, kind=KIND, config=model.cfg.to_json(), metadata=extra)


def _dequantize(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for k in [k for k in sd if k.endswith(Q8)]:
        sd[k[: -len(Q8)]] = sd.pop(k).float() * sd.pop(k + "scale").float()
    return sd


def load_lm(path: str | Path, device: str | torch.device = "cpu") -> Depthformer:
    """Rebuild an LM saved by :func:`save_lm` (official checkpoints: :func:`load_any_lm`)."""
    sd, meta = load_tensors(path, "LM weights", device)
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{path} is not an openmrt LM file (official checkpoints load with lm.convert)")
    cfg = parse_config(meta, path, "LM", LMConfig.from_json)
    sd = _dequantize(sd)
    check_shapes(lambda: Depthformer(cfg), sd, path, "LM")
    model = Depthformer(cfg)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit their config: {e}") from e
    return model.to(device).eval()


def load_any_lm(path: str | Path, preset: str | None = None, device: str | torch.device = "cpu") -> Depthformer:
    """Our LM file, or an official checkpoint (``params/depthformer/...``; ``preset`` names its size)."""
    from openmrt.config import lm_config
    from openmrt.lm.convert import load_official, read_checkpoint

    if read_metadata(path, "LM weights").get("kind") == KIND:
        return load_lm(path, device)
    if preset is None:
        raise CheckpointError(f"{path} is an official checkpoint: say its size (mrt2_small or mrt2_base)")
    model = Depthformer(lm_config(preset))
    load_official(model, read_checkpoint(path))
    return model.to(device).eval()


@torch.no_grad()
def init_weights(model: Depthformer, seed: int = 0) -> Depthformer:
    """The official initialisation (shared/spec/mrt2_lm.md §13): fan-in truncated-normal kernels,
    fan-in normal embeddings and sinks, zero MusicCoCa dequantizer, per-dim scales and biases,
    unit norm scales."""
    g = torch.Generator().manual_seed(seed)

    def trunc(t: torch.Tensor, fan_in: int) -> None:
        std = 1.0 / math.sqrt(fan_in) / 0.87962566103423978  # variance of N(0,1) truncated at ±2
        t.copy_(torch.nn.init.trunc_normal_(torch.empty(t.shape), std=std, a=-2 * std, b=2 * std, generator=g))

    for name, p in model.named_parameters():
        if name.endswith("bias") or name.endswith("per_dim_scale") or "style_table" in name:
            p.zero_()
        elif "norm" in name:
            p.fill_(1.0)
        elif name.endswith(("embedding.weight", "regular_table.weight")):
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
        elif "sink" in name:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
        else:  # Linear weight [out, in]
            trunc(p, p.shape[1])
    return model
