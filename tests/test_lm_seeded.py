"""Full-size mrt2_small parity: weights rebuilt from the seed (shared/golden/seeded), run
through the same converter as a real checkpoint, teacher-forced as the README suggests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from seeded import LM_SEED, check_fingerprints, rebuild

from openmrt import tokens as tk
from openmrt.config import lm_config
from openmrt.lm.convert import load_official
from openmrt.lm.generate import LMGenerator
from openmrt.lm.model import Depthformer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small(golden_dir):
    seeded = golden_dir / "seeded"
    flat = rebuild(seeded / "lm_param_keys.txt", LM_SEED)
    assert len(flat) == 325
    assert check_fingerprints(flat, seeded / "weights_fingerprint.json", "lm") == []
    total = sum(float(np.abs(w.astype(np.float64)).sum()) for _, w in sorted(flat.items()))
    assert total == pytest.approx(7934555.488774515, rel=1e-12)
    model = Depthformer(lm_config("mrt2_small"))
    load_official(model, flat)
    return model.eval()


@pytest.mark.parametrize("name", ["lm_greedy", "lm_sampled"])
def test_four_frames(small, golden_dir, name):
    d = np.load(golden_dir / "seeded" / f"{name}.npz")
    gen = LMGenerator(small, temperature=float(d["temperature"]), top_k=int(d["top_k"]))
    err = dict(source=0.0, temporal_in=0.0, temporal=0.0, capped=0.0)
    for t in range(4):
        tr: dict = {}
        with torch.no_grad():
            temporal_in = small.temporal_input(gen.state.prev).float()
        cond, noise = torch.as_tensor(d["cond_tokens"][t : t + 1]), torch.as_tensor(d["gumbel_valid"][t : t + 1])
        out = gen.step(cond, gumbel=noise, trace=tr)
        # Free-running with the recorded Gumbel noise: the official tokens, exactly.
        assert (out[0].numpy() == d["tokens"][t]).all(), (t, out[0].numpy(), d["tokens"][t])
        capped = torch.stack(tr["logits"], 2)[0, 0].numpy()
        for k, ours, ref in (("source", tr["source"][0], d["source"][t]),
                             ("temporal_in", temporal_in[0], d["temporal_inputs"][t]),
                             ("temporal", tr["temporal_out"][0], d["temporal_outputs"][t]),
                             ("capped", capped, d["depth_logits_capped_valid"][t])):
            err[k] = max(err[k], float(np.abs(np.asarray(ours) - ref).max()))
    print(name, err)
    assert err["source"] <= 1e-5 and err["temporal_in"] <= 1e-4 and err["temporal"] <= 1e-4, err
    assert err["capped"] <= 2e-4, err


def test_long48_through_window_eviction(small, golden_dir):
    """48 greedy frames, teacher-forced; the 41-frame windows evict from frame 42 on."""
    d = np.load(golden_dir / "seeded" / "lm_long48_greedy.npz")
    gen = LMGenerator(small, temperature=0.0)
    err_h = err_l = 0.0
    for t in range(48):
        tr: dict = {}
        gen.step(torch.as_tensor(d["cond_tokens"][t : t + 1]), forced=torch.as_tensor(d["tokens"][t : t + 1]), trace=tr)
        capped = torch.stack(tr["logits"], 2)[0, 0].numpy()  # [12, 1024]
        greedy = capped.argmax(-1) + np.array([tk.level_slice(q).start for q in range(12)])
        assert (greedy == d["tokens"][t]).all(), t  # every one of the 576 greedy decisions
        err_h = max(err_h, float(np.abs(tr["temporal_out"][0].numpy() - d["temporal_outputs"][t]).max()))
        err_l = max(err_l, float(np.abs(capped[:2] - d["capped_valid_levels01"][t]).max()))
        assert np.allclose(capped.astype(np.float64).sum(-1), d["capped_valid_sum"][t], atol=2e-2)
    print("long48", err_h, err_l)
    assert err_h <= 1e-4 and err_l <= 2e-4


def test_long48_whole_sequence(small, golden_dir):
    d = np.load(golden_dir / "seeded" / "lm_long48_greedy.npz")
    with torch.no_grad():
        logits = small(torch.as_tensor(d["cond_tokens"])[None], torch.as_tensor(d["tokens"])[None])[0]
    lv = torch.stack([logits[:, q, tk.level_slice(q)] for q in range(2)], 1).numpy()
    assert np.abs(lv - d["layerwise_capped_levels01"]).max() <= 2e-4
