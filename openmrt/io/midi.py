"""MIDI input: live ports (mido + python-rtmidi) and MIDI files as a per-frame control timeline.

Live: `MidiInput` opens a named port or creates a virtual input "openmrt" and feeds a `ControlTarget` (usually
`LiveControls`) from rtmidi's callback thread. On Linux without an ALSA sequencer (/dev/snd/seq), virtual ports need
a running JACK server; `find_backend` picks the ALSA sequencer when it works, else JACK (shared/notes/environment.md).

A named port that vanishes (the controller unplugged, its client gone) is noticed by a watch thread, which
releases the port's notes (no stuck notes), says so once, and reopens the port when it shows up again; the stream
plays on meanwhile.

Files: `MidiTimeline.from_file` schedules note and controller events on 40 ms frame indices, so offline generation
can feed a `NoteTracker` frame by frame exactly as the live loop would see them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from openmrt.controls import NoteTracker
from openmrt.errors import ConfigError, ControlError, DataError
from openmrt.io import ControlTarget

log = logging.getLogger(__name__)

FRAME_RATE = 25.0  # frames per second (40 ms)
VIRTUAL_PORT = "openmrt"
MIDI_CLIENT = "openmrt MIDI"  # the ALSA/JACK client that holds the virtual port
DRUM_CHANNEL = 9  # General MIDI channel 10: percussion, not pitches


def handle_message(target: ControlTarget, msg: Any) -> bool:
    """Feed one mido message to `target`; False for message types the model has no use for (clock, pitch bend...)."""
    if msg.type == "note_on":
        target.note_on(msg.note, msg.velocity)  # velocity 0 = note-off, handled by the tracker
    elif msg.type == "note_off":
        target.note_off(msg.note)
    elif msg.type == "control_change":
        target.control_change(msg.control, msg.value)  # CC64 sustain, CC120/123 all off, CC121 pedal up
    else:
        return False
    return True


def decode(raw: Any) -> Any:
    """One message's bytes -> a mido message; ControlError (naming the bytes) for anything mido cannot read."""
    import mido

    try:
        return mido.Message.from_bytes(list(raw))
    except Exception as e:  # mido raises ValueError, IndexError or TypeError for malformed bytes
        shown = " ".join(f"{b:02x}" for b in list(raw)[:16]) if isinstance(raw, bytes | bytearray | list) else raw
        raise ControlError(f"not a MIDI message: [{shown}] ({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------------------------------------------------
# Live ports


BACKENDS = {"alsa": "mido.backends.rtmidi/LINUX_ALSA", "jack": "mido.backends.rtmidi/UNIX_JACK"}
ALSA_SEQ = "/dev/snd/seq"


def _backend(name: str | None) -> Any:
    try:
        import mido  # imported here so the rest of openmrt works without MIDI support installed
        import rtmidi  # noqa: F401  # mido's port backend
    except ImportError as e:
        raise ConfigError(f"live MIDI input needs mido and python-rtmidi ({e}); pip install python-rtmidi") from e
    return mido.Backend(BACKENDS.get(name or "", name or "mido.backends.rtmidi"), load=True)


def _works(backend: str) -> bool:
    be = _backend(backend)
    with _quiet_stderr():  # a failed probe makes libasound/libjack print lines the user need not see
        try:
            be.get_input_names()  # rtmidi raises SystemError when it cannot reach its MIDI system
            return True
        except (SystemError, OSError, RuntimeError):
            return False


@contextlib.contextmanager
def _quiet_stderr():
    """C libraries write to fd 2 directly: point it at /dev/null for the block (called before threads start)."""
    try:
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def find_backend(name: str | None = None, alsa_seq: str = ALSA_SEQ) -> str:
    """The mido backend for live MIDI: ``name`` (alsa, jack, or any mido backend name) when given, else the first
    that works here: the ALSA sequencer when ``/dev/snd/seq`` is there and opens, else JACK when a server runs.
    ConfigError, saying what to start, when none does."""
    if name:
        return BACKENDS.get(name, name)
    if not sys.platform.startswith("linux"):
        return "mido.backends.rtmidi"  # CoreMIDI / Windows MM: rtmidi's default API
    if Path(alsa_seq).exists() and _works(BACKENDS["alsa"]):
        return BACKENDS["alsa"]
    if _works(BACKENDS["jack"]):
        return BACKENDS["jack"]
    raise ConfigError(
        f"no MIDI system here: no ALSA sequencer ({alsa_seq}: load it with `sudo modprobe snd-seq`) and no JACK "
        "server running (start one, e.g. `jackd -d alsa` or, with no sound card, `jackd --no-realtime -d dummy "
        "-r 48000`); then `openmrt play --midi` finds it (or pass --midi-backend alsa|jack). `openmrt devices` "
        "lists the MIDI inputs it sees")


def input_ports(backend: str | None = None) -> list[str]:
    """Names of the MIDI inputs the backend (default: `find_backend`'s choice) can see; empty when none works."""
    try:
        return list(_backend(find_backend(backend)).get_input_names())
    except (ConfigError, SystemError, OSError, RuntimeError):  # no ALSA sequencer, no JACK server
        return []


def _match_port(want: str, names: Sequence[str]) -> str:
    """Exact name, else the one name containing `want` (case-insensitive): hardware names carry client:port ids."""
    if want in names:
        return want
    hits = [n for n in names if want.lower() in n.lower()]
    if len(hits) == 1:
        return hits[0]
    what = "matches several ports" if hits else "matches no port"
    raise ConfigError(f"MIDI input {want!r} {what}; available: {', '.join(names) or 'none'}")


class MidiInput:
    """A live MIDI input feeding `target`. `port=None` creates the virtual input `virtual_name` for other software
    (a DAW, a sequencer) to connect to. Bad values are logged and counted (`rejected`), never raised. A named port
    is watched every `watch_s` seconds: when it vanishes, `reconnects` attempts reopen it until it is back
    (`connected`); `echo` gets one line when it goes and one when it is back."""

    def __init__(
        self,
        target: ControlTarget,
        port: str | None = None,
        virtual_name: str = VIRTUAL_PORT,
        backend: str | None = None,
        watch_s: float = 1.0,
        echo: Any = None,
    ) -> None:
        self.target = target
        self.received = self.rejected = 0
        self.reconnects = 0  # attempts to reopen a vanished port
        self.connected = True
        self.echo = echo or (lambda line: log.warning("%s", line))
        self.backend = find_backend(backend)
        be = self._be = _backend(self.backend)
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        try:
            if port is None:
                self.name = virtual_name
                # The client is named too (else "RtMidiIn Client"); not "openmrt", which the audio client takes.
                self._port = self._take_raw(be.open_input(virtual_name, virtual=True, client_name=MIDI_CLIENT,
                                                          callback=self._on_message))
            else:
                self.name = _match_port(port, be.get_input_names())
                self._port = self._take_raw(be.open_input(self.name, callback=self._on_message))
        except (SystemError, OSError, RuntimeError) as e:
            hint = ("try the other MIDI system: --midi-backend jack (with a JACK server running) or alsa"
                    if port is None else "check the name: `openmrt devices` lists the MIDI inputs")
            raise ConfigError(f"cannot open MIDI input {port or virtual_name!r} ({self.backend}): {e}; {hint}") from e
        log.info("MIDI: listening on %r (%s)", self.name, self.backend)
        if port is not None:
            self._watch = threading.Thread(target=self._watch_port, args=(watch_s,), name="openmrt-midi-watch",
                                           daemon=True)
            self._watch.start()

    def _present(self) -> bool:
        try:
            return self.name in self._be.get_input_names()
        except Exception:  # the MIDI system itself went away (JACK stopped): the port is gone too
            return False

    def _watch_port(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self._check()
            except Exception:  # the watch must outlive anything a MIDI system does
                log.exception("MIDI: port watch failed")

    def _check(self) -> None:
        """One look at the port: notice it vanished, or try to reopen it."""
        if self.connected:
            if self._present():
                return
            self.connected = False
            with contextlib.suppress(Exception):
                self._port.close()
            with contextlib.suppress(Exception):
                self.target.all_notes_off()  # its note-offs will never come
            self.echo(f"openmrt: MIDI input {self.name!r} vanished; reconnecting while the music plays on")
            return
        self.reconnects += 1
        if not self._present():
            return
        try:
            self._port = self._take_raw(self._be.open_input(self.name, callback=self._on_message))
        except Exception as e:
            log.warning("MIDI: reopening %r failed: %s", self.name, e)
            return
        self.connected = True
        self.echo(f"openmrt: MIDI input {self.name!r} is back")

    def _take_raw(self, port: Any) -> Any:
        """Receive the port's raw bytes ourselves: mido's rtmidi wrapper lets a truncated message (b'\\xe0') raise
        IndexError on rtmidi's thread; ours counts it as rejected."""
        rt = getattr(port, "_rt", None)
        if rt is not None and hasattr(rt, "set_callback"):
            rt.cancel_callback()
            rt.set_callback(self._on_raw)
        return port

    def _on_raw(self, event: Any, data: Any = None) -> None:
        try:
            msg = decode(event[0])
        except ControlError as e:
            self.received += 1
            self.rejected += 1
            log.warning("MIDI rejected %s", e)
            return
        self._on_message(msg)

    def _on_message(self, msg: Any) -> None:
        # Runs on rtmidi's thread: nothing may escape, or the port stops delivering.
        self.received += 1
        try:
            handle_message(self.target, msg)
        except ControlError as e:
            self.rejected += 1
            log.warning("MIDI rejected %s: %s", msg, e)
        except Exception:
            self.rejected += 1
            log.exception("MIDI: error handling %s", msg)

    def close(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join()
        if self.connected:
            self._port.close()

    def __enter__(self) -> MidiInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------------------------
# MIDI files as a control timeline


@dataclass(frozen=True)
class MidiEvent:
    """One event of a timeline: applied just before the conditioning of `frame` is read."""

    frame: int
    time: float  # seconds from the start of the file
    kind: Literal["note_on", "note_off", "control_change"]
    a: int  # pitch or controller number
    b: int  # velocity or controller value


def frame_of(time: float, frame_rate: float = FRAME_RATE) -> int:
    """The frame an event at `time` seconds drives: the nearest frame start (at most 20 ms early or late), which
    keeps rendered notes closest to the file's timing."""
    return int(math.floor(time * frame_rate + 0.5))


class MidiTimeline:
    """Note and controller events on frame indices; `num_frames` covers the last event."""

    def __init__(self, events: Sequence[MidiEvent], source: str = "") -> None:
        self.events = tuple(sorted(events, key=lambda e: e.frame))  # stable: file order within a frame is kept
        self.source = source
        self.num_frames = self.events[-1].frame + 1 if self.events else 0
        self._starts = np.searchsorted([e.frame for e in self.events], np.arange(self.num_frames + 1))

    @classmethod
    def from_file(cls, path: str | Path, frame_rate: float = FRAME_RATE, include_drums: bool = False) -> MidiTimeline:
        """Read a Standard MIDI File (type 0 or 1; tempo changes honoured). Channel 10 (drums) is skipped unless
        `include_drums`: its note numbers are instruments, not pitches. Unreadable files raise DataError."""
        import mido

        path = Path(path)
        try:
            events, t = [], 0.0
            for msg in mido.MidiFile(path):  # merged tracks, `time` = seconds since the previous message
                t += msg.time
                if msg.type not in ("note_on", "note_off", "control_change"):
                    continue
                if msg.channel == DRUM_CHANNEL and not include_drums:
                    continue
                a, b = (msg.note, msg.velocity) if msg.type != "control_change" else (msg.control, msg.value)
                events.append(MidiEvent(frame_of(t, frame_rate), t, msg.type, a, b))
        except Exception as e:  # mido raises OSError, EOFError, KeyError, ValueError, TypeError on bad files
            raise DataError(f"{path}: not a readable MIDI file ({type(e).__name__}: {e})") from e
        return cls(events, source=str(path))

    def events_at(self, frame: int) -> tuple[MidiEvent, ...]:
        if not 0 <= frame < self.num_frames:
            return ()
        return self.events[self._starts[frame] : self._starts[frame + 1]]

    def feed(self, frame: int, target: ControlTarget | NoteTracker) -> None:
        """Apply the events of `frame`, in file order, to a tracker or a live target."""
        for e in self.events_at(frame):
            if e.kind == "note_on":
                target.note_on(e.a, e.b)
            elif e.kind == "note_off":
                target.note_off(e.a)
            else:
                target.control_change(e.a, e.b)

    def note_states(self, num_frames: int | None = None, auto_strum: bool = True, unmask_width: int = 0) -> np.ndarray:
        """Offline: the note values of every frame [T, 128] (int64), from a fresh tracker."""
        tracker = NoteTracker()
        n = self.num_frames if num_frames is None else num_frames
        out = np.empty((n, 128), dtype=np.int64)
        for k in range(n):
            self.feed(k, tracker)
            out[k] = tracker.frame_states(auto_strum=auto_strum, unmask_width=unmask_width)
        return out
