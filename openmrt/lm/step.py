"""The graph-safe frame step: one temporal step and the 12-level depth loop with sampling.

Everything the step reads or writes lives in device tensors allocated once (``FrameStep``):

* per row: the temporal K/V ring buffers, the previous frame's tokens, the frame counter;
* per stream: seed, temperature, top-k, guidance scales, and this frame's inputs (conditioning,
  forced tokens and which streams are forced, which streams advance at all).

The step derives nothing on the host from the data: ring slots and visibility masks are computed
on the device from the per-row counters, sampling uses per-stream control tensors and a
counter-based noise hash, there is no ``.item()`` and no data-dependent shape. So the code that
runs eagerly on the CPU is exactly what a CUDA graph captures (``openmrt.lm.graphs``), and a
control change is a write into a tensor, never a recapture.

Cache layout per temporal attention: [R, H, 1 + C + 1, dh] with slot 0 the learned attention sink
(written once, never evicted), slots 1..C the ring of the last C = window + 1 frames, and a last
"dump" slot that rows which do not advance this frame write into and that nobody sees.

Streams and rows: with batched CFG each stream has ``arity`` rows [positive, negatives...], rows
stream-major. ``run(b)`` steps the first ``b`` streams only (static views), which is how a players
batch runs at the next captured size instead of its capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from openmrt import tokens as tk
from openmrt.lm.packed import PackedAttention, PackedLM
from openmrt.lm.sampling import cfg_mix_rows, hashed_gumbel, noise_index, sample_rows
from openmrt.streaming import StreamState, kept

NEVER = 1 << 62  # position of the dump slot: never visible


@dataclass
class GenState(StreamState):
    """What persists between frames (saved with a stream)."""

    self_k: list[torch.Tensor]  # per temporal layer [R, H, C_self + 2, dh]
    self_v: list[torch.Tensor]
    cross_k: list[torch.Tensor]  # per temporal layer [R, H, C_cross + 2, dh]
    cross_v: list[torch.Tensor]
    prev: torch.Tensor  # [R, 12] previous frame's tokens per row (SOS at the start)
    frame: torch.Tensor  # [R] int64 frames generated so far, per row
    seed: torch.Tensor  # [B] int64 noise seed per stream


def negative_rows(cond: torch.Tensor, keys: tuple[str, ...]) -> torch.Tensor:
    """cond [B, 144] (+7) -> [B, 1 + len(keys), 144]: positive, then one row per guided signal
    with that signal fully masked (token 6). The CFG tokens stay as they are."""
    rows = [cond]
    for key in keys:
        neg = cond.clone()
        neg[:, tk.STYLE if key == "musiccoca" else tk.NOTES] = tk.MASKED + tk.COND_OFFSET
        rows.append(neg)
    return torch.stack(rows, dim=1)


class FrameStep:
    """Buffers and the step function for ``streams`` streams of ``arity`` rows each.

    Args:
        packed: inference weights (``openmrt.lm.packed.pack``).
        streams: batch capacity (streams).
        guidance_keys: guided signals, e.g. ("musiccoca", "notes"); () for one row per stream.
    """

    def __init__(self, packed: PackedLM, streams: int, guidance_keys: tuple[str, ...] = ()):
        m = packed.model
        p = next(m.parameters())
        dev, dt = p.device, p.dtype
        self.packed, self.device, self.dtype = packed, dev, dt
        self.streams, self.guidance_keys = streams, guidance_keys
        self.arity = a = 1 + len(guidance_keys)
        cfg, t, d = m.cfg, m.cfg.temporal, m.cfg.depth
        self.levels, self.codebook = n, v = cfg.num_levels, cfg.codebook_size
        rows = streams * a
        self.c_self, self.c_cross = cfg.self_window + 1, cfg.cross_window + 1

        def ring(c: int) -> list[torch.Tensor]:
            return [torch.zeros(rows, t.num_heads, c + 2, t.head_dim, device=dev, dtype=dt) for _ in m.temporal]

        self.state = GenState(ring(self.c_self), ring(self.c_self), ring(self.c_cross), ring(self.c_cross),
                              torch.full((rows, n), tk.SOS_ID, dtype=torch.long, device=dev),
                              torch.zeros(rows, dtype=torch.long, device=dev),
                              torch.zeros(streams, dtype=torch.long, device=dev))
        self.write_sinks()
        # Per-stream controls and inputs (written by the owner between frames).
        self.temperature = torch.zeros(streams, device=dev)
        self.top_k = torch.full((streams,), v, dtype=torch.long, device=dev)
        self.cfg = torch.zeros(streams, max(a - 1, 1), device=dev)
        self.cond = torch.full((streams, tk.NUM_COND), tk.COND_OFFSET, dtype=torch.long, device=dev)
        self.forced = torch.zeros(streams, n, dtype=torch.long, device=dev)
        self.force = torch.zeros(streams, dtype=torch.bool, device=dev)
        self.exec = torch.ones(streams, dtype=torch.bool, device=dev)
        self.out = torch.zeros(streams, n, dtype=torch.long, device=dev)
        # Constants.
        self.self_pos = self._positions(self.c_self, dev)
        self.cross_pos = self._positions(self.c_cross, dev)
        hb = torch.arange(rows * t.num_heads, device=dev)
        self.self_base, self.cross_base = hb * (self.c_self + 2), hb * (self.c_cross + 2)
        self.noise_index = noise_index(n, v, dev)
        self.level_start = [tk.level_slice(q).start for q in range(n)]
        # Depth caches: scratch within a frame (every slot <= level is rewritten before it is read).
        self.depth_k = [torch.zeros(rows, d.num_heads, n, d.head_dim, device=dev, dtype=dt) for _ in m.depth]
        self.depth_v = [torch.zeros_like(k) for k in self.depth_k]

    @staticmethod
    def _positions(c: int, dev) -> torch.Tensor:
        """Frame offset of each slot: sink -1 (always visible), ring 0..c-1, dump NEVER."""
        return torch.cat([torch.tensor([-1]), torch.arange(c), torch.tensor([NEVER])]).to(dev)

    def kept(self):
        """Frames run inside leave the streams as they were (warm-up, capture and compile frames)."""
        return kept(self.state, self.out)

    def write_sinks(self) -> None:
        """Slot 0 of every temporal cache holds the layer's sink key (pre-divided by the query scale)."""
        st = self.state
        for layer, sk, sv, ck, cv in zip(self.packed.temporal, st.self_k, st.self_v, st.cross_k, st.cross_v,
                                         strict=True):
            sk[:, :, 0] = layer.self_attn.sink_k
            sv[:, :, 0] = layer.self_attn.sink_v
            ck[:, :, 0] = layer.cross_attn.sink_k
            cv[:, :, 0] = layer.cross_attn.sink_v

    # ----------------------------------------------------------------- rows <-> streams
    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """[b, ...] per stream -> [b * arity, ...] per row (no host sync, static shape)."""
        if self.arity == 1:
            return x
        return x[:, None].expand(x.shape[0], self.arity, *x.shape[1:]).reshape(-1, *x.shape[1:])

    def reset(self, streams: torch.Tensor, seed: torch.Tensor | None = None) -> None:
        """Streams where ``streams`` [B] bool is true start afresh (in place; sinks kept)."""
        st, r = self.state, self.rows(streams.to(self.device))
        st.frame.masked_fill_(r, 0)
        st.prev.masked_fill_(r[:, None], tk.SOS_ID)
        for c in (*st.self_k, *st.self_v, *st.cross_k, *st.cross_v):
            c[:, :, 1:].masked_fill_(r[:, None, None, None], 0)
        if seed is not None:
            st.seed.copy_(torch.where(streams.to(self.device), seed.to(self.device), st.seed))

    # ----------------------------------------------------------------- the step
    @staticmethod
    def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """q [R, H, dh] (already scaled) over k, v [R, H, S, dh] -> [R, H * dh]."""
        ctx = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask, scale=1.0)
        return ctx.flatten(1)

    @staticmethod
    def _write(cache: torch.Tensor, index: torch.Tensor, x: torch.Tensor) -> None:
        """cache [R, H, S, dh] (a prefix view), x [R, H, dh] into slot index [R * H] (flat)."""
        cache.view(-1, cache.shape[-1]).index_copy_(0, index, x.reshape(-1, x.shape[-1]))

    def _self_attention(self, pa: PackedAttention, x, k_cache, v_cache, index, mask) -> torch.Tensor:
        r, h, dh = x.shape[0], k_cache.shape[1], k_cache.shape[-1]
        y = pa.pre_norm(x)
        qkv = pa.qkv(y).view(r, 3, h, dh)
        self._write(k_cache, index, qkv[:, 1])
        self._write(v_cache, index, qkv[:, 2])
        q = qkv[:, 0] * pa.scale.view(h, dh)
        return x + pa.post_norm(pa.o(self._attend(q, k_cache, v_cache, mask)))

    def temporal(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal step of the first ``b`` streams -> (source [R, D_enc], output [R, D_t])."""
        P, st, m = self.packed, self.state, self.packed.model
        a, r = self.arity, b * self.arity
        heads = m.cfg.temporal.num_heads
        cond = negative_rows(self.cond[:b], self.guidance_keys).flatten(0, 1) if a > 1 else self.cond[:b]
        frame, ex = st.frame[:r], self.rows(self.exec[:b])
        src = m.encoder(cond)
        x = m.temporal_input(st.prev[:r], src)
        kv = P.cross_kv(src).view(r, len(P.temporal), 2, heads, -1)
        slot_s = torch.where(ex, 1 + frame % self.c_self, self.c_self + 1)
        slot_c = torch.where(ex, 1 + frame % self.c_cross, self.c_cross + 1)
        idx_s = (self.self_base[: r * heads].view(r, heads) + slot_s[:, None]).flatten()
        idx_c = (self.cross_base[: r * heads].view(r, heads) + slot_c[:, None]).flatten()
        # Visible: the sink, and the ring slots written so far including this frame's.
        vis_s = (self.self_pos <= frame[:, None])[:, None, None]
        vis_c = (self.cross_pos <= frame[:, None])[:, None, None]
        for i, layer in enumerate(P.temporal):
            x = self._self_attention(layer.self_attn, x, st.self_k[i][:r], st.self_v[i][:r], idx_s, vis_s)
            ca = layer.cross_attn
            kc, vc = st.cross_k[i][:r], st.cross_v[i][:r]
            self._write(kc, idx_c, kv[:, i, 0])
            self._write(vc, idx_c, kv[:, i, 1])
            h, dh = kc.shape[1], kc.shape[-1]
            q = ca.q(ca.pre_norm(x)).view(r, h, dh) * ca.scale.view(h, dh)
            x = x + ca.post_norm(ca.o(self._attend(q, kc, vc, vis_c)))
            x = layer.ffn(x)
        return src, x

    def depth(self, b: int, h: torch.Tensor, gumbel: torch.Tensor | None = None, trace: dict | None = None) -> None:
        """The 12 levels of the first ``b`` streams from temporal outputs h [R, D_t] into ``out[:b]``."""
        P, st, m = self.packed, self.state, self.packed.model
        a, r = self.arity, b * self.arity
        if gumbel is None:
            gumbel = hashed_gumbel(st.seed[:b], st.frame[:r:a], self.noise_index)  # [b, 12, 1024]
        temp, top_k, cfg = self.temperature[:b], self.top_k[:b], self.cfg[:b]
        force, forced, out = self.force[:b], self.forced[:b], self.out[:b]
        x = P.depth_adapter(h)
        for q in range(self.levels):  # unrolled: the level is a constant of the captured code
            for j, layer in enumerate(P.depth):
                kc, vc = self.depth_k[j][:r, :, : q + 1], self.depth_v[j][:r, :, : q + 1]
                pa = layer.self_attn
                y = pa.pre_norm(x)
                qkv = pa.qkv(y).view(r, 3, kc.shape[1], kc.shape[-1])
                kc[:, :, q] = qkv[:, 1]
                vc[:, :, q] = qkv[:, 2]
                qs = qkv[:, 0] * pa.scale.view(kc.shape[1], kc.shape[-1])
                x = x + pa.post_norm(pa.o(self._attend(qs, kc, vc, None)))
                x = layer.ffn(x)
            logits = m.soft_cap(P.heads[q](P.final_norm(x))).view(b, a, -1)
            guided = cfg_mix_rows(logits, cfg) if a > 1 else logits[:, 0]
            tok = sample_rows(guided, temp, top_k, gumbel[:, q]) + self.level_start[q]
            tok = torch.where(force, forced[:, q], tok)
            out[:, q] = tok
            if trace is not None:
                trace["logits"].append(logits)
                trace["guided"].append(guided)
            if q + 1 < self.levels:
                x = P.depth_in[self.rows(tok)]

    def advance(self, b: int) -> None:
        """After a frame: the streams that ran remember their tokens and count the frame."""
        st, r = self.state, b * self.arity
        ex = self.rows(self.exec[:b])
        st.prev[:r] = torch.where(ex[:, None], self.rows(self.out[:b]), st.prev[:r])
        st.frame[:r] += ex.long()

    def run(self, b: int, gumbel: torch.Tensor | None = None, trace: dict | None = None,
            skip_depth: bool = False) -> None:
        """One frame for the first ``b`` streams (inputs read from ``cond``/``forced``/``force``/
        ``exec``, tokens written to ``out``). This is the function CUDA graphs capture.

        ``skip_depth``: all streams are forced (prefill): emit ``forced`` without the depth loop
        (eager only)."""
        src, h = self.temporal(b)
        if trace is not None:
            trace.update(source=src.float(), temporal_out=h.float(), logits=[], guided=[])
        if skip_depth:
            self.out[:b] = self.forced[:b]
        else:
            self.depth(b, h, gumbel, trace)
        self.advance(b)
