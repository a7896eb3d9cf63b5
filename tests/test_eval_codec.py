"""Codec metrics on hand-made cases, held-out clips from shards, ``openmrt eval roundtrip`` and
``openmrt eval codec``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_train_codec import make_audio_shards

from openmrt.audio import write_audio
from openmrt.cli import main
from openmrt.codec import SpectroStream
from openmrt.codec.checkpoint import save_codec
from openmrt.config import CodecConfig
from openmrt.eval.codec import heldout_clips, mel_l1, onset_f1, perplexity, si_sdr, stft_distance


def _tone(seconds: float = 1.0, hz: float = 440.0) -> torch.Tensor:
    t = torch.arange(int(48000 * seconds)) / 48000
    x = 0.3 * torch.sin(2 * torch.pi * hz * t)
    return torch.stack([x, 0.5 * x], -1)[None]  # [1, N, 2]


def test_spectral_distances_are_zero_for_identical_audio_and_grow_with_damage():
    x = _tone()
    assert float(mel_l1(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(stft_distance(x, x)) == pytest.approx(0.0, abs=1e-6)
    other = _tone(hz=660.0)
    assert float(mel_l1(x, other)) > 0.5 and float(stft_distance(x, other)) > 0.5


def test_si_sdr_is_scale_invariant_and_tracks_noise():
    torch.manual_seed(0)
    x = _tone()
    assert (si_sdr(x, 0.25 * x) > 80).all()  # a gain is not an error
    noise = torch.randn_like(x)
    noise = noise / noise.pow(2).mean(1, keepdim=True).sqrt() * x.pow(2).mean(1, keepdim=True).sqrt() * 0.1
    assert si_sdr(x, x + noise).numpy() == pytest.approx([20.0, 20.0], abs=0.3)  # noise 20 dB down


def test_perplexity_counts_the_effective_codes_per_level():
    codes = np.stack([np.arange(400) % 4, np.zeros(400, int)], -1)
    assert perplexity(codes, 1024) == pytest.approx([4.0, 1.0])


def test_onset_f1_uses_50_ms_tolerance_matching_pitch_and_ignores_offsets():
    ref = [(0.10, 0.50, 60), (1.00, 1.50, 64), (2.00, 2.10, 67)]
    est = [(0.14, 3.00, 60), (1.06, 1.10, 64), (2.00, 2.10, 68)]  # hit (40 ms), miss (60 ms), wrong pitch
    p, r, f = onset_f1(ref, est)
    assert (p, r) == pytest.approx((1 / 3, 1 / 3)) and f == pytest.approx(1 / 3)
    assert onset_f1(ref, ref)[2] == 1.0 and onset_f1(ref, [])[2] == 0.0


def test_heldout_clips_are_fixed_consecutive_windows_with_their_notes(tmp_path):
    root = make_audio_shards(tmp_path / "s", examples=2, frames=40)
    clips = heldout_clips(root, count=3, seconds=0.8)  # 20 frames: two clips per example
    assert [c.name for c in clips] == ["shard_00000.npz#0@0", "shard_00000.npz#0@20", "shard_00000.npz#1@0"]
    assert clips[0].audio.shape == (20 * 1920, 2) and clips[0].audio.dtype == np.float32
    # a note every 10 frames; without source MIDI the onsets come from the labels, mid-frame
    assert [round(s, 3) for s, _, _ in clips[1].notes] == [0.02, 0.42]
    assert [c.name for c in heldout_clips(root, count=3, seconds=0.8)] == [c.name for c in clips]


def test_roundtrip_cli_prints_metrics_and_writes_audio_and_png(tmp_path, capsys):
    torch.manual_seed(0)
    codec = SpectroStream(CodecConfig(name="t", width=0.03125, num_quantizers=12))
    ckpt = save_codec(codec, tmp_path / "c.safetensors")
    write_audio(tmp_path / "in.wav", _tone(0.5)[0].numpy())
    assert main(["eval", "roundtrip", str(tmp_path / "in.wav"), "--codec", str(ckpt), "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out.splitlines()[0])
    assert metrics["frames"] == 13 and metrics["levels"] == 12 and len(metrics["perplexity"]) == 12
    assert {"mel_l1", "stft_distance", "si_sdr_db"} <= set(metrics)
    assert (tmp_path / "in.roundtrip.wav").stat().st_size > 0
    assert (tmp_path / "in.roundtrip.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_codec_cli_scores_heldout_shards_and_writes_json(tmp_path, capsys):
    """``openmrt eval codec`` beside ``eval lm``: held-out figures of a codec file, printed and written with -o."""
    torch.manual_seed(0)
    codec = SpectroStream(CodecConfig(name="t", width=0.03125, num_quantizers=12))
    ckpt = save_codec(codec, tmp_path / "c.safetensors")
    root = make_audio_shards(tmp_path / "s", examples=2, frames=40)
    out = tmp_path / "codec_eval.json"
    assert main(["eval", "codec", "--codec", str(ckpt), "--data", str(root), "--clips", "2", "--seconds", "0.8",
                 "--levels", "4", "--no-onsets", "--device", "cpu", "-o", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["clips"] == 2 and res["levels"] == 4 and len(res["perplexity"]) == 4
    assert res["seconds"] == pytest.approx(1.6) and np.isfinite(res["mel_l1"]) and "onset_f1_decoded" not in res
    assert json.loads(capsys.readouterr().out) == res
    assert main(["eval", "codec", "--codec", str(tmp_path / "missing.safetensors"), "--data", str(root)]) == 1


def _tiny_v2(path) -> None:
    """An untrained tiny demo codec v2 file (seeded)."""
    from openmrt.codec.v2 import CodecV2, CodecV2Config, save_codec_v2

    torch.manual_seed(0)
    save_codec_v2(CodecV2(CodecV2Config(latent_dim=16, width=32, frame_width=16, groups=2)), path)


def test_eval_codec_scores_a_demo_codec_v2_with_its_own_judge(tmp_path, capsys):
    """The default codec is a v2 (no SpectroStream spectrogram): ``openmrt eval codec`` scores it with the v2
    judge (grid log-magnitude L1, pitch-gate F1, perplexity, the demo style model's top-1 agreement), and
    ``--oracle`` puts the clips' own magnitudes through its phase head (log-magnitude L1 exactly 0)."""
    _tiny_v2(tmp_path / "v2.safetensors")
    root = make_audio_shards(tmp_path / "s", examples=2, frames=60)
    args = ["eval", "codec", "--codec", str(tmp_path / "v2.safetensors"), "--data", str(root), "--clips", "2",
            "--seconds", "1.2", "--no-onsets", "--device", "cpu"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["clips"] == 2 and res["seconds"] == pytest.approx(2.4) and len(res["perplexity"]) == 12
    assert res["logmag_l1"] > 1.0 and 0 <= res["pitch_f1"] <= 1 and np.isfinite(res["mel_l1"])
    assert 0 <= res["style_top1_agreement"] <= 1 and "onset_f1_ratio" not in res
    assert main(args + ["--oracle", "--no-style"]) == 0
    oracle = json.loads(capsys.readouterr().out)
    assert oracle["logmag_l1"] == 0.0 and oracle["mel_l1"] < res["mel_l1"] and "style_top1_agreement" not in oracle


def test_without_data_the_evals_compose_the_standard_heldout_set_once(tmp_path, monkeypatch, capsys):
    """No ``--data``: the standard held-out set is composed into the cache on first use (here a shorter one),
    named on stderr, and reused the next time without composing again."""
    from openmrt.data import heldout

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(heldout, "STANDARD_HOURS", 0.01)
    _tiny_v2(tmp_path / "v2.st")
    args = ["eval", "codec", "--codec", str(tmp_path / "v2.st"), "--clips", "1", "--seconds", "2", "--no-onsets",
            "--no-style", "--device", "cpu"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    root = tmp_path / "cache" / "openmrt" / "heldout" / f"compose-0.01h-seed{heldout.STANDARD_SEED}"
    assert json.loads(out)["data"] == str(root) and "composing the standard held-out set" in err
    first = sorted(p.stat().st_mtime_ns for p in root.glob("shard_*.npz"))
    assert first and json.loads(out)["clips"] == 1
    assert main(args) == 0
    assert "composing" not in capsys.readouterr().err
    assert sorted(p.stat().st_mtime_ns for p in root.glob("shard_*.npz")) == first


def test_frame_diagnostics_tell_true_frames_from_loud_cancelling_ones():
    from openmrt.codec.stft import stft
    from openmrt.eval.codec import frame_diagnostics

    audio = torch.tensor(np.random.default_rng(3).standard_normal((1, 19200, 2)) * 0.1, dtype=torch.float32)
    spec = stft(audio, num_frames=40)
    gain, bad = frame_diagnostics(spec, audio)
    assert gain == pytest.approx(1.0, abs=1e-4) and bad < 0.02  # the last frames lack their overlap partner
    loud = 3.0 * spec
    loud[:, :, 1::2] *= -1.0  # consecutive frames in opposite phase: what overlaps cancels
    gain, bad = frame_diagnostics(loud, audio)
    assert gain == pytest.approx(3.0, abs=1e-3) and bad > 0.3  # 0.46: half of what the frames hold is lost


def test_random_phase_floor_keeps_the_magnitudes_and_loses_the_waveform():
    from openmrt.eval.codec import Clip, random_phase_floor

    t = np.arange(48000) / 48000
    tone = (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    clip = Clip(audio=np.stack([tone, tone], -1), drum_audio=None, notes=[(0.1, 0.9, 64)],
                states=np.zeros((25, 128), np.int8), drums=np.zeros(25, np.int8), style="", name="tone", has_midi=True)
    out = random_phase_floor([clip], onsets=False)
    assert 0.3 < out["mel_l1"] < 3.0
