"""Many live players on one model: one frame loop steps a `Players` batch and the codec's batch dimension, and
each player's 40 ms frame goes into a ring of its own (a `Seat`), which its reader (a WebSocket) drains.

What ``openmrt serve`` runs on a GPU (one card, a room of players). A `Seat` has the part of `Session`'s interface
that the controls and the server use (``read``, ``reset``, ``set_seed``, ``stats``, ``metrics``, ``running``), so
`openmrt.engine.live.make_instrument` builds either.

Pacing: the loop makes one frame for every seat each 40 ms on its own drift-free clock (readers run on theirs, at
the same rate), rather than `Session`'s back-pressure: with many readers, waiting for the fullest ring would starve
the others. A seat is primed with ``round(buffer / 1920)`` frames before its reader starts; when a reader falls
behind by more than two frames (its own stall) the seat skips ahead to that lead again (counted in ``skipped``).
A model step that raises plays silence for every seat and is tried again next frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import torch

from openmrt import tokens as tk
from openmrt.codec.output import official_output
from openmrt.controls import DEFAULTS, MidiGate, reset_fade
from openmrt.engine.bundle import Bundle
from openmrt.engine.frames import _decoder, _packed
from openmrt.engine.players import Players
from openmrt.engine.ring import RingBuffer
from openmrt.engine.session import BUFFER_PRESETS, FrameInput, FrameMetrics, SessionStats, check_input
from openmrt.errors import ControlError
from openmrt.frame import FRAME_MS, FRAME_SAMPLES

log = logging.getLogger("openmrt.players")

MAX_BEHIND = 5  # frames the loop may run late before it re-syncs its clock (instead of bursting)


class Seat:
    """One player of a `LivePlayers` batch: its slot, controls reader, ring and envelopes."""

    def __init__(self, batch: LivePlayers, slot: int, frame_input: Callable[[], FrameInput], seed: int,
                 seed_rotation: int) -> None:
        self.batch, self.slot, self.frame_input = batch, slot, frame_input
        self.seed, self.seed_rotation = seed, seed_rotation
        self.guidance: dict[str, float] = {}  # batched CFG is not per seat (the batch has no guidance rows)
        self.buffer_samples = batch.buffer_samples
        self.lead = max(1, round(batch.buffer_samples / FRAME_SAMPLES)) * FRAME_SAMPLES
        self.ring = RingBuffer(max(BUFFER_PRESETS) + 4 * FRAME_SAMPLES)
        self.metrics: deque[FrameMetrics] = deque(maxlen=10_000)
        self.control_errors = 0
        self.skipped = 0  # frames skipped because the reader fell behind
        self.frames = 0  # frames made for this seat
        self.frames_out = 0  # frames since its stream (re)started: the first ones are the codec's lookahead
        self.reading = False
        self.left = False
        self._last: FrameInput | None = None
        self._sent = (None, None)  # temperature, top-k last written into the batch
        self._reset = False
        self._fade = False
        self._gate = MidiGate()
        self._t = (0.0, 0.0)  # this frame's snapshot time and compute ms, for its metrics

    # -- the loop's side ---------------------------------------------------------------------------------------------
    def _input(self) -> FrameInput:
        try:
            self._last = check_input(self.frame_input())
        except Exception as e:  # a bad control must never stop the stream
            self.control_errors += 1
            log.error("seat %d: control snapshot failed (keeping the previous one): %s", self.slot, e)
            if self._last is None:
                self._last = FrameInput(tk.make_conditioning())
        return self._last

    def _envelopes(self, audio: np.ndarray, inp: FrameInput) -> np.ndarray:
        """The codec's lookahead frames of a (re)started row are silent; then the reset fade and the MIDI gate."""
        self.frames_out += 1
        if self.frames_out <= self.batch.latency_frames:
            audio[:] = 0.0
        elif self._fade:
            audio *= reset_fade(len(audio))[:, None]
            self._fade = False
        if inp.midi_gate or self._gate.envelope.value < 1.0:
            audio *= self._gate.gains(inp.cond[tk.NOTES], inp.midi_gate, len(audio))[:, None]
        return audio

    # -- Session's interface ---------------------------------------------------------------------------------------
    def read(self, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """The reader's side: the next n samples (zeros where the loop fell behind)."""
        if not self.reading:  # the first read: start at the lead, whatever piled up before the reader came
            self.reading = True
            self._skip_to_lead()
        elif self.ring.fill() > self.lead + 2 * FRAME_SAMPLES:
            self.skipped += self._skip_to_lead()
        return self.ring.read(n, out)

    def _skip_to_lead(self) -> int:
        extra = self.ring.fill() - self.lead
        if extra <= 0:
            return 0
        self.ring.read(extra)
        return -(-extra // FRAME_SAMPLES)

    def reset(self) -> None:
        """A fresh stream for this seat (seed + rotation) from the next frame, fading in; the others play on."""
        self._reset = True

    def set_seed(self, seed: int | None = None, seed_rotation: int | None = None) -> None:
        if seed is not None:
            self.seed = seed
        if seed_rotation is not None:
            self.seed_rotation = seed_rotation

    def set_guidance(self, guidance: dict[str, float]) -> bool:
        raise ControlError("batched CFG (guidance rows) is not available to a player of a shared batch")

    @property
    def running(self) -> bool:
        return not self.left and self.batch.running

    def stop(self) -> None:
        self.batch.leave(self)

    def stats(self) -> SessionStats:
        ms = np.array([m.compute_ms for m in self.metrics]) if self.metrics else np.zeros(1)
        return SessionStats(
            frames=self.frames, dropped_frames=-(-self.ring.underrun_samples // FRAME_SAMPLES),
            underrun_events=self.ring.underrun_events, compute_ms_p50=float(np.percentile(ms, 50)),
            compute_ms_p99=float(np.percentile(ms, 99)), buffer_fill=self.ring.fill(),
            extra={"control_errors": self.control_errors, "silent_frames": self.batch.silent_frames,
                   "paused": None, "faults": list(self.batch.faults), "skipped_frames": self.skipped,
                   "slot": self.slot, "players": len(self.batch.seats)})


class LivePlayers:
    """Args:
        bundle: the model every seat plays (its ``speed`` picks the LM setting and codec; "graphs" = CUDA graphs).
        capacity: most seats at once.
        buffer_samples: each seat's lead (2048 / 4096 / 8192 samples, rounded to whole frames).
        threads: torch threads of the loop on the CPU.
    """

    def __init__(self, bundle: Bundle, capacity: int, buffer_samples: int = 4096, threads: int = 1) -> None:
        if buffer_samples not in BUFFER_PRESETS:
            raise ControlError(f"buffer_samples must be one of {BUFFER_PRESETS}, got {buffer_samples}")
        self.bundle, self.buffer_samples, self.threads = bundle, buffer_samples, threads
        speed = bundle.speed
        self.players = Players(bundle.lm, capacity, int8=speed.lm == "int8", cuda_graph=speed.lm == "graphs",
                               packed=_packed(bundle, speed.lm))
        self.capacity = self.players.capacity
        self.device = next(bundle.codec.parameters()).device
        self.codec = _decoder(bundle, speed.codec)
        self.codec_state = self.codec.init_decode_state(self.capacity, self.device)
        self._rows = _batched(self.codec, self.codec_state, self.capacity, self.device)
        # What the codec silences with its lookahead frame besides the audio: the overlap-add carry.
        self._carry = [v for k, v in self._rows.items() if k.startswith("istft.")]
        self.latency_frames = bundle.codec.decoder_latency_frames
        idle = tk.encode_conditioning(tk.make_conditioning())
        self.cond = idle.repeat(self.capacity, 1)  # rows of empty slots: any valid conditioning
        self.seats: dict[int, Seat] = {}
        self.faults: deque[str] = deque(maxlen=100)
        self.silent_frames = 0
        self.frames = 0
        self.lm_ms = self.codec_ms = 0.0
        self._failing = 0
        self._lock = threading.Lock()  # slots, the batch's tensors and the codec state: one frame at a time
        self._running = threading.Event()
        self._thread: threading.Thread | None = None

    # -- seats -------------------------------------------------------------------------------------------------------
    def join(self, frame_input: Callable[[], FrameInput], seed: int = DEFAULTS["seed"],
             seed_rotation: int = DEFAULTS["seed_rotation"], timeout: float = 30.0) -> Seat:
        """A seat in the lowest free slot, a fresh stream from ``seed``. While the loop runs, returns once the seat's
        lead is queued. ControlError when every slot is taken."""
        with self._lock:
            slot = self.players.join(seed=seed)
            self._reset_codec_row(slot)
            seat = Seat(self, slot, frame_input, seed, seed_rotation)
            self.seats[slot] = seat
        deadline = time.monotonic() + timeout
        while self.running and seat.ring.fill() < seat.lead and time.monotonic() < deadline:
            time.sleep(0.005)
        return seat

    def leave(self, seat: Seat) -> None:
        with self._lock:
            if self.seats.get(seat.slot) is seat:
                del self.seats[seat.slot]
                self.players.leave(seat.slot)
            seat.left = True

    def _reset_codec_row(self, slot: int, only=None) -> None:
        with torch.no_grad():
            for t, rows in only if only is not None else self._rows.values():
                t[slot * rows : (slot + 1) * rows].zero_()

    # -- frames ------------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _frame(self) -> list[tuple[Seat, np.ndarray, FrameInput]]:
        """One frame for every seat (under the lock): controls in, audio out per seat."""
        t_snapshot = time.perf_counter()
        seats = list(self.seats.values())
        inputs = []
        for seat in seats:
            if seat._reset:
                seat._reset = False
                self.players.reset(seat.slot, seat.seed + seat.seed_rotation)
                self._reset_codec_row(seat.slot)
                seat.frames_out, seat._fade = 0, True
            inp = seat._input()
            self.cond[seat.slot] = tk.encode_conditioning(inp.cond)
            if seat._sent != (inp.temperature, inp.top_k):  # device writes only when they move
                self.players.set(seat.slot, temperature=inp.temperature, top_k=inp.top_k)
                seat._sent = (inp.temperature, inp.top_k)
            inputs.append(inp)
        try:
            t0 = time.perf_counter()
            toks = self.players.step(self.cond)
            t1 = time.perf_counter()
            codes = tk.from_unique(toks).to(self.device)
            audio = official_output(self.codec.decode_step(codes, self.codec_state)).cpu().numpy()
            for seat in seats:  # a (re)started row's lookahead frame: silent, and so is what it carries over
                if seat.frames_out < self.latency_frames:
                    self._reset_codec_row(seat.slot, self._carry)
            if not np.isfinite(audio).all():
                raise FloatingPointError("the model made NaN or infinite samples")
            self.lm_ms, self.codec_ms = (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3
            if self._failing:
                self._report(f"model step works again after {self._failing} silent frames")
                self._failing = 0
                for seat in seats:
                    seat._fade = True
        except Exception as e:  # a model fault must not stop the room: silence now, try again next frame
            if not self._failing:
                self._report(f"model step failed ({type(e).__name__}: {e}): playing silence until it works again", e)
            self._failing += 1
            self.silent_frames += 1
            audio = np.zeros((self.capacity, FRAME_SAMPLES, 2), np.float32)
        self.frames += 1
        compute_ms = (time.perf_counter() - t_snapshot) * 1e3
        out = []
        for seat, inp in zip(seats, inputs, strict=True):
            seat.frames += 1
            out.append((seat, seat._envelopes(audio[seat.slot].copy(), inp), inp))
            seat._t = (t_snapshot, compute_ms)
        return out

    def _write(self, frame: list[tuple[Seat, np.ndarray, FrameInput]]) -> None:
        for seat, audio, _ in frame:
            if seat.left:
                continue
            if seat.ring.free() < FRAME_SAMPLES:  # a reader that stopped reading: its frame is dropped
                seat.skipped += 1
                continue
            start = seat.ring.written
            seat.ring.write(audio)
            t_snapshot, compute_ms = seat._t
            seat.metrics.append(FrameMetrics(seat.frames, compute_ms, self.lm_ms, self.codec_ms, 0.0,
                                             seat.ring.fill(), -(-seat.ring.underrun_samples // FRAME_SAMPLES),
                                             t_snapshot, time.perf_counter(), start))

    def produce(self) -> None:
        """One frame for every seat now (tests and virtual-clock drivers; the loop runs on its clock)."""
        with self._lock:
            frame = self._frame()
        self._write(frame)

    def _loop(self) -> None:
        torch.set_num_threads(self.threads)
        period = FRAME_MS / 1000.0
        t_next = time.monotonic()
        while self._running.is_set():
            now = time.monotonic()
            if now < t_next:
                time.sleep(min(t_next - now, 0.01))
                continue
            if now - t_next > MAX_BEHIND * period:  # far behind (a stall): re-sync rather than burst
                t_next = now
            t_next += period
            if self.seats:
                self.produce()

    def start(self) -> LivePlayers:
        if self._thread is None:
            self._running.set()
            self._thread = threading.Thread(target=self._loop, name="openmrt-players", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _report(self, line: str, exc: BaseException | None = None) -> None:
        log.error("%s", line, exc_info=exc)
        self.faults.append(line)


def _batched(codec, state, capacity: int, device) -> dict[str, tuple[torch.Tensor, int]]:
    """The codec state's tensors with rows per stream, and how many rows each stream has (stream-major, as the
    decoder lays them out: the stereo halves ride in the batch): what a slot's reset zeroes. Found by comparing with
    a one-stream state. Shared counters (the lookahead step count) are left alone; `Seat` mutes the lookahead."""
    one = codec.init_decode_state(1, device).tensors()
    out = {}
    for k, t in state.tensors().items():
        if t.dim() and t.shape[0] == one[k].shape[0] * capacity and t.shape[1:] == one[k].shape[1:]:
            out[k] = (t, one[k].shape[0])
    return out
