"""The ASGI app of ``openmrt serve``: the page at ``/``, its files under ``/static/``, one player per WebSocket at
``/ws`` (protocol: docs/server.md, openmrt/server/protocol.py).

Each connection gets a `Player` with its own controls and stream: a seat of one shared batch (`LivePlayers`: one
frame loop, on its own 40 ms clock, steps every player together and fans the frames out into each seat's ring; on
the CPU and on CUDA alike). The connection sends its seat's ring at real-time pace (one 1920-sample PCM16 frame per
40 ms; the page's jitter buffer absorbs network jitter). A bad message gets an error reply and the stream goes on;
a player's failure ends only its connection.
"""

from __future__ import annotations

import hmac
import io
import logging
import re
import secrets
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import soundfile as sf
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from openmrt.controls import Controls, LiveControls
from openmrt.engine.bundle import Bundle
from openmrt.engine.live import Instrument, LiveTarget, make_instrument
from openmrt.engine.live_players import LivePlayers, Seat
from openmrt.frame import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE
from openmrt.server import protocol

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
_NAME = re.compile(r"^[A-Za-z0-9_-]+\.(html|js|css|png|svg)$")
_TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css", "png": "image/png", "svg": "image/svg+xml"}
UPLOAD_FORMATS = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3", "AIFF": ".aiff"}
MAX_UPLOAD_BYTES = 10 * 2**20
MAX_UPLOAD_SECONDS = 120.0  # the style model reads the whole file on every re-encode
MAX_UPLOADS = 32  # files kept; the oldest goes first
STATUS_SECONDS = 0.5
MAX_CATCH_UP = 5  # frames sent at once after a stall; a longer stall re-syncs the clock instead
LATE_POLL = 0.002  # seconds between looks for a frame the model is late with


def new_token() -> str:
    return secrets.token_urlsafe(18)


class RateLimit:
    """Token bucket: ``rate`` messages a second on average, bursts of ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.t = rate, burst, burst, time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class Player:
    """One connection's instrument (controls, prompt style, seat of the batch, target) and what it was sent."""

    id: int
    instrument: Instrument
    history: deque = field(default_factory=lambda: deque(maxlen=1000))  # accepted messages (model_dump())
    accepted: int = 0
    rejected: int = 0
    rate_limited: int = 0
    sent_samples: int = 0

    @property
    def session(self) -> Seat:  # its seat of the batch (with the part of `Session`'s interface the server uses)
        return self.instrument.session

    @property
    def live(self) -> LiveControls:
        return self.instrument.live

    @property
    def target(self) -> LiveTarget:
        return self.instrument.target

    @property
    def style(self) -> Any:
        return self.instrument.style

    def close(self) -> None:
        self.instrument.close()


class Server:
    """Args:
        bundle: the model every player plays (weights shared; each player has its own stream state).
        style_source: turns prompts into style tokens (None: prompts are refused).
        max_players: connections beyond this get a "server full" error.
        token: required from every WebSocket (``/ws?token=...``) when set.
        rate, burst: per-connection message rate limit.
        controls: every new player's starting controls.

    Every player is a seat of one shared batch (`LivePlayers`), on the CPU as on CUDA: one frame loop steps them
    all, so N players cost one batched LM step and one batched codec decode a frame (on the CPU a batch of 2 costs
    about 1.5 of one player, two sessions 2; a batch of 1 costs what a `Session` does).
    """

    def __init__(self, bundle: Bundle, style_source: Any = None, max_players: int = 4, token: str | None = None,
                 rate: float = 200.0, burst: float = 400.0, buffer_samples: int = 4096,
                 controls: Controls | None = None) -> None:
        self.bundle, self.style_source, self.max_players, self.token = bundle, style_source, max_players, token
        self.rate, self.burst, self.buffer_samples = rate, burst, buffer_samples
        self.controls = controls or Controls()
        self.batch = LivePlayers(bundle, max_players, buffer_samples).start()
        self.players: dict[int, Player] = {}
        self._lock = threading.Lock()
        self._next_id = 1
        self._files = {p.name for p in STATIC.iterdir() if _NAME.match(p.name)}  # fixed at start: nothing else
        self._upload_dir = tempfile.TemporaryDirectory(prefix="openmrt-uploads-")
        self.uploads: dict[str, Path] = {}  # id -> file this server wrote (ids are unguessable)
        self.app = Starlette(routes=[Route("/", self.index), Route("/static/{name:path}", self.static),
                                     Route("/upload", self.upload, methods=["POST"]), WebSocketRoute("/ws", self.ws)])
        self.app.state.server = self

    # -- files ---------------------------------------------------------------------------------------------------------
    async def index(self, request: Any) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-store"})

    async def static(self, request: Any) -> Response:
        name = request.path_params["name"]
        if name not in self._files:  # a fixed list of the package's own files: no paths, no traversal
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(STATIC / name, media_type=_TYPES[name.rsplit(".", 1)[1]],
                            headers={"Cache-Control": "no-store"})

    async def upload(self, request: Any) -> Response:
        """An audio file for an audio prompt: the body is the file; the reply's ``id`` goes in a prompt's text."""
        if not self._token_ok(request):
            return JSONResponse(protocol.error("bad_token", "missing or wrong token"), status_code=403)
        too_big = protocol.error("too_large", f"audio prompts are limited to {MAX_UPLOAD_BYTES // 2**20} MiB")
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_UPLOAD_BYTES:
            return JSONResponse(too_big, status_code=413)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_UPLOAD_BYTES:
                return JSONResponse(too_big, status_code=413)
        try:
            info = sf.info(io.BytesIO(bytes(data)))
        except Exception:  # libsndfile's error types vary; anything it cannot open is refused
            info = None
        if info is None or info.format not in UPLOAD_FORMATS or not 0 < info.duration <= MAX_UPLOAD_SECONDS:
            return JSONResponse(protocol.error("bad_audio", "not an audio file of up to "
                                               f"{MAX_UPLOAD_SECONDS:g} s ({', '.join(UPLOAD_FORMATS)})"),
                                status_code=415)
        uid = secrets.token_urlsafe(12)
        path = Path(self._upload_dir.name) / f"{uid}{UPLOAD_FORMATS[info.format]}"
        path.write_bytes(data)
        with self._lock:
            self.uploads[uid] = path
            while len(self.uploads) > MAX_UPLOADS:
                self.uploads.pop(next(iter(self.uploads))).unlink(missing_ok=True)
        return JSONResponse({"id": protocol.UPLOAD_PREFIX + uid, "seconds": info.duration})

    def _upload_path(self, uid: str) -> Path | None:
        with self._lock:
            return self.uploads.get(uid)

    # -- players -------------------------------------------------------------------------------------------------------
    def _join(self) -> Player | None:
        with self._lock:
            if len(self.players) >= self.max_players:
                return None
            pid = self._next_id
            self._next_id += 1
            self.players[pid] = None  # type: ignore[assignment]  # the slot is taken while the session builds
        try:
            c = self.controls
            instrument = make_instrument(
                c, self.style_source, lambda frame_input: self.batch.join(frame_input, c.seed, c.seed_rotation),
                echo=lambda line: log.info("player %d %s", pid, line))
        except BaseException:
            with self._lock:
                self.players.pop(pid, None)
            raise
        player = Player(pid, instrument)
        with self._lock:
            self.players[pid] = player
        return player

    def _leave(self, player: Player) -> None:
        try:
            player.close()
        finally:
            with self._lock:
                self.players.pop(player.id, None)

    def _token_ok(self, conn: Any) -> bool:
        if self.token is None:
            return True
        given = conn.query_params.get("token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def ws(self, ws: WebSocket) -> None:
        await ws.accept()
        if not self._token_ok(ws):
            await ws.send_json(protocol.error("bad_token", "missing or wrong token: open the URL `openmrt serve` "
                                                            "printed (it carries ?token=...)"))
            await ws.close(code=1008)
            return
        player = await anyio.to_thread.run_sync(self._join)
        if player is None:
            await ws.send_json(protocol.error("server_full", f"server full: all {self.max_players} players are "
                                                             "taken; try again later"))
            await ws.close(code=1013)
            return
        try:
            await ws.send_json({"type": "hello", "player": player.id, "model": self.bundle.name,
                                "sample_rate": SAMPLE_RATE, "channels": 2, "frame_samples": FRAME_SAMPLES,
                                "format": "pcm16le", "has_style": self.style_source is not None,
                                "controls": _controls_json(player.live.snapshot())})
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._send_audio, ws, player, tg.cancel_scope)
                await self._receive(ws, player)
                tg.cancel_scope.cancel()
        except (WebSocketDisconnect, anyio.ClosedResourceError, anyio.BrokenResourceError, RuntimeError):
            pass  # the page went away (RuntimeError: starlette's send after close)
        finally:
            with anyio.CancelScope(shield=True):  # the page's task may be cancelled: the slot must still be freed
                await anyio.to_thread.run_sync(self._leave, player)

    async def _receive(self, ws: WebSocket, player: Player) -> None:
        limit = RateLimit(self.rate, self.burst)
        warned = 0.0
        while True:
            m = await ws.receive()
            if m["type"] == "websocket.disconnect":
                return
            if not limit.allow():
                player.rate_limited += 1
                if time.monotonic() - warned > 1.0:  # one reply a second, not one per dropped message
                    warned = time.monotonic()
                    await ws.send_json(protocol.error("rate_limited", f"more than {self.rate:g} messages a second:"
                                                                      " messages dropped"))
                continue
            text = m.get("text") if m.get("text") is not None else m.get("bytes")
            reply, msg = protocol.handle(player.target, text, has_style=self.style_source is not None,
                                         uploads=self._upload_path)
            if msg is None:
                player.rejected += 1
            else:
                player.accepted += 1
                player.history.append(msg.model_dump())
            await ws.send_json(reply)

    async def _send_audio(self, ws: WebSocket, player: Player, scope: anyio.CancelScope) -> None:
        """One frame per 40 ms from the session's ring, on a drift-free schedule; status every 0.5 s. When sending
        fails (the page went away), the connection ends: the scope cancels the receive loop too."""
        try:
            await self._audio_loop(ws, player)
        except Exception as e:  # the socket's own error types differ by server; any of them ends this player only
            log.info("player %d: audio stopped (%s: %s)", player.id, type(e).__name__, e)
            scope.cancel()

    async def _audio_loop(self, ws: WebSocket, player: Player) -> None:
        """One frame per 40 ms on a drift-free clock. A frame the model has not made yet is waited for, not sent as
        silence: the page's jitter buffer bridges a short wait, and the frames due meanwhile follow at once."""
        period = FRAME_MS / 1000.0
        buf = np.zeros((FRAME_SAMPLES, 2), dtype=np.float32)
        t_next = time.monotonic()
        t_status = t_next
        while True:
            now = time.monotonic()
            if now - t_status >= STATUS_SECONDS:
                t_status = now
                await ws.send_json(self.status(player))
            if now < t_next:
                await anyio.sleep(t_next - now)
                continue
            due = int((now - t_next) / period) + 1
            if due > MAX_CATCH_UP:  # a long stall (ours or the model's): re-sync the clock rather than bursting,
                t_next, due = now, 1  # and drop what piled up meanwhile beyond the lead, so latency does not grow
                player.session.skip_to_lead()
            sent = 0
            while sent < due and player.session.ring.fill() >= FRAME_SAMPLES:
                player.session.read(FRAME_SAMPLES, buf)
                await ws.send_bytes(protocol.encode_pcm16(buf))
                sent += 1
            player.sent_samples += sent * FRAME_SAMPLES
            t_next += sent * period
            if sent < due:  # the model is late with the next frame: look again shortly
                await anyio.sleep(LATE_POLL)

    def status(self, player: Player) -> dict:
        st = player.session.stats()
        last = player.session.metrics[-1] if player.session.metrics else None
        fill = st.buffer_fill
        return {"type": "status", "frames": st.frames, "buffer_fill": fill, "buffer_ms": fill / SAMPLE_RATE * 1e3,
                "late_frames": self.batch.late_frames, "compute_ms": last.compute_ms if last else 0.0,
                "compute_ms_p50": st.compute_ms_p50, "compute_ms_p99": st.compute_ms_p99,
                "sent_samples": player.sent_samples, "accepted": player.accepted, "rejected": player.rejected,
                "rate_limited": player.rate_limited, "skipped_frames": st.extra.get("skipped_frames", 0),
                "control_errors": st.extra["control_errors"] + player.target.errors + player.style.errors,
                # server side of the latency: the queued lead plus one frame's compute (the page adds its own)
                "latency_ms": {"server_buffer": fill / SAMPLE_RATE * 1e3,
                               "compute": last.compute_ms if last else 0.0, "frame": FRAME_MS}}

    def close(self) -> None:
        with self._lock:
            players = [p for p in self.players.values() if p is not None]
        for p in players:
            self._leave(p)
        self.batch.stop()
        self._upload_dir.cleanup()


def _controls_json(c: Controls) -> dict:
    return {"prompts": [{"text": t, "weight": w} for t, w in c.prompts], "drums": c.drums, "cfg_style": c.cfg_style,
            "cfg_notes": c.cfg_notes, "cfg_drums": c.cfg_drums, "temperature": c.temperature, "top_k": c.top_k,
            "seed": c.seed, "seed_rotation": c.seed_rotation, "auto_strum": c.auto_strum,
            "unmask_width": c.unmask_width, "midi_gate": c.midi_gate}
