"""Audio output through PortAudio (sounddevice): JACK, ALSA or PulseAudio on Linux.

The device callback only copies samples out of the session's ring buffer (and hands a copy
to the recorder); underruns come back as zeros, counted by the ring buffer.

A sound card that goes away (unplugged, the JACK server gone: PortAudio ends the stream, or the
callback raises) is reported once through ``on_lost(reason)``; ``openmrt play`` pauses the session
then, and what was recorded up to there stays in the file.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from openmrt.errors import OpenMRTError

CLIENT_NAME = "openmrt"  # what JACK shows for our audio client (PortAudio's default is "PortAudio")
_client_name = ctypes.create_string_buffer(CLIENT_NAME.encode())  # PortAudio keeps the pointer: keep it alive


def _sd():
    try:
        import sounddevice as sd
    except OSError as e:  # PortAudio missing
        raise OpenMRTError(f"audio output needs PortAudio (Debian: apt-get install libportaudio2): {e}") from e
    _name_jack_client(sd)
    return sd


def _name_jack_client(sd) -> None:
    """Name our JACK client "openmrt": PaJack_SetClientName works only before Pa_Initialize, and sounddevice
    initialises PortAudio on import, so re-initialise once around it. A PortAudio without JACK has no such symbol."""
    if getattr(sd, "_openmrt_named", False):
        return
    sd._openmrt_named = True
    try:
        lib = ctypes.CDLL(sd._libname)  # the library sounddevice loaded (dlopen returns the same instance)
        set_name = lib.PaJack_SetClientName
    except (OSError, AttributeError):
        return
    set_name.argtypes = [ctypes.c_char_p]
    sd._terminate()
    set_name(_client_name)
    sd._initialize()


def list_devices() -> str:
    """Output devices, one per line: index, name, host API."""
    sd = _sd()
    apis = sd.query_hostapis()
    lines = []
    for i, d in enumerate(sd.query_devices()):
        if d["max_output_channels"] >= 2:
            lines.append(f"{i:3d}  {d['name']}  ({apis[d['hostapi']]['name']}, {d['max_output_channels']} out)")
    return "\n".join(lines) or ("no audio output devices (on a machine without a sound card, start JACK's dummy "
                                "driver: `jackd --no-realtime -d dummy -r 48000 -p 480 &`, then `openmrt devices`)")


def resolve_device(device: str | int | None) -> int | None:
    """A sound card's index from an index, a name (or part of one), or None for the default (--audio-device)."""
    if device is None or isinstance(device, int):
        return device
    if device.isdigit():
        return int(device)
    sd = _sd()
    matches = [i for i, d in enumerate(sd.query_devices())
               if device.lower() in d["name"].lower() and d["max_output_channels"] >= 2]
    if not matches:
        raise OpenMRTError(f"no audio output device named {device!r}; available:\n{list_devices()}")
    return matches[0]


class AudioOutput:
    """Plays ``read(n) -> [n, 2] float32`` on a device until closed."""

    def __init__(self, read: Callable[[int], np.ndarray], device: str | int | None = None, blocksize: int = 480,
                 sample_rate: int = 48000, recorder=None, on_lost: Callable[[str], None] | None = None):
        sd = _sd()
        self.read, self.recorder, self.on_lost = read, recorder, on_lost
        self.callbacks = 0
        self.status_flags = 0  # PortAudio-reported under/overflows
        self.lost: str | None = None  # why the stream ended without close(), None while it plays
        self._closing = False

        def callback(outdata, frames, time_info, status):
            if status:
                self.status_flags += 1
            try:
                outdata[:] = self.read(frames)
                if self.recorder is not None:
                    self.recorder.push(outdata)
            except Exception as e:  # nothing may escape into PortAudio's thread: end the stream, say why once
                outdata.fill(0)
                self._lose(f"the audio callback failed ({type(e).__name__}: {e})")
                raise sd.CallbackAbort from e
            self.callbacks += 1

        def finished():  # PortAudio ended the stream: by close(), or because the device went away
            if not self._closing:
                self._lose("the audio device stopped (unplugged, or its audio server went away)")

        try:
            self.stream = sd.OutputStream(samplerate=sample_rate, channels=2, dtype="float32", blocksize=blocksize,
                                          device=resolve_device(device), callback=callback,
                                          finished_callback=finished)
        except sd.PortAudioError as e:
            which = "the default sound card" if device is None else f"audio output {device!r}"
            raise OpenMRTError(f"cannot open {which}: {e}\n{list_devices()}") from e

    def _lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        if self.on_lost is not None:
            try:
                self.on_lost(reason)
            except Exception:  # the reporter must not raise into PortAudio's thread either
                pass

    def start(self) -> None:
        self.stream.start()

    def close(self) -> None:
        self._closing = True
        try:
            self.stream.stop()
            self.stream.close()
        except Exception as e:  # a device that is already gone may refuse to stop: it is closed either way
            if self.lost is None:
                raise OpenMRTError(f"closing the audio output failed: {e}") from e
