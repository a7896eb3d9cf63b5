"""OSC control server (python-osc, UDP). The address table is documented in docs/controls.md.

Every message is checked and dispatched into a `ControlTarget`. A malformed one (unknown address, wrong argument
count or type, NaN, out of range, an undecodable datagram) is logged as one warning line and counted; nothing raises
out of the server thread, so the stream keeps playing whatever a controller sends.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pythonosc import osc_packet
from pythonosc.osc_server import BlockingOSCUDPServer

from openmrt.errors import ConfigError, ControlError
from openmrt.io import ControlTarget

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # local only by default: anyone who can reach the port can play the instrument
DEFAULT_PORT = 9000
AT_RESET = " (from the next reset: /reset)"


@dataclass(frozen=True)
class Route:
    """One OSC address: its argument counts, a signature for messages and docs, and what it does. ``call``
    returns what the echo line shows after the arrow (the state the message left behind)."""

    nargs: tuple[int, ...]
    signature: str
    call: Callable[[ControlTarget, list[Any]], Any]


def _int(v: Any) -> Any:
    """OSC controllers often send only floats: 60.0 -> 60. Other values pass through for the range check."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return v


def _show(controls: Any, *fields: str) -> str:
    """The named fields of the controls a message left behind, e.g. "temperature 1.1"."""
    if not hasattr(controls, fields[0]):  # a target that returns something else: show that
        return str(controls)
    return ", ".join(f"{f} {getattr(controls, f)}" for f in fields)


def _set(name: str, signature: str, shows: str | None = None, note: str = "") -> Route:
    return Route((1,), signature, lambda t, a: _show(t.apply(name, a[0]), shows or name) + note)


def _command(name: str, nargs: tuple[int, ...], signature: str) -> Route:
    """A session operation (state, prefill, guidance): needs a target with ``command`` (``openmrt play``'s)."""

    def call(t: ControlTarget, a: list[Any]) -> Any:
        run = getattr(t, "command", None)
        if run is None:
            raise ControlError(f"{name}: this target has no session to {name.split('/')[0]} (use `openmrt play`)")
        return run(name, [_int(x) for x in a])

    return Route(nargs, signature, call)


def _note(t: ControlTarget, a: list[Any], on: bool) -> str:
    if on:
        t.note_on(_int(a[0]), _int((*a, 100)[1]))
    else:
        t.note_off(_int(a[0]))
    return f"note {_int(a[0])} {'on' if on else 'off'}"


ROUTES: dict[str, Route] = {
    "/prompt": Route((3,), "slot:int text:str weight:float",
                     lambda t, a: _show(t.apply("prompt", tuple(a)), "prompts")),
    "/weight": Route((2,), "slot:int weight:float", lambda t, a: _show(t.apply("weight", tuple(a)), "prompts")),
    "/prompts/clear": Route((0,), "", lambda t, a: _show(t.apply("prompts", ()), "prompts")),
    "/style_tokens": Route((12,), "t0..t11:int",
                           lambda t, a: _show(t.apply("style_tokens", tuple(_int(x) for x in a)), "style_tokens")),
    "/style_tokens/clear": Route((0,), "", lambda t, a: _show(t.apply("style_tokens", None), "style_tokens")),
    "/cfg/style": _set("cfg_style", "x:float"),
    "/cfg/notes": _set("cfg_notes", "x:float"),
    "/cfg/drums": _set("cfg_drums", "x:float"),
    "/temperature": _set("temperature", "x:float"),
    "/topk": _set("top_k", "n:int"),
    "/seed": _set("seed", "n:int", note=AT_RESET),
    "/seed_rotation": _set("seed_rotation", "n:int", note=AT_RESET),
    "/drums": _set("drums", "0|1|on|off|auto"),
    "/autostrum": _set("auto_strum", "0|1"),
    "/width": _set("unmask_width", "n:int"),
    "/solo": _set("solo", "0|1", "unmask_width"),
    "/midigate": _set("midi_gate", "0|1"),
    "/noteon": Route((1, 2), "pitch:int [velocity:int]", lambda t, a: _note(t, a, True)),
    "/noteoff": Route((1, 2), "pitch:int [velocity:int]", lambda t, a: _note(t, a, False)),
    "/cc": Route((2,), "control:int value:int",
                 lambda t, a: t.control_change(_int(a[0]), _int(a[1])) or f"control {_int(a[0])} = {_int(a[1])}"),
    "/allnotesoff": Route((0,), "", lambda t, a: t.all_notes_off() or "all notes off"),
    "/reset": Route((0,), "", lambda t, a: t.reset() or "reset"),
    # Session operations (``openmrt play``): they run off the frame loop; errors are reported, the stream goes on.
    "/save": _command("save", (1, 2), "path:str [overwrite:0|1]"),
    "/load": _command("load", (1,), "path:str"),
    "/prefill/audio": _command("prefill/audio", (1,), "path:str"),
    "/prefill/tokens": _command("prefill/tokens", (1,), "path:str (.npy, [T, 12] codes)"),
    "/prefill/silence": _command("prefill/silence", (0, 1), "[frames:int]"),
    "/guidance": _command("guidance", (2,), "signal:style|notes scale:float"),
    "/guidance/clear": _command("guidance/clear", (0,), ""),
}
SESSION_ROUTES = frozenset(a for a in ROUTES if a.startswith(("/save", "/load", "/prefill/", "/guidance")))


class _Server(BlockingOSCUDPServer):
    def verify_request(self, request: Any, client_address: Any) -> bool:
        return True  # python-osc drops non-OSC datagrams silently; let them through so they are counted and logged

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("OSC: unexpected error handling a datagram from %s", client_address)  # last resort; never raise


class OscServer:
    """OSC over UDP on its own thread. `port=0` picks a free port (see `.port` after `start`).

    Counters: `accepted` and `rejected` messages; `last_errors` keeps the latest error lines.
    """

    def __init__(self, target: ControlTarget, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 echo: Callable[[str], None] | None = None, name: str = "osc") -> None:
        self.target, self.host, self.requested_port = target, host, port
        self.echo, self.name = echo, name  # echo: one line per accepted message, "osc: /topk 17 -> top_k 17"
        self.accepted = 0
        self.rejected = 0
        self.last_errors: deque[str] = deque(maxlen=100)
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------------

    def start(self) -> OscServer:
        if self._server is not None:
            raise RuntimeError("OSC server already started")
        try:
            self._server = _Server((self.host, self.requested_port), self)  # type: ignore[arg-type]  # duck-typed
        except OSError as e:
            raise ConfigError(f"cannot listen for OSC on {self.host}:{self.requested_port} ({e}); pass --osc-port N "
                              "(another port; 0 picks a free one)") from e
        try:  # room for bursts (a fader sweep) while the handler is busy; the kernel may cap it, which is fine
            self._server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        except OSError:
            pass
        serve = self._server.serve_forever
        self._thread = threading.Thread(target=serve, args=(0.05,), name="openmrt-osc", daemon=True)
        self._thread.start()
        log.info("OSC: listening on %s:%d", self.host, self.port)
        return self

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.requested_port

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> OscServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- messages ------------------------------------------------------------------------------------------------------

    def call_handlers_for_packet(self, data: bytes, client_address: Any) -> list:
        """python-osc's dispatcher hook: called by the server thread once per datagram."""
        self.handle_packet(data)
        return []

    def handle_packet(self, data: bytes) -> None:
        """Decode one datagram (a message or a bundle) and dispatch each message. Time tags are ignored: controls
        apply at the next frame, which is as soon as this engine can act on anything."""
        try:
            messages = [m.message for m in osc_packet.OscPacket(data).messages]
        except Exception as e:  # ParseError, or whatever a hostile datagram provokes in the decoder
            self._reject(f"undecodable datagram ({len(data)} bytes): {e}")
            return
        for m in messages:
            self.handle_message(m.address, list(m.params))

    def handle_message(self, address: str, args: list[Any]) -> bool:
        """Dispatch one message; True if it took effect. Errors are logged and counted, never raised."""
        route = ROUTES.get(address)
        if route is None:
            return self._reject(f"{address} {_fmt(args)}: unknown address (see docs/controls.md)")
        if len(args) not in route.nargs:
            want = " or ".join(map(str, route.nargs))
            sig = f"{want} argument(s) ({route.signature})"
            return self._reject(f"{address} {_fmt(args)}: expects {sig}, got {len(args)}")
        try:
            state = route.call(self.target, args)
        except ControlError as e:
            return self._reject(f"{address} {_fmt(args)}: {e}")
        except Exception as e:  # a target bug must not kill the server thread
            log.exception("OSC: %s raised", address)
            return self._reject(f"{address} {_fmt(args)}: internal error {type(e).__name__}: {e}")
        with self._lock:
            self.accepted += 1
        if self.echo is not None:
            shown = " ".join(map(str, args))
            self.echo(f"{self.name}: {address}{' ' + _cut(shown) if shown else ''} -> {state}")
        return True

    def _reject(self, line: str) -> bool:
        log.warning("%s rejected %s", self.name.upper(), line)
        with self._lock:
            self.rejected += 1
            self.last_errors.append(line)
        return False

    @property
    def handled(self) -> int:
        """Messages (and undecodable datagrams) seen so far."""
        with self._lock:
            return self.accepted + self.rejected


def _fmt(args: list[Any]) -> str:
    """Arguments for a log line, cut short: a hostile message could be huge."""
    return _cut(repr(args))


def _cut(s: str) -> str:
    return s if len(s) <= 120 else s[:117] + "..."
