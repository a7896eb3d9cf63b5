"""MIDI to 48 kHz stereo audio with FluidSynth and the Debian General MIDI SoundFonts.

The drums (GM channel 10) and everything else are rendered in two passes, so each piece yields
a drum stem as well as the mix (their sum: FluidSynth, its reverb and chorus are linear, and we
read float samples, so nothing clips between the passes). A light augmentation (gain, a gentle
high-pass/low-pass EQ; FluidSynth's own reverb with a per-piece room) is drawn from the piece's
seed, so renders are deterministic given the SoundFont files installed.

The sustain pedal (CC 64) is not sent to the synth: labels follow the MIDI notes, and a pedal
would keep notes sounding after their labelled end.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
from scipy import signal

from openmrt.errors import DataError
from openmrt.frame import SAMPLE_RATE

__all__ = ["SAMPLE_RATE", "Augment", "Renderer", "augment", "available_soundfonts", "choose_soundfont", "draw_augment"]

# Debian SoundFonts, in order of preference, with the share of pieces each gets when present.
SOUNDFONTS: tuple[tuple[str, float], ...] = (
    ("/usr/share/sounds/sf2/FluidR3_GM.sf2", 0.45),  # fluid-soundfont-gm: the one CI installs
    ("/usr/share/sounds/sf3/MuseScore_General_Full.sf3", 0.35),  # musescore-general-soundfont
    ("/usr/share/sounds/sf2/TimGM6mb.sf2", 0.2),  # timgm6mb-soundfont: small and bright
)
DRUM_CHANNEL = 9


def available_soundfonts() -> list[str]:
    """The SoundFonts of ``SOUNDFONTS`` that are installed, in that order."""
    return [p for p, _ in SOUNDFONTS if Path(p).is_file()]


def choose_soundfont(seed: int, fonts: list[str] | None = None) -> str:
    """A SoundFont for a piece, drawn from the installed ones by their shares."""
    fonts = available_soundfonts() if fonts is None else fonts
    if not fonts:
        raise DataError("no General MIDI SoundFont found: install fluid-soundfont-gm (see scripts/install.sh)")
    weights = np.array([dict(SOUNDFONTS).get(f, 0.2) for f in fonts])
    return fonts[int(np.random.default_rng([seed, 7]).choice(len(fonts), p=weights / weights.sum()))]


@dataclass(frozen=True)
class Augment:
    """Per-piece rendering variation, all drawn from the seed."""

    gain_db: float  # loudness of the mix relative to -20 dBFS RMS
    highpass_hz: float  # 0 = off
    lowpass_hz: float  # 0 = off
    reverb_room: float  # FluidSynth reverb room size 0..1
    reverb_level: float  # FluidSynth reverb level 0..1


def draw_augment(seed: int, light: bool = True) -> Augment:
    """Random but light: a listener hears different rooms and tone, never damage."""
    if not light:
        return Augment(0.0, 0.0, 0.0, 0.2, 0.5)
    r = np.random.default_rng([seed, 11])
    return Augment(
        gain_db=float(r.uniform(-6, 3)),
        highpass_hz=float(r.choice([0.0, r.uniform(30, 90)])),
        lowpass_hz=float(r.choice([0.0, r.uniform(9000, 18000)])),
        reverb_room=float(r.uniform(0.1, 0.7)),
        reverb_level=float(r.uniform(0.3, 0.8)),
    )


class Renderer:
    """Renders PrettyMIDI objects through FluidSynth.

    Loading a SoundFont takes from 0.05 s (TimGM6mb) to 11 s (MuseScore's SF3, decoded at load),
    so each SoundFont is loaded once into a "loader" synth and lent to a fresh synth for every
    pass. A fresh synth matters: a reset synth still carries voice, effect and block-phase state,
    and renders after it differ audibly, so reuse would make shards depend on build order. Not
    thread-safe; use one per process.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE):
        import fluidsynth  # imported here: the module loads libfluidsynth at import time

        self._fl = fluidsynth
        self.sample_rate = sample_rate
        self._loaded: dict[str, tuple[object, int]] = {}  # soundfont -> (loader synth, fluid_sfont_t*)
        c = ctypes
        cfunc = fluidsynth.cfunc
        self._write = cfunc("fluid_synth_write_float", c.c_int, ("synth", c.c_void_p, 1), ("len", c.c_int, 1),
                            ("lout", c.c_void_p, 1), ("loff", c.c_int, 1), ("lincr", c.c_int, 1),
                            ("rout", c.c_void_p, 1), ("roff", c.c_int, 1), ("rincr", c.c_int, 1))
        self._get_sfont = cfunc("fluid_synth_get_sfont_by_id", c.c_void_p, ("synth", c.c_void_p, 1),
                                ("id", c.c_int, 1))
        self._add_sfont = cfunc("fluid_synth_add_sfont", c.c_int, ("synth", c.c_void_p, 1), ("sfont", c.c_void_p, 1))
        self._remove_sfont = cfunc("fluid_synth_remove_sfont", c.c_int, ("synth", c.c_void_p, 1),
                                   ("sfont", c.c_void_p, 1))
        # A new synth warns once per channel that no preset is loaded yet; that is expected here.
        set_log = cfunc("fluid_set_log_function", c.c_void_p, ("level", c.c_int, 1), ("fun", c.c_void_p, 1),
                        ("data", c.c_void_p, 1))
        set_log(2, None, None)  # FLUID_WARN; errors (level 1) still print

    def _sfont(self, soundfont: str) -> int:
        if soundfont not in self._loaded:
            if not Path(soundfont).is_file():
                raise DataError(f"SoundFont {soundfont} not found")
            loader = self._fl.Synth(gain=0.2, samplerate=float(self.sample_rate), channels=16)
            sfid = loader.sfload(soundfont)
            if sfid < 0:
                raise DataError(f"FluidSynth could not load the SoundFont {soundfont}")
            self._loaded[soundfont] = (loader, self._get_sfont(loader.synth, sfid))
        return self._loaded[soundfont][1]

    def render(self, pm: pretty_midi.PrettyMIDI, n_samples: int, soundfont: str,
               aug: Augment | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mix, drum stem), each float32 [2, n_samples]; the mix includes the drums."""
        aug = aug or draw_augment(0, light=False)
        tonal = self._pass(pm, n_samples, soundfont, aug, drums=False)
        if any(i.is_drum and i.notes for i in pm.instruments):
            drums = self._pass(pm, n_samples, soundfont, aug, drums=True)
        else:  # exact zeros (an empty pass still leaves FluidSynth's ~1e-7 anti-denormal noise)
            drums = np.zeros_like(tonal)
        return augment(tonal + drums, drums, aug, self.sample_rate)

    def _pass(self, pm: pretty_midi.PrettyMIDI, n: int, soundfont: str, aug: Augment, drums: bool) -> np.ndarray:
        sfont = self._sfont(soundfont)
        synth = self._fl.Synth(gain=0.2, samplerate=float(self.sample_rate), channels=16)
        sfid = self._add_sfont(synth.synth, sfont)
        try:
            synth.set_reverb(aug.reverb_room, 0.4, 0.8, aug.reverb_level)
            out = np.zeros(2 * n, dtype=np.float32)
            pos = 0
            for t, _, kind, ch, a, b in _events([i for i in pm.instruments if i.is_drum == drums]):
                at = min(int(round(t * self.sample_rate)), n)
                if at > pos:
                    self._fill(synth, out, pos, at)
                    pos = at
                if kind == "prog":
                    synth.program_select(ch, sfid, 128 if ch == DRUM_CHANNEL else 0, a)
                elif kind == "cc":
                    synth.cc(ch, a, b)
                elif kind == "bend":
                    synth.pitch_bend(ch, a)
                elif kind == "on":
                    synth.noteon(ch, a, b)
                else:
                    synth.noteoff(ch, a)
            self._fill(synth, out, pos, n)
        finally:
            self._remove_sfont(synth.synth, sfont)  # the loader owns it: deleting must not free it
            synth.delete()
        return out.reshape(n, 2).T.copy()

    def _fill(self, synth, out: np.ndarray, start: int, end: int) -> None:
        if end <= start:
            return
        ptr = out[2 * start: 2 * end].ctypes.data_as(ctypes.c_void_p)
        self._write(synth.synth, end - start, ptr, 0, 2, ptr, 1, 2)

    def close(self) -> None:
        for loader, _ in self._loaded.values():
            loader.delete()
        self._loaded.clear()


def _events(instruments: list[pretty_midi.Instrument]) -> list[tuple]:
    """Synth events sorted by time; at equal times set-up first, then note-offs, then note-ons, so a
    re-struck note is released before it sounds again. Instruments beyond 15 share channels by
    program (GM has 16 channels, one of them for drums)."""
    events: list[tuple] = []
    channel_of: dict[tuple[bool, int], int] = {}
    free = [c for c in range(16) if c != DRUM_CHANNEL]
    for inst in instruments:
        key = (inst.is_drum, inst.program)
        if inst.is_drum:
            ch = DRUM_CHANNEL
        elif key in channel_of:
            ch = channel_of[key]
        else:
            ch = free[len(channel_of) % len(free)]
            channel_of[key] = ch
        events.append((0.0, 0, "prog", ch, inst.program, 0))
        for c in inst.control_changes:
            if c.number != 64:  # sustain pedal: see module docstring
                events.append((c.time, 1, "cc", ch, c.number, c.value))
        for pb in inst.pitch_bends:
            events.append((pb.time, 1, "bend", ch, pb.pitch, 0))
        for note in inst.notes:
            events.append((note.start, 3, "on", ch, note.pitch, note.velocity))
            events.append((note.end, 2, "off", ch, note.pitch, 0))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def augment(mix: np.ndarray, drums: np.ndarray, aug: Augment, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """EQ and gain, applied identically to the mix and the drum stem (so the stem stays the drums
    of that mix). The mix is set to -20 dBFS RMS plus ``gain_db``, never above 0.98 peak."""
    sos = []
    if aug.highpass_hz > 0:
        sos.append(signal.butter(2, aug.highpass_hz, "highpass", fs=sr, output="sos"))
    if aug.lowpass_hz > 0:
        sos.append(signal.butter(2, aug.lowpass_hz, "lowpass", fs=sr, output="sos"))
    for s in sos:
        mix = signal.sosfilt(s, mix, axis=-1)
        drums = signal.sosfilt(s, drums, axis=-1)
    rms = float(np.sqrt(np.mean(mix**2))) if mix.size else 0.0
    if rms < 1e-7:
        return mix.astype(np.float32), drums.astype(np.float32)
    g = 10 ** ((-20 + aug.gain_db) / 20) / rms
    g = min(g, 0.98 / float(np.abs(mix).max()))
    return (mix * g).astype(np.float32), (drums * g).astype(np.float32)
