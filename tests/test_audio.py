"""Audio I/O helpers: formats, channel handling, resampling to 48 kHz."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from openmrt.audio import read_audio, resample, to_stereo, write_audio
from openmrt.errors import DataError


def _tone(sr: int, seconds: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_write_then_read_round_trips(tmp_path, ext):
    stereo = np.stack([_tone(48000), -_tone(48000, hz=660)], 1)
    path = write_audio(tmp_path / f"x{ext}", stereo)
    back = read_audio(path)
    assert back.shape == stereo.shape and back.dtype == np.float32
    assert np.abs(back - stereo).max() < 1e-4  # PCM_16 quantisation only


def test_mono_is_duplicated_and_resampled(tmp_path):
    mono = _tone(44100, seconds=1.0)
    sf.write(str(tmp_path / "m.wav"), mono, 44100, subtype="FLOAT")
    out = read_audio(tmp_path / "m.wav")
    assert out.shape == (48000, 2)
    assert np.array_equal(out[:, 0], out[:, 1])
    # Still a 440 Hz tone of amplitude 0.5 after resampling (away from the edges).
    ref = _tone(48000, seconds=1.0)
    assert np.abs(out[1000:-1000, 0] - ref[1000:-1000]).max() < 1e-3


def test_channels_and_errors(tmp_path):
    assert to_stereo(np.zeros((10, 4))).shape == (10, 2)
    assert resample(np.zeros((480, 2)), 48000).shape == (480, 2)
    assert resample(np.zeros((16000, 2)), 16000).shape == (48000, 2)
    with pytest.raises(DataError, match="not found"):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(DataError, match="cannot read"):
        read_audio(tmp_path / "junk.wav")
    with pytest.raises(DataError, match="'.mp4'"):
        write_audio(tmp_path / "x.mp4", np.zeros((10, 2)))
    with pytest.raises(DataError, match="NaN"):
        write_audio(tmp_path / "x.wav", np.full((10, 2), np.nan))
