"""v1 token layout and the encoder input (shared/spec/mrt_v1.md §4-5, §7.8)."""

from __future__ import annotations

import torch

from openmrt.errors import ConfigError

PAD = 0  # also the decoder's BOS
MASK = 1  # missing context / masked style; also t5x's EOS
EOS = MASK
CODEC_OFFSET = 2  # codec level q, code c -> 2 + 1024 q + c
STYLE_OFFSET = 17410  # MusicCoCa style level k, code c -> 17410 + 1024 k + c
CODES = 1024
CONTEXT_FRAMES = 250  # 10 s at 25 Hz
CONTEXT_LEVELS = 4  # the encoder sees only the first 4 RVQ levels of the context
STYLE_TOKENS = 6  # the first 6 of MusicCoCa's 12 RVQ levels


def encoder_ids(context: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
    """context [250, >=4] RVQ codes (-1 = missing), style [>=6] MusicCoCa RVQ codes or None ->
    [2, 1006] ids: row 0 conditioned, row 1 with the style masked (the unconditional CFG row)."""
    if context.dim() != 2 or context.shape[0] != CONTEXT_FRAMES or context.shape[1] < CONTEXT_LEVELS:
        raise ConfigError(f"v1 context must be [{CONTEXT_FRAMES}, >= {CONTEXT_LEVELS}] codes, "
                          f"got {list(context.shape)}")
    c = context[:, :CONTEXT_LEVELS].long()
    if (c >= CODES).any() or (c < -1).any():
        raise ConfigError(f"context codes must be in -1..{CODES - 1}")
    level = torch.arange(CONTEXT_LEVELS, device=c.device)
    codec = torch.where(c >= 0, CODEC_OFFSET + CODES * level + c, MASK).flatten()  # frame-major
    masked = torch.full((STYLE_TOKENS,), MASK, dtype=torch.long, device=c.device)
    if style is None:
        st = masked
    else:
        s = style.flatten()[:STYLE_TOKENS].long()
        if s.numel() < STYLE_TOKENS or (s < 0).any() or (s >= CODES).any():
            raise ConfigError(f"style must hold >= {STYLE_TOKENS} codes in 0..{CODES - 1}")
        st = STYLE_OFFSET + CODES * torch.arange(STYLE_TOKENS, device=c.device) + s
    return torch.stack([torch.cat([codec, st]), torch.cat([codec, masked])])


def tokens_to_codes(tokens: torch.Tensor, levels: int = 16) -> torch.Tensor:
    """Decoder output ids [..., 50*16] -> RVQ codes [..., 50, 16], as the official ``llm_to_rvq(safe=False)``:
    subtract the offset, clamp at 0, take % 1024, so PAD/EOS/wrong-level ids still become some code."""
    codes = (tokens.long() - CODEC_OFFSET).clamp(min=0) % CODES
    return codes.unflatten(-1, (-1, levels))
