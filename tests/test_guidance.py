"""Guidance distillation: the teacher target is the batched-CFG mix; a student learns it from tokens."""

from __future__ import annotations

import numpy as np
import torch
from lm_data import make_token_shards

from openmrt import tokens as tk
from openmrt.cli import main
from openmrt.config import lm_config
from openmrt.lm.checkpoint import init_weights, load_lm, save_lm
from openmrt.lm.model import Depthformer
from openmrt.train.guidance import distill_losses, guided_logits, sample_scales, scales_of
from openmrt.train.lm import TokenData


def test_sampled_scales_are_representable():
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = sample_scales(rng)
        for k, v in s.items():
            assert tk.cfg_value(tk.discretize_cfg(v, k), k) == v and -1 <= v <= 7


def test_guided_logits_are_the_cfg_mix():
    model = init_weights(Depthformer(lm_config("tiny")), seed=1).eval()
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(-1, 3, (2, 5, 144), generator=g)
    raw[..., tk.CFG_STYLE :] = torch.tensor([25, 12, 3])  # style 4.0, notes 1.4
    cond = tk.encode_conditioning(raw)
    toks = tk.to_unique(torch.randint(0, 1024, (2, 5, 12), generator=g))
    assert torch.allclose(scales_of(cond)[0, 0], torch.tensor([4.0, 1.4]))
    no_style, no_notes = cond.clone(), cond.clone()
    no_style[..., tk.STYLE] = 6
    no_notes[..., tk.NOTES] = 6
    with torch.no_grad():
        pos, a, b = (model.training_logits(c, toks) for c in (cond, no_style, no_notes))
    want = pos + 4.0 * (pos - a) + 1.4 * (pos - b)
    assert (guided_logits(model, cond, toks) - want).abs().max() < 1e-4


def test_distillation_lowers_the_kl(tmp_path):
    data = make_token_shards(tmp_path / "shards")
    teacher = init_weights(Depthformer(lm_config("tiny")), seed=2).eval()
    save_lm(teacher, tmp_path / "teacher.safetensors")
    assert main(["train", "lm", "--data", str(data), "--out", str(tmp_path / "run"), "--init",
                 str(tmp_path / "teacher.safetensors"), "--distill-from", str(tmp_path / "teacher.safetensors"),
                 "--steps", "60", "--batch", "4", "--crop", "16", "--lr", "3e-3", "--warmup", "3", "--log-every", "10",
                 "--holdout", "1", "--no-augment", "--ckpt-every", "60"]) == 0
    student = load_lm(tmp_path / "run" / "lm.safetensors").eval()
    # A fixed batch with its own random scales: the batch-to-batch spread of the training log is
    # mostly the spread of the sampled scales, so compare before/after on the same frames.
    pool = TokenData(tmp_path / "shards", holdout=0).examples
    batch = TokenData.batch(pool, np.random.default_rng(123), 8, 16, None, random_cfg=True)
    cond, toks, valid = batch["cond"], batch["tokens"], batch["valid"]
    with torch.no_grad():
        target = guided_logits(teacher, cond, toks)
        before = float(distill_losses(teacher.training_logits(cond, toks), target, valid).mean())
        after = float(distill_losses(student.training_logits(cond, toks), target, valid).mean())
    print(f"KL(guided || single row): {before:.3f} -> {after:.3f}")
    assert before > 0.05  # the teacher's own single row is not its guided distribution
    assert after < 0.6 * before
