"""Acceptance (issue 17): ``openmrt play --midi`` opens a MIDI input with JACK running and no ALSA sequencer.

A JACK server on the dummy driver (real time, no sound card) is started under a name of its own; ``openmrt play``
runs against it in a fresh process; a note is sent through a JACK virtual port to the input it made. Skipped only
where jackd is not installed and OPENMRT_CI is unset (CI installs jackd2 and sets it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openmrt.errors import ConfigError
from openmrt.io.midi import BACKENDS, find_backend


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child before exec: SIGINT handled by default and not blocked, as under a shell in a terminal. A child
    inherits its parent's signal dispositions, and libraries loaded into the test process by earlier tests may
    leave SIGINT ignored there; a Python started with SIGINT ignored keeps ignoring it, so Ctrl-C (the test's
    SIGINT) would never reach ``openmrt play``."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def test_play_midi_finds_jack_and_receives_a_note(jack_server, tmp_path):
    import mido

    args = [sys.executable, "-m", "openmrt", "play", "--midi", "--model", "random:tiny", "--seconds", "0",
            "--buffer", "8192", "--osc-port", "0"]
    if Path("/dev/snd/seq").exists():  # this machine has an ALSA sequencer, which auto would rightly prefer
        args += ["--midi-backend", "jack"]
    log = tmp_path / "play.log"
    with open(log, "w") as out:
        play = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                preexec_fn=_ctrl_c_as_in_a_terminal)
    try:
        be = mido.Backend(BACKENDS["jack"], load=True)
        port, deadline = None, time.monotonic() + 90  # imports and model set-up take a while on a busy machine
        while port is None and time.monotonic() < deadline and play.poll() is None:
            port = next((n for n in be.get_output_names() if "openmrt" in n), None)
            time.sleep(0.2)
        assert port == "openmrt MIDI:openmrt", (port, log.read_text())  # client "openmrt MIDI", port "openmrt"
        audio_ports = subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout.split()
        assert any(p.startswith("openmrt:") for p in audio_ports), audio_ports  # the audio client is "openmrt"
        with be.open_output(port) as sender:  # kept open until play has read: JACK delivers on its next cycles
            time.sleep(1.0)  # a new connection joins JACK's graph a cycle or more later: events before it are lost
            sender.send(mido.Message("note_on", note=60, velocity=100))
            sender.send(mido.Message("note_off", note=60))
            time.sleep(2.0)
            play.send_signal(signal.SIGINT)  # Ctrl-C: it closes the ports and reports what arrived
            play.wait(timeout=60)
    finally:
        if play.poll() is None:
            play.kill()
            play.wait()
    text = log.read_text()
    assert play.returncode == 0, text
    assert f"MIDI input 'openmrt' ({BACKENDS['jack']})" in text
    assert "MIDI received 2 messages (0 rejected)" in text, text


def test_no_midi_system_says_what_to_start(monkeypatch, tmp_path):
    """No ALSA sequencer and no JACK server: a clear error naming both fixes."""
    pytest.importorskip("rtmidi")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"openmrt-none-{os.getpid()}")  # a server nobody runs
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    with pytest.raises(ConfigError, match="modprobe snd-seq") as e:
        find_backend(alsa_seq=str(tmp_path / "no-seq"))
    assert "jackd" in str(e.value) and "--midi-backend" in str(e.value)


def test_backend_names():
    assert find_backend("jack") == "mido.backends.rtmidi/UNIX_JACK"
    assert find_backend("alsa") == "mido.backends.rtmidi/LINUX_ALSA"
    assert find_backend("mido.backends.portmidi") == "mido.backends.portmidi"  # any mido backend by name
