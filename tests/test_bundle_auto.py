"""``--model auto`` picks by the compute device and says why; ``load_bundle`` moves the bundle (LM dtype, codec f32);
random weights are announced as noise and play at a safe level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from openmrt import hub
from openmrt import tokens as tk
from openmrt.engine import bundle as bundle_mod
from openmrt.engine.bundle import choose_auto, load_bundle, random_bundle

CUDA = torch.device("cuda")  # a device object is taken as given: no GPU is needed to test the choice


@pytest.fixture
def official(tmp_path: Path) -> Path:
    """A root where both official checkpoints are 'installed' (auto only looks for the files)."""
    for name in ("mrt2_small", "mrt2_base"):
        f = tmp_path / "checkpoints" / f"{name}.safetensors"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
    return tmp_path


@pytest.fixture
def demo_lm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package whose demo bundle is complete (the LM is not shipped yet)."""
    d = tmp_path / "demo"
    d.mkdir()
    for f in ("lm.safetensors", "codec.safetensors"):
        (d / f).write_bytes(b"x")
    monkeypatch.setattr(hub, "DEMO_DIR", d)
    return d


@pytest.mark.parametrize(("gpu_gb", "want", "why"), [(24, "mrt2_base", "24 GB"), (12, "mrt2_small", "too small")])
def test_cuda_picks_an_official_bundle_by_gpu_memory(official, gpu_gb, want, why):
    name, reason = choose_auto(CUDA, search=[official], gpu_bytes=gpu_gb * 10**9)
    assert name == want and why in reason


def test_cuda_without_official_bundles_falls_back(tmp_path):
    name, reason = choose_auto(CUDA, search=[tmp_path], gpu_bytes=80 * 10**9)
    assert name == ("demo" if hub.is_installed(hub.registry()["demo"]) else "random:tiny")
    assert "no official bundle is installed for the GPU" in reason


def test_cpu_picks_mrt2_small_only_when_it_keeps_real_time(official, monkeypatch):
    """The old rule picked mrt2_base when a GPU was present and then ran it on the CPU. Now a CPU gets
    mrt2_small only when the warm-up timing says it keeps real time, and never mrt2_base."""
    monkeypatch.setattr(bundle_mod, "cpu_keeps_up", lambda name: (False, "90 ms per 40 ms frame"))
    name, reason = choose_auto("cpu", search=[official])
    assert name not in ("mrt2_small", "mrt2_base") and "CPU" in reason and "too slow" in reason and "90 ms" in reason
    monkeypatch.setattr(bundle_mod, "cpu_keeps_up", lambda name: (name != "demo", "30 ms per 40 ms frame"))
    name, reason = choose_auto("cpu", search=[official])
    assert name == "mrt2_small" and "keeps real time" in reason and "30 ms" in reason


def test_cpu_realtime_check_is_timed_once_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def measure(name):
        calls.append(name)
        return 35.0

    assert bundle_mod.cpu_keeps_up("mrt2_small", measure)[0]  # 35 ms: within the 10 % margin
    assert bundle_mod.cpu_keeps_up("mrt2_small", measure)[0] and calls == ["mrt2_small"]  # cached
    assert not bundle_mod.cpu_keeps_up("mrt2_base", lambda name: 37.0)[0]  # 37 ms: too close to 40
    assert bundle_mod.cpu_keeps_up("demo", measure)[0] and calls == ["mrt2_small"]


def test_cpu_picks_the_demo_when_complete_and_asks_the_hook(official, demo_lm, monkeypatch):
    monkeypatch.setattr(bundle_mod, "cpu_keeps_up", lambda name: (name == "demo", "x"))
    assert choose_auto("cpu", search=[official])[0] == "demo"
    monkeypatch.setattr(bundle_mod, "cpu_keeps_up", lambda name: (False, "x"))  # e.g. a failed warm-up check
    name, reason = choose_auto("cpu", search=[official])
    assert name == "random:tiny" and "random weights" in reason


def test_load_bundle_moves_and_says_what_it_picked(capsys):
    b = load_bundle("random:tiny", device="cpu", dtype="bfloat16")
    assert next(b.lm.parameters()).dtype == torch.bfloat16
    assert next(b.codec.parameters()).dtype == torch.float32  # the codec stays float32
    err = capsys.readouterr().err
    assert "random:tiny+demo on cpu (bfloat16 eager LM, f32 codec" in err and "noise" in err
    load_bundle("auto", device="cpu")
    assert "running on the CPU" in capsys.readouterr().err


def test_random_weights_play_at_a_safe_level():
    """About -26 dBFS RMS and nothing at full scale, from the first frame on. Before, every 10 ms hop had a
    sample pinned at 1.0 and a fresh stream started with a burst near full scale."""
    from openmrt.engine.frames import FrameStream
    from openmrt.engine.offline import render

    for seed, cond in ((3, tk.make_conditioning(style=list(range(12)), notes=[0] * 128, drums=1)),
                       (0, tk.make_conditioning())):
        audio, _ = render(FrameStream(random_bundle("tiny", "demo", seed=0), seed=seed), 3 * 48000, lambda t, c=cond: c)
        rms_db = 20 * np.log10(np.sqrt(np.mean(audio**2)))
        assert -29 < rms_db < -23
        assert np.abs(audio).max() < 0.99


def test_models_list_shows_what_plays(capsys):
    """random:tiny is listed (as noise); the demo bundle is listed as what the package ships of it."""
    from openmrt.cli import main
    from openmrt.errors import CheckpointError

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert any(ln.startswith("random:tiny plays") and "NOISE" in ln for ln in out.splitlines())
    demo = next(ln for ln in out.splitlines() if ln.startswith("demo "))
    if not hub.is_installed(hub.registry()["demo"]):
        assert "partly shipped" in demo and "codec + style model only" in demo
        with pytest.raises(CheckpointError, match="openmrt models download mrt2_small"):
            load_bundle("demo")


def test_speed_follows_dtype_model_width_and_cores(monkeypatch):
    """--dtype auto on a CPU: int8 LM + reduced-precision codec only for full-size models, float32 otherwise
    (compiled where a compiler is found); float32 is exact everywhere; the pipeline needs two cores (busy or
    not) and an uncompiled LM."""
    import dataclasses

    import openmrt.codec.fast as fast
    from openmrt.engine import bundle as bmod
    from openmrt.engine.bundle import Speed, choose_speed

    b = random_bundle("tiny", "demo")
    monkeypatch.setattr(fast, "bf16_supported", lambda: False)
    monkeypatch.setattr(bmod, "cpu_cores", lambda: 2)
    assert choose_speed(b, "auto") == Speed("eager", "f32", True)
    assert choose_speed(b, None) == Speed("eager", "f32", True)
    assert choose_speed(b, "float32") == Speed("eager", "f32", True)
    assert choose_speed(b, "int8") == Speed("int8", "int8", True)
    # Where the LM step compiles, auto compiles it and runs the codec after it (side by side both slowed).
    import openmrt.lm.generate as gmod

    monkeypatch.setattr(gmod, "compile_available", lambda: (True, ""))
    assert choose_speed(b, "auto") == Speed("compiled", "f32", False)
    assert choose_speed(b, "float32") == Speed("eager", "f32", True)
    assert choose_speed(b, "auto").uncompiled() == Speed("eager", "f32", False)  # offline renders, restarts
    monkeypatch.setattr(gmod, "compile_available", lambda: (False, "no C++ compiler"))
    monkeypatch.setattr(bmod, "cpu_cores", lambda: 1)
    assert not choose_speed(b, "auto").pipeline
    cfg = b.lm.cfg
    b.lm.cfg = dataclasses.replace(cfg, temporal=dataclasses.replace(cfg.temporal, dim=1024))  # mrt2_small's width
    b.codec.config = dataclasses.replace(b.codec.config, width=1.0)
    assert choose_speed(b, "auto") == Speed("int8", "int8", False)
    monkeypatch.setattr(fast, "bf16_supported", lambda: True)
    assert choose_speed(b, "auto") == Speed("int8", "bf16", False)
    assert choose_speed(b, "float32") == Speed("eager", "f32", False)
    b.lm.cfg = cfg
