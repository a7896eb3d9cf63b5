"""What a player can change, validated, and the MIDI note tracker (shared/spec/live_engine_and_controls.md §3).

* `Controls`: an immutable, validated snapshot of every control (style, drums, CFG scales, sampling, note-tracker
  settings). Bad values raise `ControlError` naming the control and its allowed range.
* `build_conditioning`: Controls + the frame's note states -> one raw conditioning frame (144 ints, tokens.py).
* `NoteTracker`: MIDI note-on/off, sustain pedal, onset latch, Auto-Strum, unmask width / Solo.
* `Envelope` / `MidiGate`: the one-pole output envelopes of §3.5 (MIDI Gate, reset fade-in).
* `blend_weights` / `blend_embeddings`: prompt blending (§3.6).
* `LiveControls`: the thread-safe holder the control threads (OSC, MIDI, Python) write and the frame loop reads.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from openmrt import tokens as tk
from openmrt.errors import ControlError
from openmrt.frame import FRAME_SAMPLES

MAX_PROMPTS = 6  # prompt slots in the official engine
LIVE_STYLE_LEVELS = 6  # the live engine keeps the coarsest 6 style levels and masks 6..11 (§1)
SOLO_WIDTH = 127  # unmask width >= 127 means Solo (§3.3)
UNSOLO_WIDTH = 4  # the MRT2 app's Solo toggle sets w = 4 when switched off (§3.3)
MAX_SEED = 2**63 - 1
MAX_SEED_ROTATION = 1000
DRUM_TOKENS = {"on": 1, "off": 0, "auto": tk.MASKED}

# The one table of sampling defaults (the Python API / CLI column of live_engine_and_controls.md §1.1). Controls,
# the session, the frame stream, the LM generator and every command read their defaults from here; the CFG
# scales are the token layer's (tokens.CFG_DEFAULTS, what a conditioning frame without them carries).
DEFAULTS: dict[str, Any] = {
    "temperature": 1.3,
    "top_k": 40,
    "cfg_style": tk.CFG_DEFAULTS["musiccoca"],
    "cfg_notes": tk.CFG_DEFAULTS["notes"],
    "cfg_drums": tk.CFG_DEFAULTS["drums"],
    "seed": 0,
    "seed_rotation": 0,
    "unmask_width": 0,
}

DrumsMode = Literal["on", "off", "auto"]
Prompt = tuple[str, float]  # (text or audio path, weight)


# ---------------------------------------------------------------------------------------------------------------------
# Value checks. Each names the control and the allowed range, because the message is what a player sees in a log.


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def check_int(name: str, v: Any, lo: int, hi: int) -> int:
    """An int in [lo, hi] (bools are not ints here: `True` for top-k is a bug, not 1)."""
    if not _is_int(v):
        raise ControlError(f"{name}: expected an integer in [{lo}, {hi}], got {type(v).__name__} {v!r}")
    if not lo <= v <= hi:
        raise ControlError(f"{name}: {v} is out of range; allowed [{lo}, {hi}]")
    return int(v)


def check_float(name: str, v: Any, lo: float, hi: float = math.inf) -> float:
    """A finite real number in [lo, hi]; NaN and infinities are rejected."""
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
        raise ControlError(f"{name}: expected a number in [{lo}, {hi}], got {type(v).__name__} {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise ControlError(f"{name}: {f} is not a finite number; allowed [{lo}, {hi}]")
    if not lo <= f <= hi:
        raise ControlError(f"{name}: {f} is out of range; allowed [{lo}, {hi}]")
    return f


def check_bool(name: str, v: Any) -> bool:
    """True/False, or 0/1 (ints or exactly 0.0/1.0: OSC controllers send toggles as numbers)."""
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | float | np.integer | np.floating) and v in (0, 1):
        return bool(v)
    raise ControlError(f"{name}: expected 0 or 1 (on/off), got {type(v).__name__} {v!r}")


def check_style_tokens(name: str, v: Any) -> tuple[int, ...]:
    """Exactly 12 ints, each 0..1023 or -1 (masked)."""
    if isinstance(v, str | bytes) or not isinstance(v, Sequence | np.ndarray):
        raise ControlError(f"{name}: expected {tk.NUM_STYLE} integers in [-1, 1023], got {type(v).__name__}")
    if len(v) != tk.NUM_STYLE:
        raise ControlError(f"{name}: expected {tk.NUM_STYLE} integers in [-1, 1023], got {len(v)} values")
    return tuple(check_int(f"{name}[{i}]", t, tk.MASKED, tk.CODEBOOK_SIZE - 1) for i, t in enumerate(v))


def check_prompt(name: str, v: Any) -> Prompt:
    """(text or audio path, weight >= 0). Weight 0 keeps the slot but leaves it out of the blend (§3.6)."""
    if not isinstance(v, tuple | list) or len(v) != 2:
        raise ControlError(f"{name}: expected (text or audio path, weight), got {v!r}")
    src, w = v
    if not isinstance(src, str):
        raise ControlError(f"{name}: prompt must be a text or an audio path (str), got {type(src).__name__}")
    return src, check_float(f"{name} weight", w, 0.0)


def parse_token_prompt(text: str) -> tuple[int, ...] | None:
    """"musiccoca:a,b,...,l" (exactly 12 ints) bypasses the style model (§3.6); other texts give None."""
    if not text.startswith("musiccoca:"):
        return None
    try:
        vals = [int(x) for x in text[len("musiccoca:") :].split(",")]
    except ValueError:
        raise ControlError(f"prompt {text!r}: 'musiccoca:' must be followed by 12 comma-separated ints") from None
    return check_style_tokens("prompt musiccoca tokens", vals)


# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Controls:
    """Everything a player can change, as one validated immutable value. Defaults: the Python API / CLI (§1.1).

    Style comes from `style_tokens` when set (an explicit 12-token vector), else from the `prompts` blend, which the
    engine's style model turns into tokens; with neither, the style channels are masked.
    """

    prompts: tuple[Prompt, ...] = ()  # up to 6 slots (text or audio path, weight >= 0)
    style_tokens: tuple[int, ...] | None = None  # 12 ints 0..1023 or -1 (masked); wins over prompts
    drums: DrumsMode = "auto"  # on: token 1; off: token 0 ("No Drums"); auto: masked, the model decides
    cfg_style: float = DEFAULTS["cfg_style"]  # MusicCoCa guidance, [-1, 7] (binned to 0.2)
    cfg_notes: float = DEFAULTS["cfg_notes"]  # notes guidance, [-1, 7] (binned to 0.2)
    cfg_drums: float = DEFAULTS["cfg_drums"]  # drums guidance, [-1, 7] (binned to 1.0)
    temperature: float = DEFAULTS["temperature"]  # >= 0; 0 = greedy
    top_k: int = DEFAULTS["top_k"]  # 1..1024
    seed: int = DEFAULTS["seed"]  # 0..2**63-1
    seed_rotation: int = DEFAULTS["seed_rotation"]  # 0..1000, applied by the engine on reset (§3.8)
    auto_strum: bool = True  # onset mode 0 "Mask onsets" (held notes -> 3); False: onset 2 then held 1
    unmask_width: int = DEFAULTS["unmask_width"]  # 0..127; 127 = Solo
    midi_gate: bool = False  # mute the output when no notes are held (§3.5)

    def __post_init__(self) -> None:
        prompts = self.prompts
        if isinstance(prompts, str | bytes) or not isinstance(prompts, Sequence):
            raise ControlError(f"prompts: expected a list of (text or audio path, weight), got {prompts!r}")
        if len(prompts) > MAX_PROMPTS:
            raise ControlError(f"prompts: {len(prompts)} prompts; allowed at most {MAX_PROMPTS}")
        checked: dict[str, Any] = {
            "prompts": tuple(check_prompt(f"prompt {i}", p) for i, p in enumerate(prompts)),
            "style_tokens": None if (t := self.style_tokens) is None else check_style_tokens("style_tokens", t),
            "cfg_style": check_float("cfg_style", self.cfg_style, -1.0, 7.0),
            "cfg_notes": check_float("cfg_notes", self.cfg_notes, -1.0, 7.0),
            "cfg_drums": check_float("cfg_drums", self.cfg_drums, -1.0, 7.0),
            "temperature": check_float("temperature", self.temperature, 0.0),
            "top_k": check_int("top_k", self.top_k, 1, tk.CODEBOOK_SIZE),
            "seed": check_int("seed", self.seed, 0, MAX_SEED),
            "seed_rotation": check_int("seed_rotation", self.seed_rotation, 0, MAX_SEED_ROTATION),
            "auto_strum": check_bool("auto_strum", self.auto_strum),
            "unmask_width": check_int("unmask_width", self.unmask_width, 0, SOLO_WIDTH),
            "midi_gate": check_bool("midi_gate", self.midi_gate),
        }
        if self.drums not in DRUM_TOKENS:
            raise ControlError(f"drums: expected one of 'on', 'off', 'auto', got {self.drums!r}")
        for k, v in checked.items():  # store normalised values (tuples, Python floats/ints) in the frozen instance
            object.__setattr__(self, k, v)

    @property
    def solo(self) -> bool:
        """Solo = unmask width 127: every pitch not played is off (§3.3)."""
        return self.unmask_width >= SOLO_WIDTH

    @property
    def cfg(self) -> dict[str, float]:
        """The CFG scales keyed as tokens.cfg_codes expects."""
        return {"musiccoca": self.cfg_style, "notes": self.cfg_notes, "drums": self.cfg_drums}

    def replace(self, **changes: Any) -> Controls:
        """A copy with `changes`, validated (unknown names raise ControlError)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ControlError(f"unknown control(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def apply(self, name: str, value: Any) -> Controls:
        """A copy with one control message applied by name (OSC, MIDI, Python API); see `MESSAGE_NAMES`.

        Messages are looser than the constructor in one way: integral floats are accepted for int controls, because
        many OSC controllers send only floats.
        """
        field = _ALIASES.get(name, name)
        if field == "prompt":  # (slot, text, weight): set one slot; an explicit style-token vector gives way
            slot, text, weight = _unpack(name, value, 3)
            i = check_int("prompt slot", _as_int(slot), 0, MAX_PROMPTS - 1)
            prompts = list(self.prompts) + [("", 0.0)] * (i + 1 - len(self.prompts))
            prompts[i] = check_prompt(f"prompt {i}", (text, weight))
            return self.replace(prompts=tuple(prompts), style_tokens=None)
        if field == "weight":  # (slot, weight) of an existing slot
            slot, weight = _unpack(name, value, 2)
            i = check_int("prompt slot", _as_int(slot), 0, len(self.prompts) - 1) if self.prompts else -1
            if i < 0:
                raise ControlError("weight: there are no prompt slots to weight; send /prompt first")
            prompts = list(self.prompts)
            prompts[i] = check_prompt(f"prompt {i}", (prompts[i][0], weight))
            return self.replace(prompts=tuple(prompts))
        if field == "solo":
            return self.replace(unmask_width=SOLO_WIDTH if check_bool("solo", value) else UNSOLO_WIDTH)
        if field == "drums":
            return self.replace(drums=_drums_mode(value))
        if field in ("top_k", "seed", "seed_rotation", "unmask_width"):
            value = _as_int(value)
        if field not in _FIELDS:
            raise ControlError(f"unknown control {name!r}; known: {', '.join(MESSAGE_NAMES)}")
        return self.replace(**{field: value})


_FIELDS = tuple(f.name for f in dataclasses.fields(Controls))
_ALIASES = {
    "topk": "top_k",
    "width": "unmask_width",
    "unmaskwidth": "unmask_width",
    "autostrum": "auto_strum",
    "midigate": "midi_gate",
    "cfg_musiccoca": "cfg_style",
    "cfgmusiccoca": "cfg_style",
    "cfgnotes": "cfg_notes",
    "cfgdrums": "cfg_drums",
    "seedrotation": "seed_rotation",
}
MESSAGE_NAMES = tuple(sorted({*_FIELDS, *_ALIASES, "prompt", "weight", "solo"}))


def _unpack(name: str, value: Any, n: int) -> tuple:
    if not isinstance(value, tuple | list) or len(value) != n:
        raise ControlError(f"{name}: expected {n} values, got {value!r}")
    return tuple(value)


def _as_int(v: Any) -> Any:
    """An integral float (40.0) as an int; anything else unchanged so the range check reports it."""
    if isinstance(v, float | np.floating) and math.isfinite(v) and float(v).is_integer():
        return int(v)
    return v


def _drums_mode(v: Any) -> DrumsMode:
    """'on'/'off'/'auto' or 1/0 (a toggle: 1 = drums on, 0 = no drums)."""
    if isinstance(v, str) and v in DRUM_TOKENS:
        return v  # type: ignore[return-value]
    if not isinstance(v, str):
        try:
            return "on" if check_bool("drums", v) else "off"
        except ControlError:
            pass
    raise ControlError(f"drums: expected 0 (no drums), 1 (drums), 'on', 'off' or 'auto', got {v!r}")


# ---------------------------------------------------------------------------------------------------------------------


def build_conditioning(
    controls: Controls,
    notes: np.ndarray | Sequence[int] | None,
    style_tokens: Sequence[int] | None = None,
    style_levels: int = LIVE_STYLE_LEVELS,
) -> np.ndarray:
    """One frame of raw conditioning (144 ints, -1 masked) from a Controls snapshot and the frame's note states.

    Args:
        controls: the frame's snapshot.
        notes: [128] note values (-1..3), e.g. `NoteTracker.frame_states`; None masks every pitch.
        style_tokens: the tokens of the current prompt blend (from the style model); used when the controls carry no
            explicit `style_tokens`. None (and no explicit tokens) masks the style channels.
        style_levels: style levels kept; the finer ones are masked. 6 in live playback (the official engine's
            masked tail, §1); 12 gives the Python API's full style.
    """
    check_int("style_levels", style_levels, 0, tk.NUM_STYLE)
    style = controls.style_tokens if controls.style_tokens is not None else style_tokens
    row_style = None
    if style is not None:
        row_style = np.array(check_style_tokens("style tokens", style), dtype=np.int64)
        row_style[style_levels:] = tk.MASKED
    if notes is not None:
        notes = np.asarray(notes)
        if notes.shape != (tk.NUM_PITCHES,) or notes.min() < tk.MASKED or notes.max() > tk.NOTE_ON_EITHER:
            raise ControlError(f"notes: expected {tk.NUM_PITCHES} values in [-1, 3], got shape {notes.shape}")
    return tk.make_conditioning(style=row_style, notes=notes, drums=DRUM_TOKENS[controls.drums], cfg=controls.cfg)


# ---------------------------------------------------------------------------------------------------------------------
# Prompt blending (§3.6): positive weights normalised to sum 1, embeddings averaged with them, quantised once later.


def blend_weights(weights: Sequence[float]) -> np.ndarray:
    """Normalised blend weights for the valid prompt slots, in order.

    Weight 0 leaves a slot out (the engine's "positive weights only"); negative, NaN or infinite weights are errors.
    If no weight is positive the first slot gets all of it (the spec's fallback to the first valid slot).
    """
    if len(weights) == 0:
        raise ControlError("prompt weights: no prompts to blend")
    w = np.array([check_float(f"prompt {i} weight", x, 0.0) for i, x in enumerate(weights)], dtype=np.float64)
    if w.sum() <= 0.0:
        w[0] = 1.0
    return w / w.sum()


def blend_embeddings(embeddings: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted mean of prompt embeddings (e.g. 768-d MusicCoCa) with `blend_weights`; keeps the input dtype.

    The sum runs in float64 so a one-prompt blend returns the prompt's embedding exactly.
    """
    if len(embeddings) != len(weights):
        raise ControlError(f"prompt blend: {len(embeddings)} embeddings but {len(weights)} weights")
    w = blend_weights(weights)
    arrs = [np.asarray(e) for e in embeddings]
    if any(a.shape != arrs[0].shape for a in arrs):
        raise ControlError(f"prompt blend: embeddings differ in shape: {[a.shape for a in arrs]}")
    out = sum(wi * a.astype(np.float64) for wi, a in zip(w, arrs, strict=True))
    return np.asarray(out).astype(np.result_type(arrs[0].dtype, np.float32))


# ---------------------------------------------------------------------------------------------------------------------
# MIDI note tracker (§3.1-3.3). Tracker states per pitch, distinct from the note values written to the model:
IDLE, ONSET, SUSTAIN, ONSET_RELEASED = 0, 1, 2, 3
_ADVANCE = np.array([IDLE, SUSTAIN, SUSTAIN, IDLE], dtype=np.int8)  # what a frame read leaves behind
_VALUES_AUTO_STRUM = np.array([tk.NOTE_OFF, tk.NOTE_ON_EITHER, tk.NOTE_ON_EITHER, tk.NOTE_ON_EITHER], dtype=np.int64)
_VALUES_ONSETS = np.array([tk.NOTE_OFF, tk.NOTE_ONSET, tk.NOTE_HELD, tk.NOTE_ONSET], dtype=np.int64)
CC_SUSTAIN, CC_ALL_SOUND_OFF, CC_RESET_CONTROLLERS, CC_ALL_NOTES_OFF = 64, 120, 121, 123


def note_values(states: np.ndarray, auto_strum: bool = True, unmask_width: int = 0) -> np.ndarray:
    """Tracker states [128] -> note values [128] (-1 masked, 0 off, 1 held, 2 onset, 3 either), §3.2-3.3.

    Width w < 127: everything masked, pitches within ±w of an active pitch off, active pitches their value.
    Width 127 (Solo): every pitch from its state, so all non-active pitches are off.
    """
    w = check_int("unmask_width", unmask_width, 0, SOLO_WIDTH)
    values = (_VALUES_AUTO_STRUM if check_bool("auto_strum", auto_strum) else _VALUES_ONSETS)[states]
    if w >= SOLO_WIDTH:
        return values
    active = states != IDLE
    count = np.concatenate([[0], np.cumsum(active)])  # active pitches below each index, for window sums
    p = np.arange(tk.NUM_PITCHES)
    near = count[np.minimum(p + w, tk.NUM_PITCHES - 1) + 1] - count[np.maximum(p - w, 0)] > 0
    out = np.where(near, tk.NOTE_OFF, tk.MASKED).astype(np.int64)
    out[active] = values[active]
    return out


class NoteTracker:
    """Held MIDI notes with the official onset latch, plus the sustain pedal (CC64).

    MIDI/OSC threads call note_on / note_off / control_change; the frame loop calls `frame_states` once per frame.
    A lock guards only a few small arrays; nothing slow runs under it.

    Pedal: a key released while the pedal is down keeps sounding (its state does not change) until the pedal goes
    up, when it gets the note-off it was owed. Pressing it again while pedalled re-strikes it (ONSET).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = np.zeros(tk.NUM_PITCHES, dtype=np.int8)
        self._keys = np.zeros(tk.NUM_PITCHES, dtype=bool)  # physically down
        self._pedalled = np.zeros(tk.NUM_PITCHES, dtype=bool)  # released under the pedal, still sounding
        self._pedal = False

    def note_on(self, pitch: int, velocity: int = 100) -> None:
        """Key down (velocity 1..127; velocity 0 is a note-off, as in MIDI running status)."""
        p = check_int("note pitch", pitch, 0, tk.NUM_PITCHES - 1)
        if check_int("note velocity", velocity, 0, 127) == 0:
            self.note_off(p)
            return
        with self._lock:
            self._state[p] = ONSET  # also a re-strike of a sounding note
            self._keys[p] = True
            self._pedalled[p] = False

    def note_off(self, pitch: int) -> None:
        """Key up. Ignored for keys that are not down (duplicate note-offs, or after all-notes-off)."""
        p = check_int("note pitch", pitch, 0, tk.NUM_PITCHES - 1)
        with self._lock:
            if not self._keys[p]:
                return
            self._keys[p] = False
            if self._pedal:
                self._pedalled[p] = True
            else:
                self._release(p)

    def _release(self, p: int) -> None:
        # The latch: an onset the frame loop has not read yet is delivered once more before going idle.
        if self._state[p] == ONSET:
            self._state[p] = ONSET_RELEASED
        elif self._state[p] == SUSTAIN:
            self._state[p] = IDLE

    def control_change(self, control: int, value: int) -> None:
        """CC64 sustain (>= 64 down), CC120/123 all sound/notes off, CC121 reset controllers (pedal up)."""
        c = check_int("control number", control, 0, 127)
        v = check_int(f"control {c} value", value, 0, 127)
        if c == CC_SUSTAIN:
            self.sustain(v >= 64)
        elif c in (CC_ALL_NOTES_OFF, CC_ALL_SOUND_OFF):
            self.all_notes_off()
        elif c == CC_RESET_CONTROLLERS:
            self.sustain(False)
        # other controllers have no meaning for the model

    def sustain(self, down: bool) -> None:
        with self._lock:
            self._pedal = bool(down)
            if not self._pedal:
                for p in np.flatnonzero(self._pedalled):
                    self._release(int(p))
                self._pedalled[:] = False

    def all_notes_off(self) -> None:
        """Panic: every note idle at once, latched onsets included (the pedal position is kept)."""
        with self._lock:
            self._state[:] = IDLE
            self._keys[:] = False
            self._pedalled[:] = False

    def reset(self) -> None:
        """All notes off and the pedal up."""
        with self._lock:
            self._state[:] = IDLE
            self._keys[:] = False
            self._pedalled[:] = False
            self._pedal = False

    def peek(self) -> np.ndarray:
        """The raw tracker states (IDLE/ONSET/SUSTAIN/ONSET_RELEASED), without consuming anything."""
        with self._lock:
            return self._state.copy()

    def frame_states(self, auto_strum: bool = True, unmask_width: int = 0) -> np.ndarray:
        """Once per frame: this frame's note values [128] (int64); ONSET -> SUSTAIN and ONSET_RELEASED -> IDLE."""
        check_bool("auto_strum", auto_strum)
        check_int("unmask_width", unmask_width, 0, SOLO_WIDTH)
        with self._lock:
            snap = self._state.copy()
            self._state[:] = _ADVANCE[self._state]
        return note_values(snap, auto_strum, unmask_width)


# ---------------------------------------------------------------------------------------------------------------------
# Output envelopes (§3.5). The engine multiplies each output frame by these gains.


class Envelope:
    """One-pole attack/release envelope: per sample v += (target - v)·α, α = 1 - exp(-4.60517 / N), N = attack or
    release in samples (99 % of the way after N samples)."""

    def __init__(self, attack: int, release: int, value: float = 0.0) -> None:
        self.attack, self.release, self.value = attack, release, float(value)

    @staticmethod
    def alpha(n: int) -> float:
        return 1.0 - math.exp(-4.60517 / n)

    def gains(self, target: float, n: int = FRAME_SAMPLES) -> np.ndarray:
        """The next n per-sample gains towards `target` (float32). Closed form of the per-sample recursion: with a
        constant target within the block the direction, hence α, cannot change."""
        a = self.alpha(self.attack if target > self.value else self.release)
        out = target + (self.value - target) * (1.0 - a) ** np.arange(1, n + 1, dtype=np.float64)
        if n:
            self.value = float(out[-1])
        return out.astype(np.float32)


class MidiGate:
    """MIDI Gate: mutes the output when no notes sound; attack 1920 samples, release 48,000 samples (1 s).

    Starts closed, so a session started with the gate on is silent until a key is pressed; with the gate off the
    gains are 1 (and the envelope stands open, so switching the gate on with no notes fades out over 1 s).
    """

    ATTACK, RELEASE = 1920, 48000

    def __init__(self) -> None:
        self.envelope = Envelope(self.ATTACK, self.RELEASE, value=0.0)

    def gains(self, notes: np.ndarray, enabled: bool, n: int = FRAME_SAMPLES) -> np.ndarray:
        """Per-sample gains for a frame whose note values are `notes` (any value 1..3 = a note sounds)."""
        if not enabled:
            self.envelope.value = 1.0
            return np.ones(n, dtype=np.float32)
        sounding = bool((np.asarray(notes) > tk.NOTE_OFF).any())
        return self.envelope.gains(1.0 if sounding else 0.0, n)


def reset_fade(n: int = FRAME_SAMPLES) -> np.ndarray:
    """The fade-in applied to the first frame after a reset: one-pole from 0 to 1 over 1920 samples (§3.5)."""
    return Envelope(FRAME_SAMPLES, FRAME_SAMPLES, value=0.0).gains(1.0, n)


class LiveControls:
    """The control state of a live session: the current `Controls` and a `NoteTracker`, safe across threads.

    Control threads (OSC, MIDI, Python) call `apply` / `note_on` / ...; the frame loop calls `frame()` once per
    frame. A rejected value raises ControlError and leaves the previous controls in place.
    """

    def __init__(self, controls: Controls | None = None, on_reset: Callable[[], None] | None = None) -> None:
        self._controls = controls or Controls()
        self._lock = threading.Lock()
        self.tracker = NoteTracker()
        self.on_reset = on_reset

    def snapshot(self) -> Controls:
        return self._controls  # one reference read: always a whole, validated Controls

    def apply(self, name: str, value: Any) -> Controls:
        with self._lock:  # read-modify-write, so two threads cannot lose each other's change
            self._controls = self._controls.apply(name, value)
            return self._controls

    def note_on(self, pitch: int, velocity: int = 100) -> None:
        self.tracker.note_on(pitch, velocity)

    def note_off(self, pitch: int) -> None:
        self.tracker.note_off(pitch)

    def control_change(self, control: int, value: int) -> None:
        self.tracker.control_change(control, value)

    def all_notes_off(self) -> None:
        self.tracker.all_notes_off()

    def reset(self) -> None:
        """Release every note and call the engine's reset hook (model reset, seed rotation, fade-in)."""
        self.tracker.reset()
        if self.on_reset is not None:
            self.on_reset()

    def frame(self, style_tokens: Sequence[int] | None = None, style_levels: int = LIVE_STYLE_LEVELS):
        """Snapshot once per frame -> (controls, note values [128], raw conditioning [144])."""
        c = self.snapshot()
        notes = self.tracker.frame_states(auto_strum=c.auto_strum, unmask_width=c.unmask_width)
        return c, notes, build_conditioning(c, notes, style_tokens, style_levels)


__all__ = [
    "Controls",
    "DEFAULTS",
    "DRUM_TOKENS",
    "Envelope",
    "LIVE_STYLE_LEVELS",
    "LiveControls",
    "MESSAGE_NAMES",
    "MidiGate",
    "NoteTracker",
    "blend_embeddings",
    "blend_weights",
    "build_conditioning",
    "note_values",
    "reset_fade",
    "parse_token_prompt",
]
