"""Official v1 parameters (flax paths of the T5X model, shared/spec/mrt_v1.md §2) <-> our ``V1LM``.

Every dense kernel is stored [in, out] (attention kernels already flattened to [D, H*hd]), so it
becomes ``Linear.weight`` by a transpose; embeddings, RMSNorm scales and relative-bias tables
[H, buckets] copy as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from openmrt.errors import CheckpointError
from openmrt.lm_v1.config import V1Config

_ATTN = ("query", "key", "value", "out")
_MLP = ("wi_0", "wi_1", "wo")


def _layer(m: dict, flax: str, ours: str, norms: dict[str, str], attns: dict[str, str]) -> None:
    for f, o in norms.items():
        m[f"{flax}/{f}/scale"] = (f"{ours}.{o}.weight", False)
    for f, o in attns.items():
        for p in _ATTN:
            m[f"{flax}/{f}/{p}/kernel"] = (f"{ours}.{o}.{p}.weight", True)
    for p in _MLP:
        m[f"{flax}/mlp/{p}/kernel"] = (f"{ours}.mlp.{p}.weight", True)


def key_map(cfg: V1Config) -> dict[str, tuple[str, bool]]:
    """Every official key ('/'-joined flax path under ``params``) -> (our parameter, transpose?)."""
    m = {
        "token_embedder/embedding": ("embed.weight", False),
        "encoder/encoder_norm/scale": ("encoder.norm.weight", False),
        "decoder/decoder/temporal_decoder/relpos_bias/rel_embedding": ("temporal.rel_bias.weight", False),
        "decoder/decoder/depth_decoder/relpos_bias_depth/rel_embedding": ("depth.rel_bias.weight", False),
        "decoder/decoder_norm/scale": ("final_norm.weight", False),
        "decoder/logits_dense/kernel": ("to_logits.weight", True),
    }
    for i in range(cfg.encoder_layers):
        _layer(m, f"encoder/layers_{i}", f"encoder.layers.{i}",
               {"pre_attention_layer_norm": "attn_norm", "pre_mlp_layer_norm": "mlp_norm"}, {"attention": "attn"})
    for i in range(cfg.temporal_layers):
        _layer(m, f"decoder/decoder/temporal_decoder/layers_{i}", f"temporal.layers.{i}",
               {"pre_self_attention_layer_norm": "self_norm", "pre_cross_attention_layer_norm": "cross_norm",
                "pre_mlp_layer_norm": "mlp_norm"},
               {"self_attention": "self_attn", "encoder_decoder_attention": "cross_attn"})
    for j in range(cfg.depth_layers):
        _layer(m, f"decoder/decoder/depth_decoder/depth_layers_{j}", f"depth.layers.{j}",
               {"pre_self_attention_layer_norm": "self_norm", "pre_mlp_layer_norm": "mlp_norm"},
               {"self_attention": "self_attn"})
    return m


def _listing(keys: list[str]) -> str:
    return ", ".join(keys[:10]) + (f" ... ({len(keys)} in all)" if len(keys) > 10 else "")


def convert_state_dict(flat: Mapping[str, np.ndarray | torch.Tensor], cfg: V1Config,
                       shapes: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Official flat dict (keys with or without a leading ``params/`` or ``target/``) -> our state dict.
    Any missing, unexpected or mis-shaped key raises CheckpointError naming it."""
    given = {k.removeprefix("target/").removeprefix("params/"): k for k in flat}
    kmap = key_map(cfg)
    problems = []
    if missing := sorted(set(kmap) - set(given)):
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected := sorted(set(given) - set(kmap)):
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    out = {}
    for key, (name, transpose) in kmap.items():
        if key not in given:
            continue
        x = flat[given[key]]
        x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        want = tuple(shapes[name])[::-1] if transpose else tuple(shapes[name])
        if tuple(x.shape) != want:
            problems.append(f"{key}: shape {list(x.shape)}, expected {list(want)} for the v1 {cfg.name} LM")
            continue
        out[name] = (x.T if transpose else x).contiguous()
    if problems:
        raise CheckpointError(f"checkpoint does not fit the v1 {cfg.name} LM: " + "; ".join(problems))
    return out


def load_official(model: torch.nn.Module, flat: Mapping[str, np.ndarray | torch.Tensor]) -> None:
    """Load an official flat dict into ``model`` (a V1LM), casting to its dtype."""
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict(convert_state_dict(flat, model.cfg, shapes), strict=True)
