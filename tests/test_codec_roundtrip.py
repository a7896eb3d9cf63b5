"""A rendered musical clip through a randomly initialised narrow codec: shapes, lengths, levels.

The clip is a MIDI phrase written with pretty_midi and rendered by the FluidSynth CLI with the
General MIDI SoundFont (scripts/install.sh installs both; without them the test skips locally
and fails in CI).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from needs import need

from openmrt.audio import read_audio, write_audio
from openmrt.codec import FRAME_SAMPLES, SpectroStream, official_output
from openmrt.config import codec_config

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def _need(ok: bool, what: str) -> None:
    need(ok, what)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> np.ndarray:
    """About 3 s of piano and bass at 44.1 kHz, read back as 48 kHz stereo [T, 2]."""
    pretty_midi = pytest.importorskip("pretty_midi")
    _need(shutil.which("fluidsynth") is not None, "the fluidsynth CLI")
    _need(SOUNDFONT.is_file(), str(SOUNDFONT))
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano, bass = pretty_midi.Instrument(program=0), pretty_midi.Instrument(program=33)
    for i, root in enumerate([60, 65, 67, 60]):  # C F G C, half a second per chord
        for p in (root, root + 4, root + 7):
            piano.notes.append(pretty_midi.Note(velocity=90, pitch=p, start=0.6 * i, end=0.6 * i + 0.55))
        bass.notes.append(pretty_midi.Note(velocity=100, pitch=root - 24, start=0.6 * i, end=0.6 * i + 0.5))
    pm.instruments += [piano, bass]
    d = tmp_path_factory.mktemp("clip")
    pm.write(str(d / "clip.mid"))
    cmd = ["fluidsynth", "-ni", "-q", "-g", "0.8", "-r", "44100", "-F", str(d / "clip.wav"), str(SOUNDFONT)]
    subprocess.run([*cmd, str(d / "clip.mid")], check=True, capture_output=True, timeout=120)
    return read_audio(d / "clip.wav")


@torch.no_grad()
def test_rendered_clip_round_trips_through_narrow_codec(clip, tmp_path):
    assert clip.ndim == 2 and clip.shape[1] == 2 and clip.shape[0] > 2 * 48000
    assert np.abs(clip).max() > 0.05  # it is music, not silence
    torch.manual_seed(0)
    codec = SpectroStream(codec_config("narrow")).eval()
    audio = torch.from_numpy(clip)[None]
    frames = -(-clip.shape[0] // FRAME_SAMPLES)

    codes = codec.encode(audio, num_levels=12)
    assert codes.shape == (1, frames, 12) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < 1024
    assert len(torch.unique(codes[0, :, 0])) > 1  # the codes follow the music

    out = codec.decode(codes)
    assert out.shape == (1, (frames - 1) * FRAME_SAMPLES, 2) and torch.isfinite(out).all()
    assert out.abs().max() > 0
    api = official_output(out)
    assert api.shape == out.shape and api.abs().max() <= 1.0

    # The same codes streamed: one frame late, then the same audio.
    state = codec.init_decode_state(1)
    streamed = torch.cat([codec.decode_step(codes[:, t], state) for t in range(frames)], 1)
    assert streamed.shape == (1, frames * FRAME_SAMPLES, 2)
    assert torch.allclose(streamed[:, FRAME_SAMPLES:], out, atol=1e-5 * max(1.0, out.abs().max().item()))

    path = write_audio(tmp_path / "decoded.flac", api[0].numpy())
    assert read_audio(path).shape == api[0].shape
