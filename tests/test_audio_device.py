"""A session played through a real PortAudio device: JACK's dummy driver keeps real time on a
machine with no sound card. Skipped where jackd is not installed (CI installs it)."""

from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from openmrt import tokens as tk
from openmrt.engine.bundle import random_bundle
from openmrt.engine.session import FrameInput, Session
from openmrt.errors import DataError
from openmrt.io.audio_out import AudioOutput, list_devices
from openmrt.io.recorder import Recorder


@pytest.fixture(scope="module")
def jack():
    """A JACK server on the dummy driver (started here unless one is running)."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd not installed (apt-get install jackd2)")
    running = subprocess.run(["jack_lsp"], capture_output=True).returncode == 0 if shutil.which("jack_lsp") else False
    proc = None
    if not running:
        proc = subprocess.Popen(["jackd", "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "480"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
    import sounddevice as sd

    sd._terminate()  # PortAudio lists devices at initialisation: rescan now that JACK is up
    sd._initialize()
    yield
    sd._terminate()  # before JACK goes away, or PortAudio's JACK host API aborts at exit
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)


def test_play_through_jack_and_record(jack, tmp_path):
    assert "JACK" in list_devices()
    cond = tk.make_conditioning(style=list(range(12)), notes=[0] * 128)
    session = Session(random_bundle(), lambda: FrameInput(cond), buffer_samples=4096)
    session.start()
    path = tmp_path / "take.wav"
    with Recorder(path) as rec:
        out = AudioOutput(session.read, device="system", recorder=rec)
        out.start()
        time.sleep(3.0)
        out.close()
    session.stop()
    assert out.callbacks >= 250  # 3 s of 480-sample blocks, paced by the (dummy) sound card
    audio, sr = sf.read(path, dtype="float32")
    assert sr == 48000 and audio.shape[1] == 2 and len(audio) == out.callbacks * 480
    assert np.abs(audio).max() > 0


def test_recorder_never_overwrites(tmp_path):
    path = tmp_path / "take.flac"
    path.write_bytes(b"precious")
    with pytest.raises(DataError, match="not overwriting"):
        Recorder(path)
    assert path.read_bytes() == b"precious"
    with pytest.raises(DataError, match=".mp3"):
        Recorder(tmp_path / "x.mp3")


def test_recording_is_readable_while_open(tmp_path):
    path = tmp_path / "live.wav"
    rec = Recorder(path)
    rec.push(np.full((4800, 2), 0.25, np.float32))
    for _ in range(100):
        if rec.frames_written == 4800:
            break
        time.sleep(0.01)
    data, _ = sf.read(path, dtype="float32")  # flushed as it goes: readable before close
    rec.close()
    assert len(data) == 4800 and np.allclose(data, 0.25)
