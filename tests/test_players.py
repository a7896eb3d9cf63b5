"""Many players, one model (openmrt/engine/players.py): every slot plays exactly its own stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openmrt import tokens as tk
from openmrt.config import lm_config
from openmrt.engine.players import Players, padded
from openmrt.errors import ConfigError, ControlError
from openmrt.lm.checkpoint import init_weights
from openmrt.lm.generate import LMGenerator
from openmrt.lm.model import Depthformer

FRAMES = 8
SETTINGS = [  # (seed, temperature, top_k) per slot
    (3, 1.3, 40), (4, 0.0, 40), (3, 0.7, 5), (11, 1.0, 1024)]


@pytest.fixture(scope="module")
def model():
    m = init_weights(Depthformer(lm_config("tiny")), seed=7).eval()
    with torch.no_grad():
        m.to_logits.weight.mul_(20)  # peaky logits: tokens follow the conditioning, not just noise
    return m


def conds(slot: int, frames: int = FRAMES) -> torch.Tensor:
    g = np.random.default_rng(100 + slot)
    raw = [tk.make_conditioning(style=g.integers(0, 1024, 12), notes=g.integers(-1, 3, 128),
                                drums=int(g.integers(-1, 2))) for _ in range(frames)]
    return tk.encode_conditioning(np.stack(raw))


def single(model, slot, cond, guidance=None, prefill=None):
    seed, t, k = SETTINGS[slot]
    gen = LMGenerator(model, temperature=t, top_k=k, seed=seed, guidance=guidance)
    if prefill is not None:
        for c, x in zip(*prefill, strict=True):
            gen.step(c[None], forced=x[None])
    return torch.stack([gen.step(cond[i : i + 1])[0] for i in range(cond.shape[0])])


def batch_cond(c: list[torch.Tensor], t: int, capacity: int) -> torch.Tensor:
    out = torch.full((capacity, 144), tk.COND_OFFSET, dtype=torch.long)
    for s, x in enumerate(c):
        out[s] = x[t]
    return out


def test_each_slot_plays_its_single_player_stream(model):
    c = [conds(s) for s in range(4)]
    players = Players(model, capacity=4)
    assert [players.join(*SETTINGS[s]) for s in range(4)] == [0, 1, 2, 3]
    got = torch.stack([players.step(batch_cond(c, t, 4)) for t in range(FRAMES)], 1)  # [4, T, 12]
    for s in range(4):
        assert torch.equal(got[s], single(model, s, c[s])), s
    assert [players.frame(s) for s in range(4)] == [FRAMES] * 4


def test_reset_join_leave_leave_the_others_bit_identical(model):
    c = [conds(s) for s in range(4)]

    def play(churn: bool):
        p = Players(model, capacity=4)
        for s in range(4):
            p.join(*SETTINGS[s])
        toks = []
        for t in range(FRAMES):
            if churn and t == 3:
                p.reset(2, seed=99)
                p.set(2, temperature=0.2, top_k=3)
                p.leave(1)
            if churn and t == 5:
                assert p.join(*SETTINGS[1]) == 1  # a new player takes the free slot
            toks.append(p.step(batch_cond(c, t, 4)))
        return torch.stack(toks, 1), p

    base, pb = play(False)
    churned, pc = play(True)
    for s in (0, 3):
        assert torch.equal(base[s], churned[s])
        for k, v in pb.core.state.tensors().items():
            if k != "seed":
                assert torch.equal(v[s], pc.core.state.tensors()[k][s]), k
    # The slot that joined at frame 5 plays a fresh single-player stream from there.
    assert torch.equal(churned[1, 5:], single(model, 1, c[1][5:]))
    assert pc.frame(1) == FRAMES - 5 and pc.frame(2) == FRAMES - 3


def test_prefill_advances_only_its_slot(model):
    c = [conds(s) for s in range(2)]
    known = tk.to_unique(torch.randint(0, 1024, (5, 12), generator=torch.Generator().manual_seed(1)))
    pre_cond = conds(7, 5)
    p = Players(model, capacity=2)
    p.join(*SETTINGS[0])
    p.join(*SETTINGS[1])
    p.prefill(1, pre_cond, known)
    assert (p.frame(0), p.frame(1)) == (0, 5)
    got = torch.stack([p.step(batch_cond(c, t, 2)) for t in range(FRAMES)], 1)
    assert torch.equal(got[0], single(model, 0, c[0]))
    assert torch.equal(got[1], single(model, 1, c[1], prefill=(pre_cond, known)))


def test_guidance_scales_per_slot(model):
    c = [conds(s) for s in range(2)]
    scales = [{"musiccoca": 3.0, "notes": 1.0}, {"musiccoca": 0.5, "notes": 2.0}]
    p = Players(model, capacity=2, guidance=("musiccoca", "notes"))
    for s in range(2):
        p.join(*SETTINGS[s], guidance=scales[s])
    got = torch.stack([p.step(batch_cond(c, t, 2)) for t in range(FRAMES)], 1)
    for s in range(2):
        assert torch.equal(got[s], single(model, s, c[s], guidance=scales[s]))


def test_bad_requests(model):
    p = Players(model, capacity=1)
    p.join()
    with pytest.raises(ControlError, match="taken"):
        p.join()
    with pytest.raises(ControlError, match="slot 3"):
        p.set(3, temperature=1.0)
    with pytest.raises(ControlError, match="temperature"):
        p.set(0, temperature=-1)
    with pytest.raises(ControlError, match="no rows"):
        p.set(0, guidance={"notes": 2.0})
    with pytest.raises(ConfigError, match="CUDA"):
        Players(model, capacity=8, cuda_graph=True)
    assert [padded(n) for n in (1, 2, 8, 9, 33, 64, 65, 129)] == [1, 8, 8, 32, 64, 64, 128, 256]
