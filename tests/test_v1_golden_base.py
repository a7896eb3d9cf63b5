"""Full-size v1 base parity (shared/golden/v1, 64 decode steps): weights rebuilt by the README's seeded rule and
checked against every per-tensor fingerprint, then the decode path teacher-forced with the golden tokens.

At base depth float32 rounding is amplified a lot (unscaled attention logits with these random weights): the
official code's own teacher-forced and step paths differ by up to 0.094, and a float64 run of our model is
0.11 from the golden logits (measured, docs/v1.md). So the logits are held to 0.15 at the worst position,
with tighter bounds on the mean and on the first frame, where the error has not grown yet.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from needs import in_ci
from test_v1_golden import one_thread, recorded_noise  # noqa: F401 (one_thread: autouse fixture)

from openmrt.lm_v1.config import v1_config
from openmrt.lm_v1.convert import key_map
from openmrt.lm_v1.generate import V1Sampling, generate_chunk
from openmrt.lm_v1.model import V1LM
from openmrt.lm_v1.sampling import cfg_combine, top_k_mask

pytestmark = pytest.mark.slow
SEED = 20260101
_RULE = {"scale": (1.0, 0.1), "embedding": (0.0, 1.0), "rel_embedding": (0.0, 0.5)}  # leaf: (offset, scale)


def seeded_tensor(index: int, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """golden/v1/README.md: float32(N(0,1) from default_rng([seed, index])) * scale + offset; kernels 1/sqrt(in)."""
    offset, scale = _RULE.get(key.rsplit("/", 1)[1], (0.0, 1 / math.sqrt(shape[0])))
    w = np.float32(np.random.default_rng([SEED, index]).standard_normal(shape)) * np.float32(scale)
    return w + np.float32(offset) if offset else w


@pytest.fixture(scope="module")
def base(golden_dir):
    d = golden_dir / "v1"
    if not d.is_dir():
        (pytest.fail if in_ci() else pytest.skip)(f"v1 golden vectors not found at {d} (set OPENMRT_GOLDEN)")
    cfg = v1_config("base")
    model = V1LM(cfg).eval()
    params, kmap = dict(model.named_parameters()), key_map(cfg)
    fingerprints = json.loads((d / "base_weights_fingerprint.json").read_text())
    bad = []
    # Tensor by tensor straight into the model: the flat dict would double the 1.4 GB.
    for line in (d / "base_param_shapes.txt").read_text().splitlines():
        i, key, shape, _ = line.split("\t")
        w = seeded_tensor(int(i), key, tuple(json.loads(shape)))
        fp = fingerprints[key]
        if abs(w.sum(dtype=np.float64) - fp["sum"]) > 1e-6 * max(1.0, abs(fp["sum"])) or not np.array_equal(
                w.ravel()[:4], np.float32(fp["first4"])):
            bad.append(key)
        name, transpose = kmap.pop(key)
        with torch.no_grad():
            params[name].copy_(torch.from_numpy(w).T if transpose else torch.from_numpy(w))
    assert not kmap, f"official keys the shape list lacks: {sorted(kmap)[:5]}"
    assert len(fingerprints) == 430 and not bad, f"fingerprints differ: {bad[:5]}"
    return model, d


def forced_run(model, d, sampling: V1Sampling):
    """Step path fed the golden tokens: raw logits [S, 2, V], our samples, and each step's top-2 margin of
    the value the sampler takes the argmax of (guided logits; for T > 0 over the top-k plus the noise)."""
    tokens = torch.as_tensor(d["tokens"]).long()
    noise = recorded_noise(d) if sampling.temperature > 0 else None
    raws, margins = [], []

    def keep(s, raw):
        raws.append(raw.clone())
        v = cfg_combine(raw, sampling.guidance)[0]
        if noise is not None:
            v = top_k_mask(v / sampling.temperature, sampling.top_k) + noise(s)[0]
        top2 = v.topk(2).values
        margins.append(float(top2[0] - top2[1]))

    ours = generate_chunk(model, torch.as_tensor(d["encoder_input_tokens"]).long(), sampling,
                          steps=tokens.shape[1], forced=tokens, noise=noise, on_logits=keep)
    return torch.stack(raws), ours, np.array(margins)


def logit_errors(raw: torch.Tensor, d) -> np.ndarray:
    """Per step, the max |ours - golden| over the recorded columns, top-64 ids and full-vocab steps."""
    err = np.abs(raw[:, :, torch.as_tensor(d["logits_cols"]).long()].numpy() - d["logits_sub"]).max((1, 2))
    top = torch.gather(raw, 2, torch.as_tensor(d["logits_top64_idx"]).long()).numpy()
    err = np.maximum(err, np.abs(top - d["logits_top64_val"]).max((1, 2)))
    for s, ref in zip(d["logits_full_steps"], d["logits_full"], strict=True):
        err[s] = max(err[s], np.abs(raw[s].numpy() - ref).max())
    return err


@pytest.mark.parametrize("scenario,sampling", [("base_cfg_greedy", V1Sampling(5.0, 0.0, 40)),
                                               ("base_cfg_sampled", V1Sampling(5.0, 1.1, 40))])
def test_base_v1_forced_logits_and_tokens(base, scenario, sampling):
    model, gdir = base
    d = np.load(gdir / f"{scenario}.npz")
    # In float64 our own rounding drops out and what is left is the golden's float32 noise: in float32 the
    # error is 0.107 on an AVX-512 Intel machine and 0.185 on an AVX2 AMD one; in float64 0.11-0.12 on both.
    raw, ours, margin = forced_run(copy.deepcopy(model).double(), d, sampling)
    raw = raw.float()
    err = logit_errors(raw, d)
    assert err.max() <= 0.15, f"max logit error {err.max():.4f} at step {err.argmax()}"
    assert err[:16].max() <= 0.05, f"first-frame logit error {err[:16].max():.4f}"
    assert err.mean() <= 0.06, f"mean of per-step max errors {err.mean():.4f}"
    # The mark: greedy tokens identical where the margin exceeds 0.2. With the sampling noise added a
    # margin can move by twice the golden's own logit error (~0.12): one step at 0.2017 flips on every machine.
    clear = margin > (0.2 if sampling.temperature == 0 else 0.3)
    wrong = np.flatnonzero(clear & (ours[0].numpy() != d["tokens"][0]))
    assert wrong.size == 0, f"tokens differ at steps {wrong} despite margins {margin[wrong]}"
    assert clear.mean() >= 0.5, clear.mean()  # the check above covers most steps


def test_base_v1_encoder_and_whole_chunk(base):
    """Encoder output against the golden, and the teacher-forced whole-chunk path against our step path."""
    model, gdir = base
    d = np.load(gdir / "base_cfg_greedy.npz")
    ids, tokens = torch.as_tensor(d["encoder_input_tokens"]).long(), torch.as_tensor(d["tokens"]).long()
    seen = []  # the encoder output as the whole-chunk pass computes it (one encoder run, not two)
    hook = model.encoder.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            whole = model(ids, tokens)
    finally:
        hook.remove()
    enc = seen[0]
    assert np.abs(enc[:, d["encoder_output_positions"]].numpy() - d["encoder_output_sub"]).max() <= 2e-3
    assert np.abs(enc.mean(-1).numpy() - d["encoder_output_row_mean"]).max() <= 1e-4
    raw, _, _ = forced_run(model, d, V1Sampling(5.0, 0.0, 40))
    assert (raw.transpose(0, 1) - whole).abs().max() <= 5e-3
