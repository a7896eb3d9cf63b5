"""Fuzzed audio files for prompts and prefill: random bytes and mutated WAV/FLAC files through read_audio. Every
file is either read as finite 48 kHz stereo float32 or refused with a DataError naming the file."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openmrt.audio import read_audio
from openmrt.errors import DataError

FUZZ = settings(max_examples=600, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


def _file(sr: int, channels: int, subtype: str, fmt: str = "WAV") -> bytes:
    t = np.arange(sr // 20) / sr
    a = np.stack([0.5 * np.sin(2 * np.pi * 440 * (c + 1) * t) for c in range(channels)], 1)
    buf = io.BytesIO()
    sf.write(buf, a, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


VALID = [_file(48000, 2, "PCM_16"), _file(22050, 1, "FLOAT"), _file(44100, 3, "PCM_24"),
         _file(48000, 2, "PCM_16", "FLAC")]


def _read(tmp_path, data: bytes, name: str = "fuzz.wav") -> None:
    p = tmp_path / name
    p.write_bytes(data)
    try:
        a = read_audio(p)
    except DataError as e:
        assert name in str(e)
        return
    assert a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == 2 and np.isfinite(a).all()


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_as_audio(tmp_path_factory, data):
    _read(tmp_path_factory.mktemp("a"), b"RIFF" + data if data[:1] == b"\x00" else data)


@settings(FUZZ, max_examples=1200)
@given(st.sampled_from(range(len(VALID))), st.data())
def test_mutated_audio_files(tmp_path_factory, which, data):
    raw = bytearray(VALID[which])
    head = data.draw(st.booleans())  # mostly the header, where the sample rate, channels and sizes live
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, 63 if head else len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    _read(tmp_path_factory.mktemp("a"), bytes(raw), "fuzz.flac" if which == 3 else "fuzz.wav")


@pytest.mark.parametrize("rate", [0, 1, 7, 3999, 2**31 - 1])
def test_absurd_sample_rates_are_refused(tmp_path, rate):
    """Found by the fuzzer: a header saying 1 Hz made 0.05 s of samples into 40 minutes at 48 kHz (900 MB)."""
    raw = bytearray(VALID[0])
    raw[24:28] = struct.pack("<I", rate)  # the WAV fmt chunk's sample rate
    p = tmp_path / "rate.wav"
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="rate.wav"):
        read_audio(p)
