"""The graph-safe frame step (openmrt/lm/step.py) against the reference per-frame path (the
model's ``temporal_step``/``depth_step``/``level_logits`` with the original sampler), token for
token with the golden Gumbel noise injected, and its graph-safety properties on the CPU."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from openmrt import tokens as tk
from openmrt.config import lm_config
from openmrt.errors import ConfigError, ControlError
from openmrt.lm.convert import load_official
from openmrt.lm.generate import LMGenerator, best_setting, make_generator
from openmrt.lm.lora import apply_lora
from openmrt.lm.model import Depthformer
from openmrt.lm.sampling import cfg_mix, hashed_gumbel, mix32, noise_index, sample
from openmrt.lm.step import negative_rows


@torch.no_grad()
def reference_tokens(model, cond, gumbel, temperature, top_k, guidance=None) -> np.ndarray:
    """Today's per-frame algorithm, written out: cond [T, 144], gumbel [T, 12, 1024] -> tokens [T, 12]."""
    keys = tuple(k for k in ("musiccoca", "notes") if guidance and k in guidance)
    scales, a = [guidance[k] for k in keys], 1 + len(keys)
    state = model.init_temporal_state(a)
    depth = model.init_depth_cache(a)
    prev = torch.full((a, 12), tk.SOS_ID, dtype=torch.long)
    out = []
    for t in range(cond.shape[0]):
        rows = negative_rows(cond[t : t + 1], keys).flatten(0, 1)
        _, h = model.temporal_step(rows, prev, state, t)
        z, toks = h, []
        for q in range(12):
            logits = model.level_logits(model.depth_step(z, depth, q), q).view(1, a, -1)
            guided = cfg_mix(logits, scales) if a > 1 else logits[:, 0]
            noise = gumbel[t : t + 1, q] if temperature > 0 else None
            tok = sample(guided, temperature, top_k, noise) + tk.level_slice(q).start
            toks.append(tok)
            z = model.embed(tok).repeat_interleave(a, dim=0)
        frame = torch.cat(toks)
        prev = frame[None].expand(a, -1).clone()
        out.append(frame.numpy())
    return np.array(out)


def fast_tokens(model, cond, gumbel, temperature, top_k, guidance=None, **kw) -> np.ndarray:
    gen = LMGenerator(model, guidance=guidance, temperature=temperature, top_k=top_k, **kw)
    return np.array([gen.step(cond[t : t + 1], gumbel=gumbel[t : t + 1])[0].numpy() for t in range(cond.shape[0])])


@pytest.fixture(scope="module")
def tiny(golden_dir):
    m = Depthformer(lm_config("tiny"))
    load_official(m, load_file(str(golden_dir / "tiny_params.safetensors")))
    return m.eval()


@pytest.mark.parametrize("scenario", ["cfg3_f32", "nocfg_f32", "greedy_f32"])
def test_tiny_goldens_token_for_token(tiny, golden_dir, scenario):
    d = np.load(golden_dir / f"{scenario}.npz")
    s = d["cfg_scales"]
    guidance = {"musiccoca": float(s[0]), "notes": float(s[1])} if s.size else None
    cond, g = torch.as_tensor(d["cond_tokens"]), torch.as_tensor(d["gumbel_valid"])
    args = (cond, g, float(d["temperature"]), int(d["top_k"]), guidance)
    ref, fast = reference_tokens(tiny, *args), fast_tokens(tiny, *args)
    assert (ref == d["tokens"]).all()
    assert (fast == ref).all(), f"{(fast != ref).sum()} of {ref.size} tokens differ"


@pytest.mark.slow
def test_seeded_mrt2_small_token_for_token(golden_dir):
    from seeded import LM_SEED, rebuild

    model = Depthformer(lm_config("mrt2_small"))
    load_official(model, rebuild(golden_dir / "seeded" / "lm_param_keys.txt", LM_SEED))
    model.eval()
    for name in ("lm_sampled", "lm_long48_greedy"):
        d = np.load(golden_dir / "seeded" / f"{name}.npz")
        cond = torch.as_tensor(d["cond_tokens"])
        g = torch.as_tensor(d["gumbel_valid"]) if "gumbel_valid" in d else torch.zeros(cond.shape[0], 12, 1024)
        args = (cond, g, float(d["temperature"]), int(d["top_k"]))
        fast = fast_tokens(model, *args)
        assert (fast == d["tokens"]).all(), (name, (fast != d["tokens"]).sum())
        if name == "lm_sampled":  # the reference path is slow; 4 frames suffice for it
            assert (reference_tokens(model, *args) == fast).all()


def test_no_host_sync_in_the_step(tiny, monkeypatch):
    """Nothing in the frame step reads a device value on the host or makes a data-dependent shape
    (what a CUDA graph cannot capture): every such call raises while a frame runs."""
    gen = LMGenerator(tiny, guidance={"musiccoca": 2.0, "notes": 1.0}, batch_size=2, temperature=1.1, top_k=7)
    cond = tk.encode_conditioning(tk.make_conditioning(style=list(range(12)), notes=[0] * 128))[None].repeat(2, 1)
    gen.core.cond.copy_(cond)

    def boom(*a, **k):
        raise AssertionError("host sync or data-dependent shape inside the step")

    for name in ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero",
                 "masked_select", "unique", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    for name in ("nonzero", "masked_select", "unique", "repeat_interleave"):
        monkeypatch.setattr(torch, name, boom)
    with torch.inference_mode():
        for _ in range(3):
            gen.core.run(2)
    monkeypatch.undo()
    assert gen.frame == 3


def test_hashed_noise_is_per_stream_and_gumbel():
    idx = noise_index(12, 1024)
    seed, frame = torch.tensor([5, 5, 6]), torch.tensor([3, 3, 3])
    g = hashed_gumbel(seed, frame, idx)
    assert torch.equal(g[0], g[1]) and not torch.equal(g[0], g[2])
    assert torch.equal(hashed_gumbel(seed[2:], frame[2:], idx)[0], g[2])  # independent of the batch
    assert not torch.equal(hashed_gumbel(seed[:1], frame[:1] + 1, idx), g[:1])
    x = g.flatten().double()
    assert torch.isfinite(x).all()
    assert abs(float(x.mean()) - 0.5772) < 0.02 and abs(float(x.var()) - np.pi**2 / 6) < 0.05
    # The hash is a bijection on 32 bits (no collapsed values) on a sample of inputs.
    v = torch.randint(0, 2**32, (100_000,), dtype=torch.long)
    assert mix32(v).unique().numel() == v.unique().numel()


def test_controls_change_without_rebuilding(tiny):
    cond = tk.encode_conditioning(tk.make_conditioning(style=list(range(12)), notes=[0] * 128))[None]
    gen = LMGenerator(tiny, temperature=1.3, top_k=40, seed=1)
    gen.step(cond)
    gen.temperature, gen.top_k = 0.0, 1
    tr: dict = {}
    out = gen.step(cond, trace=tr)
    greedy = torch.stack([lg[0, 0].argmax() + tk.level_slice(q).start for q, lg in enumerate(tr["logits"])])
    assert torch.equal(out[0], greedy)
    guided = LMGenerator(tiny, guidance={"musiccoca": 3.0, "notes": 1.0}, temperature=0.0)
    guided.guidance = [0.0, 0.0]  # no mixing: the sampled logits are the positive row's
    tr = {}
    guided.step(cond, trace=tr)
    assert all(torch.equal(g, lg[:, 0]) for g, lg in zip(tr["guided"], tr["logits"], strict=True))
    with pytest.raises(ControlError):
        guided.guidance = [1.0]
    with pytest.raises(ControlError):
        gen.temperature = float("nan")
    with pytest.raises(ControlError):
        gen.step(cond + 5000)


def test_graphs_setting_is_refused_on_the_cpu(tiny):
    with pytest.raises(ConfigError, match="CUDA"):
        LMGenerator(tiny, cuda_graph=True)
    with pytest.raises(ConfigError, match="CUDA"):
        make_generator(tiny, "graphs")
    with pytest.raises(ConfigError, match="setting"):
        make_generator(tiny, "fast")
    assert best_setting("cpu") == "int8" and best_setting(torch.device("cuda", 0), tiny) == "graphs"
    assert best_setting("cpu", tiny) == "eager"
    with pytest.raises(ConfigError, match="merge_lora"):
        LMGenerator(apply_lora(copy.deepcopy(tiny)))
