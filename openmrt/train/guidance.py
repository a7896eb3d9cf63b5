"""Guidance as tokens: distil batched logit-mixing CFG into a single-row model.

The teacher (any trained LM) guides with extra rows, as the exported official function does:
``l = l_pos + s_style (l_pos - l_no_style) + s_notes (l_pos - l_no_notes)``. The student sees
only the positive row, with the same scales written into its CFG-token channels, and learns
to match the guided distribution (KL per RVQ level). Afterwards live play needs one batch row
per stream, and turning the notes-scale token up makes the model follow the notes harder.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from openmrt import tokens as tk
from openmrt.lm.generate import negative_rows
from openmrt.lm.model import Depthformer

SCALE_RANGE = (-1.0, 7.0)


def sample_scales(rng: np.random.Generator) -> dict[str, float]:
    """Guidance scales for one training example, binned as the CFG tokens bin them."""
    raw = rng.uniform(*SCALE_RANGE, size=3)
    return {k: tk.cfg_value(tk.discretize_cfg(s, k), k) for k, s in zip(("musiccoca", "notes", "drums"), raw,
                                                                         strict=True)}


def scales_of(cond: torch.Tensor) -> torch.Tensor:
    """The (style, notes) guidance weights a conditioning carries in its CFG tokens: [..., 144] -> [..., 2]."""
    codes = cond[..., tk.CFG_STYLE : tk.CFG_NOTES + 1] - tk.COND_OFFSET
    return -1.0 + tk.CFG_STEP["musiccoca"] * codes.float()


@torch.no_grad()
def guided_logits(teacher: Depthformer, cond: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Teacher's CFG-mixed level logits [B, T, 12, 1024] for cond [B, T, 144] (+7), tokens [B, T, 12];
    the scales are read from each frame's CFG tokens (the same ones the student sees)."""
    b, t, _ = cond.shape
    rows = negative_rows(cond.reshape(b * t, -1), ("musiccoca", "notes")).view(b, t, 3, -1)
    rows = rows.permute(0, 2, 1, 3).reshape(3 * b, t, -1)  # [pos, no style, no notes] per example
    logits = teacher.training_logits(rows, tokens.repeat_interleave(3, dim=0)).view(b, 3, t, *tokens.shape[2:], -1)
    s = scales_of(cond)[..., None, None]  # [B, T, 2, 1, 1]: broadcast over levels and ids
    pos = logits[:, 0]
    return pos + s[:, :, 0] * (pos - logits[:, 1]) + s[:, :, 1] * (pos - logits[:, 2])


def distill_losses(student: torch.Tensor, guided: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """KL(teacher-guided || student) per level [12], averaged over valid frames."""
    target = F.log_softmax(guided.float(), dim=-1)
    kl = (target.exp() * (target - F.log_softmax(student.float(), dim=-1))).sum(-1)  # [B, T, 12]
    w = valid[..., None].float()
    return (kl * w).sum((0, 1)) / w.sum((0, 1)).clamp(min=1)
