"""The WebSocket protocol of ``openmrt serve`` (docs/server.md): JSON control messages in, validated with pydantic,
dispatched into a player's `ControlTarget` (the same controls OSC drives); JSON replies and status out.

Audio goes the other way as binary messages (`encode_pcm16`). Pydantic checks the message's shape and types; the
ranges are checked by `openmrt.controls` (one rule for OSC, MIDI and the browser). ``handle`` never raises: every
message gets exactly one reply, ``ok`` or ``error``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from openmrt.controls import MAX_PROMPTS
from openmrt.errors import ControlError
from openmrt.io import ControlTarget
from openmrt.style import AUDIO_SUFFIXES

Uploads = Callable[[str], Path | None] | None  # upload id -> the file the server stored (or None)
UPLOAD_PREFIX = "upload:"  # a prompt text naming a file uploaded to this server (POST /upload)
MAX_MESSAGE_CHARS = 8192  # a control message is small; anything longer is refused before parsing
SETTABLE = ("cfg_style", "cfg_notes", "cfg_drums", "temperature", "top_k", "seed", "seed_rotation", "drums",
            "auto_strum", "unmask_width", "solo", "midi_gate")


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NoteOn(_Msg):
    type: Literal["note_on"]
    pitch: int = Field(ge=0, le=127)
    velocity: int = Field(default=100, ge=1, le=127)


class NoteOff(_Msg):
    type: Literal["note_off"]
    pitch: int = Field(ge=0, le=127)


class AllNotesOff(_Msg):
    type: Literal["all_notes_off"]


class ControlChange(_Msg):
    type: Literal["cc"]
    control: int = Field(ge=0, le=127)
    value: int = Field(ge=0, le=127)


class PromptSlot(_Msg):
    text: str = Field(max_length=500)
    weight: float = Field(ge=0.0, allow_inf_nan=False)


class Prompts(_Msg):
    type: Literal["prompts"]
    prompts: list[PromptSlot] = Field(max_length=MAX_PROMPTS)


class Set(_Msg):
    type: Literal["set"]
    name: Literal[SETTABLE]  # type: ignore[valid-type]
    value: bool | int | float | Literal["on", "off", "auto"]


class Reset(_Msg):
    type: Literal["reset"]


class Ping(_Msg):
    type: Literal["ping"]
    t: float = Field(allow_inf_nan=False)


Message = Annotated[NoteOn | NoteOff | AllNotesOff | ControlChange | Prompts | Set | Reset | Ping,
                    Field(discriminator="type")]
_ADAPTER = TypeAdapter(Message)


def parse(text: str) -> Any:
    """One JSON control message -> its pydantic model; ControlError says what is wrong (short, for the reply)."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise ControlError(f"message of {len(text)} characters; at most {MAX_MESSAGE_CHARS}")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ControlError(f"not JSON: {e}") from None
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'message'}: {x['msg']}" for x in e.errors()[:3])
        raise ControlError(f"invalid message ({errs}); see docs/server.md") from None


def apply(target: ControlTarget, msg: Any, has_style: bool, uploads: Uploads = None) -> dict:
    """Dispatch a parsed message; returns the reply. ControlError for values the controls refuse.
    ``uploads`` maps an upload id to the file the server stored (audio prompts)."""
    if isinstance(msg, Ping):
        return {"type": "pong", "t": msg.t}
    if isinstance(msg, NoteOn):
        target.note_on(msg.pitch, msg.velocity)
    elif isinstance(msg, NoteOff):
        target.note_off(msg.pitch)
    elif isinstance(msg, AllNotesOff):
        target.all_notes_off()
    elif isinstance(msg, ControlChange):
        target.control_change(msg.control, msg.value)
    elif isinstance(msg, Prompts):
        if msg.prompts and not has_style:
            raise ControlError("prompts: this server has no style model, so prompts cannot be encoded")
        target.apply("prompts", tuple((_source(p.text, uploads), p.weight) for p in msg.prompts))
    elif isinstance(msg, Set):
        target.apply(msg.name, msg.value)
    elif isinstance(msg, Reset):
        target.reset()
    return {"type": "ok", "for": msg.type}


def _source(text: str, uploads: Uploads) -> str:
    """A prompt's text as the style model gets it: an uploaded file's path for ``upload:ID``."""
    if text.startswith(UPLOAD_PREFIX):
        path = uploads(text[len(UPLOAD_PREFIX):]) if uploads else None
        if path is None:
            raise ControlError(f"prompt {text[:60]!r}: no such upload on this server (upload the file again)")
        return str(path)
    if text.strip().lower().endswith(AUDIO_SUFFIXES):  # the style model reads such a text as a file: not from afar
        raise ControlError(f"prompt {text[:60]!r}: audio-file prompts are not accepted as paths (a path would read "
                           "this server's files); upload the file (POST /upload) and send its upload:ID")
    return text


def handle(target: ControlTarget, text: Any, has_style: bool = True,
           uploads: Uploads = None) -> tuple[dict, Any]:
    """(reply, parsed message or None). Never raises: a bad message, or a target bug, is an error reply."""
    if not isinstance(text, str):
        return error("bad_message", "binary messages are not accepted; send JSON text"), None
    try:
        msg = parse(text)
        return apply(target, msg, has_style, uploads), msg
    except ControlError as e:
        return error("bad_message", str(e)), None
    except Exception as e:  # a target bug must not end the connection
        return error("internal", f"{type(e).__name__}: {e}"[:300]), None


def error(code: str, message: str) -> dict:
    return {"type": "error", "code": code, "message": message[:500]}


def encode_pcm16(audio: np.ndarray) -> bytes:
    """[n, 2] float audio -> interleaved little-endian int16 (clipped)."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
