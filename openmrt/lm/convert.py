"""Official MRT2 checkpoints (flat safetensors, "/"-joined flax paths under
``params/depthformer/``) <-> our ``Depthformer`` parameters (shared/spec/mrt2_lm.md §12).

Layout changes:
* dense kernel [in, out] -> Linear.weight = kernel.T;
* q/k/v projection [in, H, dh] -> reshape [in, H*dh] (head-major) -> .T;
* output projection [out, H, dh] -> reshape [out, H*dh]: already Linear(H*dh -> out).weight;
* embeddings, norm scales/biases, per_dim_scale and sinks [1, H, dh] copy as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from openmrt.config import LMConfig
from openmrt.errors import CheckpointError

PREFIX = "params/depthformer/"
_ENC = "encoder/body/layers_1/"

# Official leaf -> (our suffix, layout). Layouts: copy, dense (transpose), proj_in, proj_out.
_ATTN = {
    "attention/query_projection/kernel": ("attn.q.weight", "proj_in"),
    "attention/key_projection/kernel": ("attn.k.weight", "proj_in"),
    "attention/value_projection/kernel": ("attn.v.weight", "proj_in"),
    "attention/per_dim_scale": ("attn.per_dim_scale", "copy"),
    "output_projection/kernel": ("attn.o.weight", "proj_out"),
    "pre_norm/scale": ("pre_norm.weight", "copy"),
    "post_norm/scale": ("post_norm.weight", "copy"),
}
_SINKS = {
    "attention/sink_key_embeddings": ("attn.sink_k", "copy"),
    "attention/sink_value_embeddings": ("attn.sink_v", "copy"),
}
_FFN = {
    "ffn_layer1/kernel": ("ffn.fc1.weight", "dense"),
    "ffn_layer1/bias": ("ffn.fc1.bias", "copy"),
    "ffn_layer2/kernel": ("ffn.fc2.weight", "dense"),
    "ffn_layer2/bias": ("ffn.fc2.bias", "copy"),
    "pre_norm/scale": ("pre_norm.weight", "copy"),
    "post_norm/scale": ("post_norm.weight", "copy"),
}


def key_map(cfg: LMConfig) -> dict[str, tuple[str, str]]:
    """Every official depthformer key (with ``params/depthformer/``) -> (our parameter, layout)."""
    m = {
        _ENC + "branched_mulan_embedder/mulan_embedder/mulan_dequantizer/embedding": (
            "encoder.style_table.weight", "copy"),
        _ENC + "branched_mulan_embedder/mulan_embedder/depth_input_adapter/kernel": (
            "encoder.style_proj.weight", "dense"),
        _ENC + "branched_regular_embedder/regular_embedder/embedding": ("encoder.regular_table.weight", "copy"),
        "encoder/body/encoder_ln/scale": ("encoder.norm.weight", "copy"),
        "encoder/body/encoder_ln/bias": ("encoder.norm.bias", "copy"),
        "decoder/decoder_embedding/embedding/embedding": ("embedding.weight", "copy"),
        "decoder/depth_body/depth_input_adapter/kernel": ("depth_adapter.weight", "dense"),
        "decoder/depth_body/final_ln/scale": ("final_norm.weight", "copy"),
        "decoder/depth_body/final_ln/bias": ("final_norm.bias", "copy"),
        "decoder/depth_body/to_logits/kernel": ("to_logits.weight", "dense"),
        "decoder/depth_body/to_logits/bias": ("to_logits.bias", "copy"),
    }
    for i in range(cfg.temporal.num_layers):
        base = f"decoder/temporal_body/transformer/x_layers_{i}/"
        for blk, ours in (("self_attention", "self_attn"), ("cross_attention", "cross_attn")):
            for leaf, (suffix, layout) in (_ATTN | _SINKS).items():
                m[f"{base}{blk}/{leaf}"] = (f"temporal.{i}.{ours}.{suffix}", layout)
        for leaf, (suffix, layout) in _FFN.items():
            m[f"{base}ffn/{leaf}"] = (f"temporal.{i}.ffn.{suffix}", layout)
    for i in range(cfg.depth.num_layers):
        base = f"decoder/depth_body/transformer/x_layers_{i}/"
        for leaf, (suffix, layout) in _ATTN.items():
            m[f"{base}self_attention/{leaf}"] = (f"depth.{i}.self_attn.{suffix}", layout)
        for leaf, (suffix, layout) in _FFN.items():
            m[f"{base}ffn/{leaf}"] = (f"depth.{i}.ffn.{suffix}", layout)
    return {PREFIX + k: v for k, v in m.items()}


def official_shape(ours: tuple[int, ...], layout: str, heads: int, head_dim: int) -> tuple[int, ...]:
    """The shape an official tensor must have to become our parameter of shape ``ours``."""
    if layout == "dense":
        return (ours[1], ours[0])
    if layout == "proj_in":
        return (ours[1], heads, head_dim)
    if layout == "proj_out":
        return (ours[0], heads, head_dim)
    return tuple(ours)


def _heads_of(name: str, cfg: LMConfig) -> tuple[int, int]:
    t = cfg.temporal if name.startswith("temporal.") else cfg.depth
    return t.num_heads, t.head_dim


def _convert(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "dense":
        return x.T
    if layout == "proj_in":
        return x.reshape(x.shape[0], -1).T
    if layout == "proj_out":
        return x.reshape(x.shape[0], -1)
    return x


def convert_state_dict(
    flat: Mapping[str, np.ndarray | torch.Tensor], cfg: LMConfig, shapes: Mapping[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """Official flat dict -> our state dict. ``shapes`` are our parameter shapes.

    Keys outside ``params/depthformer/`` (e.g. the codec's ``params/soundstream/``) are ignored
    here; any missing, unexpected or mis-shaped depthformer key raises CheckpointError naming it.
    """
    kmap = key_map(cfg)
    given = {k for k in flat if k.startswith(PREFIX)}
    missing = sorted(set(kmap) - given)
    unexpected = sorted(given - set(kmap))
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    if unexpected:
        problems.append(
            f"unexpected keys: {', '.join(unexpected[:10])}" + (" ..." if len(unexpected) > 10 else "")
        )
    out: dict[str, torch.Tensor] = {}
    for key, (name, layout) in kmap.items():
        if key not in flat:
            continue
        x = torch.as_tensor(np.asarray(flat[key]) if not isinstance(flat[key], torch.Tensor) else flat[key])
        want = official_shape(tuple(shapes[name]), layout, *_heads_of(name, cfg))
        if tuple(x.shape) != want:
            problems.append(f"{key}: shape {list(x.shape)}, expected {list(want)} for {cfg.name}")
            continue
        out[name] = _convert(x, layout).contiguous()
    if problems:
        raise CheckpointError(f"checkpoint does not fit the {cfg.name} LM: " + "; ".join(problems))
    return out


def load_official(model: torch.nn.Module, flat: Mapping[str, np.ndarray | torch.Tensor]) -> None:
    """Load an official flat dict into ``model`` (a Depthformer), casting to its dtype."""
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    sd = convert_state_dict(flat, model.cfg, shapes)
    model.load_state_dict(sd, strict=True)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors checkpoint with a clear error for a missing or corrupt file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or not safetensors?): {e}") from e
