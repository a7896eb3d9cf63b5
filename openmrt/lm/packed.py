"""Inference weights for the frame step, built once from a Depthformer's parameters.

The module's parameters keep their names and shapes (checkpoint conversion and training depend
on them); this is a second, read-only view for generation with fewer, larger kernels. It is a
snapshot (the fused copies, the sinks in the caches): after changing the model's weights (a LoRA
merge, a new checkpoint) build a new generator.

* self-attention Q, K, V fused into one [3 * H * dh, D] projection per layer;
* cross-attention K, V of every temporal layer fused into one projection of the conditioning
  (the same source feeds all layers): one matmul per frame instead of 2 per layer;
* the per-dim query scale (softplus, computed once) as a constant vector; the sink key divided by
  it once (the sink logit uses the unscaled query: q . k_s = (q * scale) . (k_s / scale));
* the depth input of levels 1..11 as a table: (E * sqrt(D_t)) A^T for every token id, so a level
  costs a row lookup instead of a D_t x D_d matmul;
* the 12 per-level logit heads as one [12, 1024, D_d] weight (views of ``to_logits``).

``int8=True`` swaps the matmuls of the temporal and depth transformers and the 12 heads for int8
ones (CPU). The depth adapter of level 0 stays float: its input is the temporal output (elements
up to ~26 at rms ~6), which per-tensor 8-bit activations resolve worst; keeping this one small
matmul float lifts mrt2_small's greedy agreement from 94.4 % to 95.1 % (lm_int8_agreement.py).
The lookup tables stay float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from openmrt import tokens as tk
from openmrt.errors import ConfigError
from openmrt.lm.attention import R_SOFTPLUS_0, Attention
from openmrt.lm.layers import FFN, LayerNorm, RMSNorm
from openmrt.lm.lora import LoRALinear
from openmrt.lm.model import Depthformer
from openmrt.lm.quant import Dense, Int8Dense


@dataclass
class PackedAttention:
    qkv: Dense | Int8Dense | None  # self-attention: [3 * inner, D] (None for cross-attention)
    q: Dense | Int8Dense | None  # cross-attention query
    o: Dense | Int8Dense
    scale: torch.Tensor  # [inner] query scale (R_SOFTPLUS_0 / sqrt(dh) * softplus(per_dim_scale)), per head
    sink_k: torch.Tensor | None  # [H, dh] sink key / scale (compute dtype)
    sink_v: torch.Tensor | None  # [H, dh]
    pre_norm: RMSNorm
    post_norm: RMSNorm


@dataclass
class PackedFFN:
    fc1: Dense | Int8Dense
    fc2: Dense | Int8Dense
    pre_norm: RMSNorm
    post_norm: RMSNorm

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.post_norm(self.fc2(F.gelu(self.fc1(self.pre_norm(x)), approximate="tanh")))


@dataclass
class PackedTemporalLayer:
    self_attn: PackedAttention
    cross_attn: PackedAttention
    ffn: PackedFFN


@dataclass
class PackedDepthLayer:
    self_attn: PackedAttention
    ffn: PackedFFN


@dataclass
class PackedLM:
    model: Depthformer  # encoder, embedding, final norm and config are used as they are
    temporal: list[PackedTemporalLayer]
    cross_kv: Dense | Int8Dense  # conditioning -> [L * 2 * inner] (every layer's K then V)
    depth_adapter: Dense  # level 0: temporal output -> depth width (float, see above)
    depth_in: torch.Tensor  # [vocab, D_d] depth input of a token id (levels 1..11)
    depth: list[PackedDepthLayer]
    final_norm: LayerNorm
    heads: list[Dense | Int8Dense]  # 12 per-level heads over each level's 1024 ids
    int8: bool


def _scale(attn: Attention) -> torch.Tensor:
    s = (R_SOFTPLUS_0 / math.sqrt(attn.head_dim)) * F.softplus(attn.per_dim_scale.detach().float())
    return s.repeat(attn.num_heads)  # [inner]: the per-dim scale is shared by the heads


def _attention(block, fused_self: bool, lin) -> PackedAttention:
    a: Attention = block.attn
    scale = _scale(a)
    dt = a.q.weight.dtype
    sink_k = sink_v = None
    if a.sink_k is not None:
        sink_k = (a.sink_k.detach().float()[0] / scale.view(a.num_heads, a.head_dim)).to(dt)
        sink_v = a.sink_v.detach()[0].clone()
    qkv = lin(Dense(torch.cat([a.q.weight, a.k.weight, a.v.weight]).detach())) if fused_self else None
    q = None if fused_self else lin(Dense(a.q.weight.detach()))
    return PackedAttention(qkv, q, lin(Dense(a.o.weight.detach())), scale.to(dt), sink_k, sink_v,
                           block.pre_norm, block.post_norm)


def _ffn(block, lin) -> PackedFFN:
    f: FFN = block.ffn
    return PackedFFN(lin(Dense(f.fc1.weight.detach(), f.fc1.bias.detach())),
                     lin(Dense(f.fc2.weight.detach(), f.fc2.bias.detach())), block.pre_norm, block.post_norm)


@torch.no_grad()
def pack(model: Depthformer, int8: bool = False) -> PackedLM:
    """Inference weights of ``model`` (its device and dtype). ``int8``: CPU, float32 models only."""
    p = next(model.parameters())
    if int8 and (p.device.type != "cpu" or p.dtype != torch.float32):
        raise ConfigError(f"int8 weights need a float32 model on the CPU, got {p.dtype} on {p.device}")
    if any(isinstance(mod, LoRALinear) for mod in model.modules()):
        raise ConfigError("the model has unmerged LoRA adapters: merge them first (openmrt.lm.lora.merge_lora)")
    lin = Int8Dense if int8 else (lambda d: d)
    cfg = model.cfg
    temporal = [
        PackedTemporalLayer(_attention(layer.self_attn, True, lin), _attention(layer.cross_attn, False, lin),
                            _ffn(layer.ffn, lin))
        for layer in model.temporal
    ]
    cross_kv = lin(Dense(torch.cat([w for layer in model.temporal
                                    for w in (layer.cross_attn.attn.k.weight, layer.cross_attn.attn.v.weight)])))
    # The depth input table in float32, rounded once to the compute dtype.
    table = (model.embedding.weight.float() * model.emb_scale) @ model.depth_adapter.weight.float().T
    depth = [PackedDepthLayer(_attention(layer.self_attn, True, lin), _ffn(layer.ffn, lin)) for layer in model.depth]
    n, v = cfg.num_levels, cfg.codebook_size
    w = model.to_logits.weight.detach()[tk.NUM_RESERVED :].view(n, v, -1)
    b = model.to_logits.bias.detach()[tk.NUM_RESERVED :].view(n, v)
    heads = [lin(Dense(w[q], b[q])) for q in range(n)]
    return PackedLM(model, temporal, cross_kv, Dense(model.depth_adapter.weight.detach()),
                    table.to(p.dtype), depth, model.final_norm, heads, int8)


def linears(packed: PackedLM) -> list[Dense | Int8Dense]:
    """Every matmul of the packed weights (to check or tune them all)."""
    out = [packed.cross_kv, packed.depth_adapter, *packed.heads]
    for layer in [*packed.temporal, *packed.depth]:
        for part in (getattr(layer, "self_attn", None), getattr(layer, "cross_attn", None), layer.ffn):
            if part is not None:
                out += [x for x in vars(part).values() if isinstance(x, (Dense, Int8Dense))]
    return out
