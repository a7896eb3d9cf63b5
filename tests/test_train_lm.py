"""LM training: a tiny model overfits a tiny shard; kill-and-resume continues the same curve;
two-process torchrun (gloo) trains, under DDP and under FSDP (same curve; checkpoints interchangeable)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from lm_data import make_token_shards
from needs import torchrun_cli
from torch.distributed.tensor import DTensor

from openmrt.cli import main


def rows(path) -> dict[int, dict]:
    with open(path, newline="") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}  # a re-logged step keeps its last row


def common(data, out, steps, *extra):
    return ["train", "lm", "--data", str(data), "--out", str(out), "--preset", "tiny", "--steps", str(steps),
            "--batch", "4", "--crop", "24", "--lr", "3e-3", "--warmup", "5", "--log-every", "1", "--eval-every", "10",
            "--holdout", "1", *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_token_shards(tmp_path_factory.mktemp("shards"))


def test_tiny_model_overfits(data, tmp_path):
    torch.set_num_threads(2)
    assert main(common(data, tmp_path / "run", 80, "--no-augment", "--ckpt-every", "80")) == 0
    log = rows(tmp_path / "run" / "log.csv")
    first, last = float(log[1]["loss"]), float(log[80]["loss"])
    print(f"loss {first:.3f} -> {last:.3f}")
    assert first > 6.0  # ln(1024) = 6.93 at the start
    assert last < 2.5  # learned the codes from the notes
    ev = rows(tmp_path / "run" / "eval.csv")
    assert sorted(ev) == list(range(10, 81, 10)) and all(float(r["eval_loss"]) > 0 for r in ev.values())
    assert (tmp_path / "run" / "lm.safetensors").exists()


def test_int8_tables_export_is_the_packaged_form_of_the_run(data, tmp_path):
    from safetensors import safe_open

    from openmrt.lm.checkpoint import load_lm

    assert main(common(data, tmp_path / "run", 3, "--ckpt-every", "3", "--int8-tables")) == 0
    with safe_open(str(tmp_path / "run" / "lm.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("embedding.weight.q8").dtype == torch.int8
    assert "to_logits.weight.q8" in keys and "embedding.weight" not in keys
    packed = load_lm(tmp_path / "run" / "lm.safetensors").state_dict()
    full = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)["model"]
    for k, v in full.items():  # int8 tables: half a step (1/127 of a row's largest weight) plus the float16
        step = v.abs().amax(-1, keepdim=True) / 127  # scale's rounding (127 steps x 2^-11); float16 elsewhere
        tol = 0.6 * step if k in ("embedding.weight", "to_logits.weight") else v.abs() * 2 ** -10 + 1e-6
        assert ((packed[k] - v).abs() <= tol).all(), k


def test_resume_reproduces_the_uninterrupted_curve(data, tmp_path):
    assert main(common(data, tmp_path / "a", 16, "--ckpt-every", "4")) == 0
    assert main(common(data, tmp_path / "b", 16, "--ckpt-every", "4", "--stop-after", "8")) == 0
    assert main(common(data, tmp_path / "b", 16, "--ckpt-every", "4")) == 0  # resumes at step 8
    a, b = rows(tmp_path / "a" / "log.csv"), rows(tmp_path / "b" / "log.csv")
    assert sorted(a) == sorted(b) == list(range(1, 17))
    for s in range(1, 17):
        assert float(a[s]["loss"]) == pytest.approx(float(b[s]["loss"]), abs=1e-5), s


@pytest.mark.slow
def test_sigkill_then_resume(data, tmp_path):
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "openmrt.cli", *common(data, out, 30, "--ckpt-every", "3")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "last.pt").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(out / "last.pt", weights_only=False)["step"]
    assert 3 <= saved < 30
    assert main(common(data, out, 30, "--ckpt-every", "3")) == 0
    ref = tmp_path / "ref"
    assert main(common(data, ref, 30, "--ckpt-every", "3")) == 0
    a, b = rows(ref / "log.csv"), rows(out / "log.csv")
    for s in range(saved + 1, 31):
        assert float(a[s]["loss"]) == pytest.approx(float(b[s]["loss"]), abs=1e-5), s


@pytest.mark.slow
def test_torchrun_two_processes(data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = torchrun_cli(*common(data, tmp_path / "ddp", 4, "--ckpt-every", "4"))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(rows(tmp_path / "ddp" / "log.csv")) == [1, 2, 3, 4]
    assert (tmp_path / "ddp" / "lm.safetensors").exists()


def test_resume_reads_position_keyed_optimizer_state(data, tmp_path):
    """Checkpoints written before optimizer state was keyed by parameter name still resume exactly."""
    assert main(common(data, tmp_path / "a", 6, "--ckpt-every", "3")) == 0
    assert main(common(data, tmp_path / "b", 6, "--ckpt-every", "3", "--stop-after", "3")) == 0
    ck = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    (group,) = ck["optimizer"]["param_groups"]
    names = group["params"]
    assert all(isinstance(n, str) for n in names) and set(ck["optimizer"]["state"]) == set(names)
    ck["optimizer"] = {"state": {i: ck["optimizer"]["state"][n] for i, n in enumerate(names)},
                       "param_groups": [{**group, "params": list(range(len(names)))}]}  # optimizer.state_dict()
    torch.save(ck, tmp_path / "b" / "last.pt")
    assert main(common(data, tmp_path / "b", 6, "--ckpt-every", "3")) == 0
    a, b = rows(tmp_path / "a" / "log.csv"), rows(tmp_path / "b" / "log.csv")
    for s in range(4, 7):
        assert float(a[s]["loss"]) == pytest.approx(float(b[s]["loss"]), abs=1e-5), s


def test_fsdp_needs_torchrun(data, tmp_path, capsys):
    assert main(common(data, tmp_path / "f", 2, "--fsdp")) == 1
    assert "--fsdp" in capsys.readouterr().err and not (tmp_path / "f" / "last.pt").exists()


def torchrun(data, out, steps: int, *extra) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = torchrun_cli(*common(data, out, steps, "--ckpt-every", "2", *extra))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.slow
def test_torchrun_fsdp_matches_ddp_and_resumes_without_it(data, tmp_path):
    """The same seed, data and global batch under DDP and FSDP (2 gloo processes); the FSDP run stops at step 4
    of 6 and its checkpoint is resumed without --fsdp (DDP), which must land on the DDP run's curve."""
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    torchrun(data, ddp, 6)
    torchrun(data, fsdp, 6, "--fsdp", "--stop-after", "4")
    ck, ref = (torch.load(p / "last.pt", weights_only=False) for p in (fsdp, ddp))
    assert ck["step"] == 4 and (fsdp / "lm.safetensors").exists()
    assert ck["model"].keys() == ref["model"].keys()  # a plain full state dict, as DDP writes it
    assert not any(isinstance(v, DTensor) for v in ck["model"].values())
    assert set(ck["optimizer"]["state"]) == set(ref["optimizer"]["state"])
    assert sorted(rows(fsdp / "log.csv")) == [1, 2, 3, 4]
    torchrun(data, fsdp, 6)  # resumes the FSDP checkpoint at step 4 under DDP
    a, b = rows(ddp / "log.csv"), rows(fsdp / "log.csv")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    # Not bitwise: FSDP reduce-scatters gradient shards and sums the clipping norm from per-shard partial sums, so
    # float additions happen in another order than DDP's bucketed all-reduce (measured: losses agree to ~1e-6).
    for s in range(1, 7):
        assert torch.isfinite(torch.tensor(float(b[s]["loss"]))), s
        assert float(a[s]["loss"]) == pytest.approx(float(b[s]["loss"]), abs=1e-4), s
    assert float(a[6]["loss"]) < float(a[1]["loss"]) - 1  # it trains
    ea, eb = rows(ddp / "eval.csv"), rows(fsdp / "eval.csv")
    assert float(ea[6]["eval_loss"]) == pytest.approx(float(eb[6]["eval_loss"]), abs=1e-4)


class _FakeStyle:
    """A style model's text path: a fixed 12-token tuple per text."""

    def tokens_for(self, prompts):
        seed = sum(map(ord, prompts[0][0]))
        return tuple(int(x) for x in np.random.default_rng(seed).integers(0, 1024, 12))


def test_text_style_puts_each_crops_caption_tokens_in_the_style_channels(data):
    """--text-style 1: every crop's 12 style tokens are its own caption's text tokens (the shards carry no audio
    style tokens, so without it the style channels stay masked)."""
    from openmrt import tokens as tk
    from openmrt.train.lm import TokenData

    pool = TokenData(data)
    pool.add_text_tokens(_FakeStyle())
    wanted = {tuple(ex["text_tokens"][0]) for ex in pool.examples}
    assert len(wanted) == len(pool.examples)  # one caption each
    style = lambda b: (b["cond"][..., tk.STYLE] - tk.COND_OFFSET).numpy()  # noqa: E731
    with_text = style(TokenData.batch(pool.examples, np.random.default_rng(0), 6, 12, None, text_style=1.0))
    for crop in with_text:
        assert (crop == crop[0]).all() and tuple(crop[0]) in wanted
    without = style(TokenData.batch(pool.examples, np.random.default_rng(0), 6, 12, None))
    assert (without == tk.MASKED).all()
