"""Codec training: codebook learning (k-means, EMA, restarts, quantizer dropout), a tiny codec
trains and resumes on the same curve, SIGKILL then resume, two-process torchrun (gloo)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from needs import torchrun_cli

from openmrt.cli import main
from openmrt.codec.checkpoint import load_codec
from openmrt.codec.quantizer import ResidualVQ
from openmrt.data.labels import Labels
from openmrt.data.shards import Example, write_index, write_shard
from openmrt.train.codec_vq import CodebookLearner


def make_audio_shards(root: Path, examples: int = 3, frames: int = 40, seed: int = 0) -> Path:
    """Decaying sine notes (a new pitch every 10 frames) with their note labels."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    exs = []
    t = np.arange(frames * 1920) / 48000
    for e in range(examples):
        audio = np.zeros(frames * 1920, np.float32)
        notes = np.zeros((frames, 128), np.int8)
        for f0 in range(0, frames, 10):
            p = int(rng.integers(48, 72))
            s = f0 * 1920
            tt = t[: 10 * 1920]
            audio[s:s + len(tt)] += 0.3 * np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * tt) * np.exp(-4 * tt)
            notes[f0, p], notes[f0 + 1:f0 + 10, p] = 2, 1
        exs.append(Example(np.stack([audio, 0.8 * audio]), Labels(notes, np.zeros(frames, np.int8), {}),
                           {"caption": f"ex{e}", "source": "test"}))
    write_shard(root / "shard_00000.npz", exs)
    write_index(root, {"kind": "test"})
    return root


def rows(path) -> dict[int, dict]:
    with open(path, newline="") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def common(data, out, steps, *extra):
    return ["train", "codec", "--data", str(data), "--eval-data", str(data), "--out", str(out), "--preset", "demo",
            "--width", "0.03125", "--levels", "4", "--steps", str(steps), "--batch", "2", "--crop", "4",
            "--warmup", "2", "--vq-start", "2", "--kmeans-batches", "2", "--restart-every", "3", "--log-every", "1",
            "--eval-every", "4", "--eval-clips", "2", "--eval-seconds", "0.4", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_audio_shards(tmp_path_factory.mktemp("audio"))


def test_kmeans_init_uses_every_code_and_dropout_keeps_prefixes():
    torch.manual_seed(0)
    vq = ResidualVQ(4, 16, 8)
    learner = CodebookLearner(vq, levels=3)
    centres = 5 * torch.randn(16, 8)
    z = centres[torch.randint(0, 16, (512,))] + 0.1 * torch.randn(512, 8)
    learner.kmeans_init(z)
    assert bool(learner.initialised)
    codes = vq.encode(z, 1)
    assert len(torch.unique(codes)) == 16  # k-means found the 16 clusters
    x = z[:6].reshape(2, 3, 8)
    keep = torch.tensor([1, 3])
    st, out = learner.quantize(x, keep)
    assert torch.equal(out["codes"], vq.encode(x, 3))  # the same greedy rule as the codec's encoder
    assert torch.allclose(st[0], vq.decode(out["codes"][0, :, :1]), atol=1e-5)  # example 0 keeps level 1 only
    assert torch.allclose(st[1], vq.decode(out["codes"][1]), atol=1e-5)
    assert torch.allclose(out["quantized"], vq.decode(out["codes"]), atol=1e-5)


def test_ema_moves_codes_to_their_data_and_idle_codes_restart():
    torch.manual_seed(0)
    vq = ResidualVQ(1, 4, 2)
    learner = CodebookLearner(vq, levels=1, decay=0.5, restart_every=2)
    learner.kmeans_init(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]))
    z = torch.tensor([[1.0, 1.0]]).repeat(8, 1)[None]  # only code 0's region is used from now on
    _, out = learner.quantize(z)
    used = int(out["codes"][0, 0, 0])
    restarted = 0
    for _ in range(4):
        _, out = learner.quantize(z)
        restarted += learner.update(out, torch.Generator().manual_seed(0))
    assert (vq.embedding[0, used] - torch.tensor([1.0, 1.0])).norm() < 0.2  # EMA pulled the used code to the data
    assert restarted >= 3  # the three idle codes, after 2 steps (and again: the used code wins ties)
    near = (vq.embedding[0] - torch.tensor([1.0, 1.0])).norm(dim=-1)
    assert (near < 0.5).all()  # ... were restarted on the current residuals


def test_tiny_codec_trains_evaluates_and_resumes_on_the_same_curve(data, tmp_path):
    losses = ("--frame-weight", "1.0", "--phase-weight", "0.5")
    assert main(common(data, tmp_path / "a", 8, "--ckpt-every", "4", *losses)) == 0
    assert main(common(data, tmp_path / "b", 8, "--ckpt-every", "4", "--stop-after", "4", *losses)) == 0
    assert main(common(data, tmp_path / "b", 8, "--ckpt-every", "4", *losses)) == 0  # resumes at step 4
    a, b = rows(tmp_path / "a" / "log.csv"), rows(tmp_path / "b" / "log.csv")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for s in range(1, 9):
        assert float(a[s]["loss"]) == pytest.approx(float(b[s]["loss"]), rel=1e-4, abs=1e-5), s
        assert float(a[s]["frame"]) > 0 and float(a[s]["phase"]) > 0
    ev = rows(tmp_path / "a" / "eval.csv")
    assert sorted(ev) == [4, 8] and float(ev[8]["mel_l1"]) > 0 and "perplexity_l3" in ev[8]
    assert float(ev[8]["frame_gain"]) > 0 and 0 <= float(ev[8]["frame_inconsistency"]) <= 2
    model = load_codec(tmp_path / "a" / "codec.safetensors")
    assert model.config.width == 0.03125
    codes = model.encode(torch.zeros(1, 4 * 1920, 2), 4)
    assert codes.shape == (1, 4, 4)


def test_init_from_a_trained_codec(data, tmp_path):
    assert main(common(data, tmp_path / "a", 4, "--ckpt-every", "4")) == 0
    src = tmp_path / "a" / "codec.safetensors"
    assert main(common(data, tmp_path / "c", 1, "--init", str(src), "--lr", "0", "--ckpt-every", "1")) == 0
    a, c = load_codec(src).state_dict(), load_codec(tmp_path / "c" / "codec.safetensors").state_dict()
    convs = [k for k in a if not k.startswith("quantizer")]
    assert convs and all(torch.equal(a[k], c[k]) for k in convs)  # lr 0: exactly the weights it started from
    log = rows(tmp_path / "c" / "log.csv")
    assert float(log[1]["commit"]) > 0  # quantized from the first step: the codebook came with the weights
    assert main(common(data, tmp_path / "d", 1, "--init", str(src), "--width", "0.0625")) == 1  # other width


@pytest.mark.slow
def test_sigkill_then_resume(data, tmp_path):
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "openmrt.cli", *common(data, out, 16, "--ckpt-every", "2")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (out / "last.pt").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(out / "last.pt", weights_only=False)["step"]
    assert 2 <= saved < 16
    assert main(common(data, out, 16, "--ckpt-every", "2")) == 0
    ref = tmp_path / "ref"
    assert main(common(data, ref, 16, "--ckpt-every", "2")) == 0
    a, b = rows(ref / "log.csv"), rows(out / "log.csv")
    for s in range(saved + 1, 17):
        assert float(a[s]["loss"]) == pytest.approx(float(b[s]["loss"]), rel=1e-4, abs=1e-5), s


@pytest.mark.slow
def test_torchrun_two_processes(data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = torchrun_cli(*common(data, tmp_path / "ddp", 4, "--ckpt-every", "4"))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(rows(tmp_path / "ddp" / "log.csv")) == [1, 2, 3, 4]
    assert (tmp_path / "ddp" / "codec.safetensors").exists()


def test_phase_derivative_loss_sees_incoherent_frames_not_a_constant_rotation():
    """A tone is a tone whatever its starting phase; the same magnitudes with each 10 ms frame's
    phase redrawn (what a magnitude-trained decoder gives) are a wash and must cost."""
    from openmrt.train.codec_losses import phase_derivative_loss

    sr, n = 48000, 48000
    t = np.arange(n) / sr
    rng = np.random.default_rng(0)
    tone = lambda phase: 0.3 * np.sin(2 * np.pi * 440.0 * t + phase)  # noqa: E731
    ref = torch.tensor(np.stack([tone(0.0), tone(0.5)], -1)[None], dtype=torch.float32)
    rotated = torch.tensor(np.stack([tone(1.0), tone(1.5)], -1)[None], dtype=torch.float32)
    # same frequency, phase redrawn every 480 samples (crossfaded with a 480-sample ramp, so the
    # magnitude spectrum stays that of a 440 Hz tone)
    jumps = np.repeat(rng.uniform(0, 2 * np.pi, n // 480 + 1), 480)[:n]
    wash = 0.3 * np.sin(2 * np.pi * 440.0 * t + jumps)
    incoherent = torch.tensor(np.stack([wash, wash], -1)[None], dtype=torch.float32)

    assert float(phase_derivative_loss(ref, ref)) == 0.0
    assert float(phase_derivative_loss(ref, rotated)) < 0.15  # window edges and the tone's negative-frequency image
    assert float(phase_derivative_loss(ref, incoherent)) > 0.5
    # a silent estimate (where the phase is undefined) gives a finite loss and gradient
    est = torch.zeros_like(ref, requires_grad=True)
    phase_derivative_loss(ref, est).backward()
    assert torch.isfinite(est.grad).all()


def test_frame_spectrum_loss_is_zero_for_the_reference_frames_and_sees_cancelling_loud_frames():
    from openmrt.codec.stft import stft
    from openmrt.train.codec_losses import frame_spectrum_loss

    rng = np.random.default_rng(1)
    audio = torch.tensor(rng.standard_normal((1, 9600, 2)) * 0.1, dtype=torch.float32)
    spec = stft(audio, num_frames=20)
    assert float(frame_spectrum_loss(audio, spec)) < 1e-5
    # frames 3× too loud with every other one negated (overlapping frames then partly cancel: the
    # first demo codec's way of fitting magnitudes) cost log 3 + 2 whatever their overlap-add gives
    loud = spec * 3.0
    loud[:, :, 1::2] *= -1.0
    assert float(frame_spectrum_loss(audio, loud)) == pytest.approx(np.log(3.0) + 2.0, rel=0.05)
    # log L1 of a uniform 2× error is log 2, the relative linear L1 is 1
    assert float(frame_spectrum_loss(audio, 2.0 * spec)) == pytest.approx(np.log(2.0) + 1.0, rel=0.05)
