"""What ``openmrt play``'s control inputs drive: the controls, the live session and its state operations.

``LiveTarget`` is the `ControlTarget` that OSC, MIDI and typed commands share. Controls apply at once (seed and
seed rotation at the next reset, as the official engine does); session operations (save/load state, prefill,
batched-CFG guidance) run on one worker thread off the frame loop, and their outcome is echoed as one line. An
error there is reported and counted; the stream keeps playing.
"""

from __future__ import annotations

import logging
import shlex
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openmrt import tokens as tk
from openmrt.controls import Controls, LiveControls
from openmrt.engine.session import Session
from openmrt.errors import ControlError, OpenMRTError

log = logging.getLogger(__name__)

GUIDANCE_SIGNALS = {"style": "musiccoca", "musiccoca": "musiccoca", "notes": "notes"}
SILENCE_FRAMES = 550  # 22 s, the official silent prefill
KEYS = {  # one-letter commands typed on the terminal
    "s": "save the state to a new file in the current folder",
    "l": "load the state saved last",
    "r": "reset (to the last prefill, if any)",
    "q": "quit",
    "h": "this help; any OSC address works too, e.g. `/temperature 1.1` or `/prefill/silence 100`",
}


def parse_guidance(text: str) -> dict[str, float]:
    """``style=3,notes=1`` -> {"musiccoca": 3.0, "notes": 1.0} (batched CFG scales, one LM row per signal)."""
    out: dict[str, float] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = item.partition("=")
        key = GUIDANCE_SIGNALS.get(name.strip())
        try:
            scale = float(value)
        except ValueError:
            scale = float("nan")
        if not sep or key is None or not np.isfinite(scale):
            raise ControlError(f"--guidance: expected SIGNAL=SCALE[,...] with SIGNAL style or notes, got {item!r}")
        out[key] = scale
    return out


def read_tokens(path: str | Path) -> np.ndarray:
    """A tokens file for prefill: .npy of [T, >= 12] codec codes 0..1023 (what `openmrt codec encode` writes),
    or of [T, 12] unique LM token ids. Returns [T, 12] unique ids."""
    path = Path(path)
    if not path.is_file():
        raise ControlError(f"tokens file {path} not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises several types for a bad file
        raise ControlError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from e
    if arr.ndim != 2 or arr.shape[1] < tk.NUM_LEVELS or not np.issubdtype(arr.dtype, np.integer) or not len(arr):
        raise ControlError(f"{path}: expected integer codes [frames, >= 12], got {arr.dtype} {list(arr.shape)}")
    arr = arr[:, : tk.NUM_LEVELS].astype(np.int64)
    if arr.min() >= 0 and arr.max() < tk.CODEBOOK_SIZE:
        return tk.to_unique(torch.as_tensor(arr)).numpy()
    try:  # unique ids: each level in its own range
        tk.from_unique(torch.as_tensor(arr))
    except Exception as e:
        raise ControlError(f"{path}: values are neither codes 0..1023 nor LM token ids ({e})") from e
    return arr


@dataclass
class Instrument:
    """One live player's chain: its controls, its prompts' style tokens, the session (or `Seat`) that plays them
    and the control target that OSC, MIDI, typed commands or a web page drive."""

    live: LiveControls
    style: Any  # LivePromptStyle
    session: Any  # Session or openmrt.engine.live_players.Seat
    target: LiveTarget

    def close(self) -> None:
        """Stop the session, then its control workers (each closed even when another fails)."""
        try:
            self.session.stop()
        finally:
            try:
                self.target.close()
            finally:
                self.style.close()


def make_instrument(controls: Controls, style_source: Any, make_session: Callable[[Callable[[], Any]], Any],
                    echo: Callable[[str], None] = print) -> Instrument:
    """Controls -> prompt style -> frame input -> session -> target, wired once for every front end.
    ``make_session(frame_input)`` makes the player (a `Session`, or a seat of a shared batch); its ``reset`` is what
    a reset control calls. Nothing is started."""
    from openmrt.engine.session import FrameInput
    from openmrt.style.live import LivePromptStyle

    live = LiveControls(controls)
    style = LivePromptStyle(style_source, controls.prompts)  # prompts re-encode off the frame loop
    try:
        session = make_session(lambda: FrameInput.from_live(live, style.tokens(live.snapshot())))
    except BaseException:
        style.close()
        raise
    live.on_reset = session.reset
    target = LiveTarget(session, live, has_style=style_source is not None, echo=echo)
    return Instrument(live, style, session, target)


class LiveTarget:
    """Args:
        session: the live session.
        live: its controls (the frame loop reads them).
        has_style: whether prompts can be turned into style tokens (a style model is loaded).
        echo: where one-line outcomes go (stderr in ``openmrt play``).
        state_dir: where the ``s`` key saves.
    """

    def __init__(self, session: Session, live: LiveControls, has_style: bool = True,
                 echo: Callable[[str], None] = print, state_dir: str | Path = ".") -> None:
        self.session, self.live, self.has_style, self.echo = session, live, has_style, echo
        self.state_dir = Path(state_dir)
        self.last_saved: Path | None = None
        self.errors = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="openmrt-session-ops")
        self._pending: list[Future] = []
        self._lock = threading.Lock()

    # -- controls (ControlTarget) ----------------------------------------------------------------------------------
    def apply(self, name: str, value: Any) -> Controls:
        if name in ("prompt", "weight") and not self.has_style:
            raise ControlError(f"{name}: no style model is loaded, so prompts cannot be encoded; restart with "
                               "`openmrt play --style demo` (or --style musiccoca), or send /style_tokens")
        c = self.live.apply(name, value)
        self.session.set_seed(c.seed, c.seed_rotation)  # read at the next reset
        return c

    def note_on(self, pitch: int, velocity: int = 100) -> None:
        self.live.note_on(pitch, velocity)

    def note_off(self, pitch: int) -> None:
        self.live.note_off(pitch)

    def control_change(self, control: int, value: int) -> None:
        self.live.control_change(control, value)

    def all_notes_off(self) -> None:
        self.live.all_notes_off()

    def reset(self) -> None:
        self.live.reset()

    # -- session operations --------------------------------------------------------------------------------------------
    def command(self, name: str, args: list[Any]) -> str:
        """Check the arguments now (ControlError), run the operation on the worker thread, return what started."""
        if name == "save":
            path = _path(args[0], name)
            overwrite = _flag(args[1], "save overwrite") if len(args) > 1 else False
            if path.exists() and not overwrite:
                raise ControlError(f"save: {path} exists: not overwriting it (send `/save {path} 1` to replace it)")
            return self._run(f"saving the state to {path}", lambda: self._save(path, overwrite))
        if name == "load":
            path = _path(args[0], name)
            if not path.is_file():
                raise ControlError(f"load: {path} not found")
            return self._run(f"loading the state from {path}", lambda: self._load(path))
        if name == "prefill/audio":
            path = _path(args[0], name)
            if not path.is_file():
                raise ControlError(f"prefill/audio: {path} not found")
            return self._run(f"prefilling from {path}", lambda: self._prefill_audio(path))
        if name == "prefill/tokens":
            toks = read_tokens(_path(args[0], name))
            return self._run(f"prefilling {len(toks)} frames of tokens", lambda: self._prefill_tokens(toks))
        if name == "prefill/silence":
            frames = args[0] if args else SILENCE_FRAMES
            if not isinstance(frames, int) or isinstance(frames, bool) or not 1 <= frames <= 10_000:
                raise ControlError(f"prefill/silence: frames must be an integer in [1, 10000], got {frames!r}")
            return self._run(f"prefilling {frames} frames of silence", lambda: self._prefill_silence(frames))
        if name in ("guidance", "guidance/clear"):
            return self._guidance(args)
        raise ControlError(f"unknown session command {name!r}")

    def _guidance(self, args: list[Any]) -> str:
        g = {}
        if args:
            key = GUIDANCE_SIGNALS.get(str(args[0]))
            if key is None:
                raise ControlError(f"guidance: signal must be style or notes, got {args[0]!r}")
            scale = args[1]
            if isinstance(scale, bool) or not isinstance(scale, int | float) or not np.isfinite(scale):
                raise ControlError(f"guidance: scale must be a number, got {scale!r}")
            g = {**self.session.guidance, key: float(scale)}
        now = self.session.set_guidance(g)
        shown = ", ".join(f"{k} {v:g}" for k, v in g.items()) or "off"
        return f"guidance {shown}" + ("" if now else " (needs other LM rows: applied at the next reset: /reset)")

    def _run(self, what: str, fn: Callable[[], str]) -> str:
        def job() -> None:
            try:
                self.echo(f"session: {fn()}")
            except OpenMRTError as e:
                self.errors += 1
                self.echo(f"session: error: {e}")
            except Exception as e:  # an operation's bug must not stop the stream
                self.errors += 1
                log.exception("session operation failed")
                self.echo(f"session: error: {type(e).__name__}: {e}")

        with self._lock:
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(self._pool.submit(job))
        return what

    def wait(self) -> None:
        """Block until the queued operations are done (tests, shutdown)."""
        with self._lock:
            pending = list(self._pending)
        for f in pending:
            f.result()

    def _save(self, path: Path, overwrite: bool) -> str:
        self.session.save_state(path, overwrite=overwrite)
        self.last_saved = path
        return f"saved the state to {path}"

    def _load(self, path: Path) -> str:
        self.session.load_state(path)
        return f"loaded the state from {path}"

    def _prefill_audio(self, path: Path) -> str:
        from openmrt.audio import read_audio

        used = self.session.prefill_audio(read_audio(path))
        return f"prefilled {used} frames from {path}; /reset comes back here"

    def _prefill_tokens(self, toks: np.ndarray) -> str:
        self.session.prefill_tokens(toks)
        return f"prefilled {len(toks)} frames of tokens; /reset comes back here"

    def _prefill_silence(self, frames: int) -> str:
        self.session.prefill_silence(frames)
        return f"prefilled {frames} frames of silence; /reset comes back here"

    # -- typed commands ------------------------------------------------------------------------------------------------
    def key(self, letter: str, dispatch: Callable[[str, list[Any]], bool]) -> bool:
        """A one-letter command (see KEYS); False for ``q``. ``dispatch`` sends an OSC-style message."""
        if letter == "s":
            dispatch("/save", [str(self._free_path())])
        elif letter == "l":
            if self.last_saved is None:
                self.echo("session: nothing saved yet in this session (`s` saves; `/load PATH` loads a file)")
            else:
                dispatch("/load", [str(self.last_saved)])
        elif letter == "r":
            dispatch("/reset", [])
        elif letter == "q":
            return False
        else:
            self.echo("keys: " + "; ".join(f"{k} {v}" for k, v in KEYS.items()))
        return True

    def _free_path(self) -> Path:
        """The first openmrt-state-N.safetensors not taken in ``state_dir`` (nothing is overwritten)."""
        n = 1
        while (p := self.state_dir / f"openmrt-state-{n}.safetensors").exists():
            n += 1
        return p

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def parse_line(line: str) -> tuple[str, list[Any]]:
    """A typed command -> (OSC address, arguments): ``/temperature 1.1``, ``temperature 1.1``, ``save x.st``.
    Numbers become ints or floats; quoted words keep their spaces."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise ControlError(f"cannot read {line!r}: {e}") from e
    if not words:
        raise ControlError("empty command")
    address = words[0] if words[0].startswith("/") else "/" + words[0]
    return address, [_number(w) for w in words[1:]]


def _number(word: str) -> Any:
    for cast in (int, float):
        try:
            return cast(word)
        except ValueError:
            pass
    return word


def _path(v: Any, name: str) -> Path:
    if not isinstance(v, str) or not v:
        raise ControlError(f"{name}: expected a file path, got {v!r}")
    return Path(v).expanduser()


def _flag(v: Any, name: str) -> bool:
    if v in (0, 1) and not isinstance(v, str):
        return bool(v)
    raise ControlError(f"{name}: expected 0 or 1, got {v!r}")
