"""Faults injected into a live session: the sound card going away, a MIDI port vanishing, the model step raising,
the disk filling up while recording. Each is reported once, and the rest keeps going. Virtual clock only."""

from __future__ import annotations

import errno
import logging
import time
import types

import mido
import numpy as np
import pytest
import soundfile as sf

from openmrt import tokens as tk
from openmrt.controls import Controls, LiveControls
from openmrt.engine.bundle import random_bundle
from openmrt.engine.frames import FRAME
from openmrt.engine.session import FrameInput, Session
from openmrt.engine.sink import play_virtual
from openmrt.io import audio_out, midi
from openmrt.io.recorder import Recorder

COND = tk.make_conditioning(style=list(range(12)), notes=[0] * 128, drums=1)
BLOCK = 480


@pytest.fixture(scope="module")
def bundle():
    return random_bundle("tiny", "demo", seed=0)


# ------------------------------------------------------------------------------------------- the sound card goes away
class FakeStream:
    """What sounddevice.OutputStream gives the callback; the test plays PortAudio's part."""

    def __init__(self, callback, finished_callback, **kw):
        self.callback, self.finished_callback = callback, finished_callback
        self.stopped = False

    def start(self):
        pass

    def stop(self):
        self.stopped = True
        self.finished_callback()  # PortAudio calls it on a normal stop too

    def close(self):
        pass

    def pull(self, n=1):
        out = np.empty((BLOCK, 2), np.float32)
        for _ in range(n):
            self.callback(out, BLOCK, None, None)
        return out


class CallbackAbort(Exception):
    pass


@pytest.fixture
def fake_sd(monkeypatch):
    made = []

    def stream(**kw):
        made.append(FakeStream(**kw))
        return made[-1]

    sd = types.SimpleNamespace(OutputStream=stream, PortAudioError=OSError, CallbackAbort=CallbackAbort)
    monkeypatch.setattr(audio_out, "_sd", lambda: sd)
    return made


@pytest.mark.parametrize("how", ["stream ended", "callback raised"])
def test_audio_device_lost_pauses_and_keeps_the_recording(bundle, fake_sd, tmp_path, how):
    session = Session(bundle, lambda: FrameInput(COND), buffer_samples=4096)
    rec = Recorder(tmp_path / "take.wav")
    out = audio_out.AudioOutput(session.read, recorder=rec, on_lost=session.pause)
    out.start()
    session.start()
    stream = out.stream
    stream.pull(20)  # 200 ms of audio reach the card and the recording
    if how == "stream ended":
        stream.finished_callback()  # PortAudio ends the stream by itself: the device is gone
    else:
        out.read = lambda n: (_ for _ in ()).throw(OSError("PaErrorCode -9999: device unavailable"))
        with pytest.raises(CallbackAbort):
            stream.pull()
    assert out.lost and ("stopped" in out.lost or "device unavailable" in out.lost)
    assert session.paused == out.lost and not session.running
    assert len(session.faults) == 1 and session.faults[0].startswith("paused: ")
    stream.finished_callback()  # PortAudio's later report of the same end is not a second fault
    assert len(session.faults) == 1
    out.close()  # closing a lost device does not raise
    rec.close()
    audio, sr = sf.read(tmp_path / "take.wav", dtype="float32")
    assert sr == 48000 and len(audio) == 20 * BLOCK and np.abs(audio).max() > 0  # everything played is kept
    session.resume()  # a new card: the same stream state plays on
    assert session.running and session.paused is None
    session.stop()


def test_normal_close_is_not_a_lost_device(bundle, fake_sd):
    session = Session(bundle, lambda: FrameInput(COND))
    lost = []
    out = audio_out.AudioOutput(session.read, on_lost=lost.append)
    out.start()
    out.stream.pull(3)
    out.close()
    assert out.lost is None and lost == []


# ----------------------------------------------------------------------------------------------- a MIDI port vanishes
class FakePort:
    def __init__(self, callback):
        self.callback, self.closed = callback, False

    def close(self):
        self.closed = True


class FakeBackend:
    def __init__(self):
        self.names, self.ports, self.broken = ["Keys:0"], [], False

    def get_input_names(self):
        if self.broken:
            raise SystemError("MIDI system gone")
        return list(self.names)

    def open_input(self, name, callback=None, **kw):
        if name not in self.names:
            raise OSError(f"no port {name}")
        self.ports.append(FakePort(callback))
        return self.ports[-1]


def test_midi_port_vanishing_reconnects_while_the_stream_plays(bundle, monkeypatch):
    be = FakeBackend()
    monkeypatch.setattr(midi, "find_backend", lambda name=None: "fake")
    monkeypatch.setattr(midi, "_backend", lambda name: be)
    live = LiveControls(Controls())
    said = []
    session = Session(bundle, lambda: FrameInput.from_live(live), buffer_samples=4096)
    m = midi.MidiInput(live, port="Keys", watch_s=3600, echo=said.append)  # the test looks instead of the thread
    assert m.name == "Keys:0"
    send = be.ports[-1].callback
    send(mido.Message("note_on", note=60, velocity=100))
    assert m.received == 1
    audio = [play_virtual(session, 0.4, lambda i: 25.0)]

    be.names = []  # unplugged
    m._check()
    assert not m.connected and be.ports[0].closed and len(said) == 1 and "vanished" in said[0]
    be.broken = True  # the MIDI system itself errors while it is gone: still only attempts
    for _ in range(3):
        m._check()
        audio.append(play_virtual(session, 0.4, lambda i: 25.0, prime=0))
    assert m.reconnects == 3 and not m.connected and len(said) == 1
    be.broken, be.names = False, ["Keys:0"]  # plugged in again
    m._check()
    assert m.connected and len(be.ports) == 2 and said[-1].endswith("is back")
    be.ports[-1].callback(mido.Message("note_on", note=64, velocity=90))
    assert m.received == 2 and m.rejected == 0
    audio.append(play_virtual(session, 0.4, lambda i: 25.0, prime=0))
    assert session.stats().dropped_frames == 0  # the stream never waited on MIDI
    assert all(np.abs(a[FRAME * 2:]).max() > 0 for a in audio[1:])
    m.close()


def test_midi_watch_thread_notices_on_its_own(monkeypatch):
    import threading

    be = FakeBackend()
    monkeypatch.setattr(midi, "find_backend", lambda name=None: "fake")
    monkeypatch.setattr(midi, "_backend", lambda name: be)
    gone = threading.Event()
    m = midi.MidiInput(LiveControls(Controls()), port="Keys", watch_s=0.01, echo=lambda line: gone.set())
    be.names = []
    assert gone.wait(10)
    m.close()
    assert not m._watch.is_alive()


# ----------------------------------------------------------------------------------------------- the model step raises
def test_model_step_raising_plays_silence_reports_once_and_recovers(bundle, caplog):
    session = Session(bundle, lambda: FrameInput(COND), buffer_samples=4096)
    real = session.stream.step
    calls = {"n": 0}

    def step(cond):
        calls["n"] += 1
        if 10 <= calls["n"] < 40:  # 30 frames (1.2 s) of a broken model
            raise RuntimeError("CUDA error: an illegal memory access")
        return real(cond)

    session.stream.step = step
    with caplog.at_level(logging.ERROR, logger="openmrt.session"):
        audio = play_virtual(session, 3.0, lambda i: 25.0)
    assert session.silent_frames == 30
    assert len(session.faults) == 2, session.faults
    assert "model step failed" in session.faults[0] and "illegal memory access" in session.faults[0]
    assert "works again after 30 silent frames" in session.faults[1]
    assert sum("model step failed" in r.getMessage() for r in caplog.records) == 1  # not once per frame
    assert session.stats().dropped_frames == 0  # silence was played on time, not dropped
    frames = np.abs(audio[: len(audio) // FRAME * FRAME]).reshape(-1, FRAME, 2).max(axis=(1, 2))
    assert (frames[9:39] == 0).all() and frames[39] > 0  # calls 10..39 are output frames 9..38: silent
    assert (frames[45:] > 0).all()  # and it plays again
    assert session.stats().extra["silent_frames"] == 30


# ------------------------------------------------------------------------------------------- the disk fills up
def test_disk_full_stops_recording_keeps_what_was_written(tmp_path):
    told = []
    rec = Recorder(tmp_path / "take.wav", on_error=told.append)
    write, n = rec._file.write, {"k": 0}

    def full(block):
        n["k"] += 1
        if n["k"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(block)

    rec._file.write = full
    rng = np.random.default_rng(0)
    blocks = [rng.uniform(-0.5, 0.5, (BLOCK, 2)).astype(np.float32) for _ in range(10)]
    for b in blocks:
        rec.push(b)  # the audio callback's side never raises
    rec.close()
    assert rec.error is not None and "disk is full" in rec.error and str(rec.path) in rec.error
    assert told == [rec.error]  # said once
    assert rec.frames_written == 3 * BLOCK
    rec.push(blocks[0])  # after the failure, pushes are dropped quietly
    audio, sr = sf.read(tmp_path / "take.wav", dtype="float32")
    assert sr == 48000 and np.array_equal(audio, np.concatenate(blocks[:3]))


def test_disk_full_while_playing_keeps_the_stream(bundle, fake_sd, tmp_path):
    session = Session(bundle, lambda: FrameInput(COND), buffer_samples=4096)
    rec = Recorder(tmp_path / "take.wav")
    out = audio_out.AudioOutput(session.read, recorder=rec, on_lost=session.pause)

    def full(block):
        raise OSError(errno.ENOSPC, "No space left on device")

    rec._file.write = full
    session.start()
    played = [out.stream.pull(1).copy() for _ in range(30)]
    session.stop()
    rec.close()
    assert out.lost is None and session.paused is None and out.callbacks == 30
    assert rec.error and "disk is full" in rec.error
    assert np.abs(np.concatenate(played)).max() > 0
    assert sf.info(str(tmp_path / "take.wav")).frames == 0  # an empty but valid file


def test_a_failing_reset_on_the_frame_thread_does_not_end_the_stream(bundle):
    """Requests run on the frame loop's thread: one that raises is reported and the loop plays on."""
    session = Session(bundle, lambda: FrameInput(COND), buffer_samples=4096)
    session._requests.append(lambda: (_ for _ in ()).throw(RuntimeError("bad reset target")))
    session.start()
    got = 0
    for _ in range(2000):  # drain like a card would, without the wall clock deciding the outcome
        got += np.abs(session.read(BLOCK)).max() > 0
        if len(session.faults) and got > 10:
            break
        time.sleep(0.005)
    alive = session.running
    session.stop()
    assert alive and len(session.faults) == 1 and "bad reset target" in session.faults[0]
