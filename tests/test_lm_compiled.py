"""The compiled CPU frame step (openmrt/lm/compiled.py) plays the same stream as the eager one."""

from __future__ import annotations

import shutil

import pytest
import torch
from needs import need

from openmrt import tokens as tk
from openmrt.config import lm_config
from openmrt.lm.generate import LMGenerator, make_generator
from openmrt.lm.model import Depthformer
from openmrt.lm.packed import pack


def conds(frames: int) -> list[torch.Tensor]:
    """Conditioning that changes while it plays (notes moving, drums toggled, one masked stretch)."""
    out = []
    for i in range(frames):
        notes = [int((p + i // 5) % 9 == 0) for p in range(128)] if i % 17 < 12 else None
        out.append(tk.encode_conditioning(tk.make_conditioning(style=list(range(12)), notes=notes,
                                                               drums=i // 10 % 2))[None])
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    need(shutil.which("g++") is not None, "g++ (the compiled LM step's C++ compiler)")
    mp = pytest.MonkeyPatch()
    mp.setenv("OPENMRT_COMPILE", "1")
    mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("inductor")))
    torch.manual_seed(0)
    model = Depthformer(lm_config("tiny")).eval()
    packed = pack(model)
    eager = LMGenerator(model, temperature=1.3, top_k=40, seed=5, packed=packed)
    compiled = make_generator(model, "compiled", temperature=1.3, top_k=40, seed=5, packed=packed)
    yield eager, compiled
    mp.undo()


def test_compiled_step_plays_the_eager_stream(pair):
    eager, compiled = pair
    assert compiled.compiled and not eager.compiled
    eager.reset(), compiled.reset()
    cs = conds(60)
    a = torch.stack([eager.step(c)[0] for c in cs])
    b = torch.stack([compiled.step(c)[0] for c in cs])
    assert (a == b).all(dim=1).float().mean() == 1.0, f"frames differ: {(a != b).any(dim=1).nonzero().flatten()}"
    for x, y in zip(eager.state.tensors().values(), compiled.state.tensors().values(), strict=True):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


def test_compiled_step_follows_controls_and_state_ops(pair):
    """Controls, reset, save/load and prefill are writes into the step's tensors: no recompile, same stream."""
    eager, compiled = pair
    cs = conds(40)
    for gen in (eager, compiled):
        gen.reset(seed=9)
        gen.temperature, gen.top_k = 0.8, 12
        for c in cs[:10]:
            gen.step(c)
    snap = {k: v.clone() for k, v in compiled.state_dict().items()}
    forced = torch.tensor([[tk.level_slice(q).start + 7 * q for q in range(tk.NUM_LEVELS)]])
    outs = []
    for gen in (eager, compiled):
        gen.step(cs[10], forced=forced)  # a prefilled frame (eager path, skips the depth loop)
        gen.temperature = 1.1
        outs.append(torch.stack([gen.step(c)[0] for c in cs[11:]]))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    compiled.load_state_dict(snap)  # back to frame 10: the same frames again
    compiled.step(cs[10], forced=forced)
    again = torch.stack([compiled.step(c)[0] for c in cs[11:]])
    torch.testing.assert_close(again, outs[1], rtol=0, atol=0)


def test_compile_switched_off_stays_eager(monkeypatch, capsys):
    monkeypatch.setenv("OPENMRT_COMPILE", "0")
    torch.manual_seed(0)
    gen = make_generator(Depthformer(lm_config("tiny")).eval(), "compiled")
    assert not gen.compiled
    assert "stays eager" in capsys.readouterr().err
    assert gen.step(conds(1)[0]).shape == (1, tk.NUM_LEVELS)
