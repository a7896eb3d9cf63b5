"""Many live players on one model: one frame loop steps a `Players` batch and the codec's batch dimension, and
each player's 40 ms frame goes into a ring of its own (a `Seat`), which its reader (a WebSocket) drains.

What ``openmrt serve`` plays every player with, on a GPU (a room of players on one card) and on the CPU (where a
batch of 2 costs about 1.5 of one stream, two sessions 2). A `Seat` has the part of `Session`'s interface that the
controls and the server use (``read``, ``reset``, ``set_seed``, ``stats``, ``metrics``, ``running``), so
`openmrt.engine.live.make_instrument` builds either. Only the rows up to the highest seat in use are stepped and
decoded (on CUDA: up to the next captured size).

Pacing: the loop makes one frame for every seat each 40 ms on its own drift-free clock (readers run on theirs, at
the same rate), rather than `Session`'s back-pressure: with many readers, waiting for the fullest ring would starve
the others. A seat is primed with ``round(buffer / 1920)`` frames before its reader starts; a reader that gives up
on frames after a long stall of its own calls ``skip_to_lead`` (counted in ``skipped``), so its latency stays.
Pipelined (``bundle.speed.pipeline``, as for a `Session`), frame t is decoded on a worker thread while the LM steps
frame t + 1, for one more frame of latency. A model step that raises plays silence for every seat and is tried
again next frame; a row that decodes to NaN is silenced alone and its codec rows start afresh.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

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
from openmrt.lm.generate import check_cond
from openmrt.streaming import StreamState

log = logging.getLogger("openmrt.players")

MAX_BEHIND = 5  # frames the loop may run late before it re-syncs its clock (instead of bursting)


@dataclass
class _Job:
    """One frame on its way through the stages: who plays in it and with what, and the LM's tokens."""

    seats: list[Seat]
    t_snapshot: float
    inputs: list[FrameInput] = field(default_factory=list)
    fresh: list[int] = field(default_factory=list)  # slots whose codec rows start afresh before this decode
    mute: list[bool] = field(default_factory=list)  # per seat: its codec's lookahead frame
    fade: list[bool] = field(default_factory=list)  # per seat: its first audible frame after a reset
    rows: int = 0  # streams the LM stepped (the codec decodes as many)
    bad: list[int] = field(default_factory=list)  # slots whose audio was NaN or infinite
    toks: torch.Tensor | None = None
    error: BaseException | None = None


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
        self.codec_frames = 0  # frames into the codec since its stream (re)started: the first are its lookahead
        self._fresh = True  # its codec rows start afresh at its next frame
        self.reading = False
        self.left = False
        self._last: FrameInput | None = None
        self.cond: torch.Tensor | None = None  # its last good conditioning, model tokens [144]
        self._sent = (None, None)  # temperature, top-k last written into the batch
        self._reset = False
        self._fade = False
        self._gate = MidiGate()

    # -- the loop's side ---------------------------------------------------------------------------------------------
    def _input(self) -> FrameInput:
        """This frame's controls, checked here (conditioning too: one seat's bad row must not fail the batch's step);
        a bad one keeps the previous input."""
        try:
            inp = check_input(self.frame_input())
            cond = tk.encode_conditioning(inp.cond)
            check_cond(cond[None])
            self._last, self.cond = inp, cond
        except Exception as e:  # a bad control must never stop the stream
            self.control_errors += 1
            log.error("seat %d: control snapshot failed (keeping the previous one): %s", self.slot, e)
            if self._last is None:
                self._last = FrameInput(tk.make_conditioning())
                self.cond = tk.encode_conditioning(self._last.cond)
        return self._last

    def _envelopes(self, audio: np.ndarray, inp: FrameInput, mute: bool, fade: bool) -> np.ndarray:
        """The codec's lookahead frame of a (re)started stream is silent; then the reset fade and the MIDI gate."""
        if mute:
            audio[:] = 0.0
        elif fade:
            audio *= reset_fade(len(audio))[:, None]
        if inp.midi_gate or self._gate.envelope.value < 1.0:
            audio *= self._gate.gains(inp.cond[tk.NOTES], inp.midi_gate, len(audio))[:, None]
        return audio

    # -- Session's interface ---------------------------------------------------------------------------------------
    def read(self, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """The reader's side: the next n samples (zeros where the loop fell behind)."""
        if not self.reading:  # the first read: start at the lead, whatever piled up before the reader came
            self.reading = True
            self._skip(self.lead)
        return self.ring.read(n, out)

    def skip_to_lead(self) -> int:
        """The reader gave up on frames it fell behind by (it re-synced its clock after a stall): drop what is
        queued beyond the lead, so the latency does not grow. Returns the frames skipped (counted in ``skipped``)."""
        frames = self._skip(self.lead)
        self.skipped += frames
        return frames

    def _skip(self, keep: int) -> int:
        extra = self.ring.fill() - keep
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
        threads: torch threads of each stage on the CPU.
        pipeline: decode frame t on a worker thread while the LM steps frame t + 1 (one more frame of latency;
            default ``bundle.speed.pipeline``, as for a `Session`).
    """

    def __init__(self, bundle: Bundle, capacity: int, buffer_samples: int = 4096, threads: int = 1,
                 pipeline: bool | None = None) -> None:
        if buffer_samples not in BUFFER_PRESETS:
            raise ControlError(f"buffer_samples must be one of {BUFFER_PRESETS}, got {buffer_samples}")
        self.bundle, self.buffer_samples, self.threads = bundle, buffer_samples, threads
        speed = bundle.speed
        self.players = Players(bundle.lm, capacity, int8=speed.lm == "int8", cuda_graph=speed.lm == "graphs",
                               packed=_packed(bundle, speed.lm))
        self.capacity = self.players.capacity
        if self.players.cuda_graph:
            self.players.capture()  # every batch size now, not as a hitch in the frame loop when players join
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
        self.late_frames = 0  # frames the loop started more than a frame after their time (it is not keeping up)
        self.frames = 0
        self.lm_ms = self.codec_ms = 0.0
        self._failing = 0
        self._nan: set[int] = set()  # slots whose last frame was NaN
        self._lock = threading.Lock()  # the slots and the LM batch's tensors (the codec state is the decode's own)
        self._running = threading.Event()
        self._thread: threading.Thread | None = None
        self.pipeline = bundle.speed.pipeline if pipeline is None else bool(pipeline)
        self._worker = None
        if self.pipeline:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="openmrt-players-codec",
                                              initializer=torch.set_num_threads, initargs=(threads,))
        self._pending: tuple[_Job, Future] | None = None
        self._views: dict[int, object] = {self.capacity: self.codec_state}

    # -- seats -------------------------------------------------------------------------------------------------------
    def join(self, frame_input: Callable[[], FrameInput], seed: int = DEFAULTS["seed"],
             seed_rotation: int = DEFAULTS["seed_rotation"], timeout: float = 30.0) -> Seat:
        """A seat in the lowest free slot, a fresh stream from ``seed``. While the loop runs, returns once the seat's
        lead is queued. ControlError when every slot is taken."""
        with self._lock:
            slot = self.players.join(seed=seed)
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

    def _state_of(self, n: int):
        """The codec state of the first ``n`` streams: views into the full state (a step updates it in place)."""
        if n not in self._views:
            self._views[n] = _first_rows(self.codec_state, {id(t): rows * n for t, rows in self._rows.values()})
        return self._views[n]

    def _zero_rows(self, slot: int, tensors) -> None:
        for t, rows in tensors:
            t[slot * rows : (slot + 1) * rows].zero_()

    # -- frames: LM (under the lock), codec (on the worker when pipelined), delivery into the seats' rings ----------
    @torch.inference_mode()
    def _lm(self) -> _Job:
        t0 = time.perf_counter()
        job = _Job(list(self.seats.values()), t0)
        for seat in job.seats:
            if seat._reset:
                seat._reset = False
                self.players.reset(seat.slot, seat.seed + seat.seed_rotation)
                seat._fresh, seat._fade = True, True
            if seat._fresh:  # a new stream in this slot: its codec rows start afresh too
                seat._fresh, seat.codec_frames = False, 0
                job.fresh.append(seat.slot)
            mute = seat.codec_frames < self.latency_frames  # the codec's lookahead frame of that new stream
            seat.codec_frames += 1
            job.mute.append(mute)
            job.fade.append(seat._fade and not mute)
            seat._fade = seat._fade and mute
            inp = seat._input()
            self.cond[seat.slot] = seat.cond
            if seat._sent != (inp.temperature, inp.top_k):  # device writes only when they move
                self.players.set(seat.slot, temperature=inp.temperature, top_k=inp.top_k)
                seat._sent = (inp.temperature, inp.top_k)
            job.inputs.append(inp)
        job.rows = self.players.rows()  # the codec decodes the same rows: up to the highest seat in use
        try:
            job.toks = self.players.step(self.cond)
        except Exception as e:  # reported at delivery; the room plays silence this frame
            job.error = e
        self.lm_ms = (time.perf_counter() - t0) * 1e3
        return job

    @torch.inference_mode()
    def _decode(self, job: _Job) -> np.ndarray | None:
        if job.toks is None:
            return None
        t0 = time.perf_counter()
        try:
            for slot in job.fresh:
                self._zero_rows(slot, self._rows.values())
            codes = tk.from_unique(job.toks[: job.rows]).to(self.device)
            audio = official_output(self.codec.decode_step(codes, self._state_of(job.rows))).cpu().numpy()
            for seat, mute in zip(job.seats, job.mute, strict=True):  # the lookahead frame carries nothing over
                if mute:
                    self._zero_rows(seat.slot, self._carry)
            for slot in np.flatnonzero(~np.isfinite(audio).all(axis=(1, 2))):  # never NaN to a speaker: that
                audio[slot] = 0.0  # stream is silent and its codec rows start afresh; the other seats play on
                self._zero_rows(int(slot), self._rows.values())
                job.bad.append(int(slot))
        except Exception as e:
            job.error = e
            return None
        self.codec_ms = (time.perf_counter() - t0) * 1e3
        return audio

    def _deliver(self, job: _Job, audio: np.ndarray | None) -> None:
        recovered = False
        if audio is None:  # a model fault must not stop the room: silence now, try again next frame
            if not self._failing:
                e = job.error
                self._report(f"model step failed ({type(e).__name__}: {e}): playing silence until it works again", e)
            self._failing += 1
            self.silent_frames += 1
            audio = np.zeros((self.capacity, FRAME_SAMPLES, 2), np.float32)
        elif self._failing:
            self._report(f"model step works again after {self._failing} silent frames")
            self._failing, recovered = 0, True
        for slot in sorted(set(job.bad) - self._nan):  # once per episode, not once per frame
            self._report(f"player slot {slot}: the model made NaN or infinite samples: silent frames, its codec "
                         "stream starting afresh, until it plays again")
        self._nan = set(job.bad)
        self.frames += 1
        compute_ms = self.lm_ms + self.codec_ms
        for seat, inp, mute, fade in zip(job.seats, job.inputs, job.mute, job.fade, strict=True):
            if seat.left:
                continue
            seat.frames += 1
            a = seat._envelopes(audio[seat.slot].copy(), inp, mute, fade or recovered)
            if seat.ring.free() < FRAME_SAMPLES:  # a reader that stopped reading: its frame is dropped
                seat.skipped += 1
                continue
            start = seat.ring.written
            seat.ring.write(a)
            seat.metrics.append(FrameMetrics(seat.frames, compute_ms, self.lm_ms, self.codec_ms, 0.0,
                                             seat.ring.fill(), -(-seat.ring.underrun_samples // FRAME_SAMPLES),
                                             job.t_snapshot, time.perf_counter(), start))

    def produce(self) -> None:
        """One frame for every seat (tests and virtual-clock drivers; the loop calls it on its clock). Pipelined, the
        frame before is what reaches the rings (``flush`` delivers the last)."""
        with self._lock:
            job = self._lm()
        if self._worker is None:
            self._deliver(job, self._decode(job))
            return
        prev, self._pending = self._pending, (job, self._worker.submit(self._decode, job))
        if prev is not None:  # its decode ran while this frame's LM step did
            self._deliver(prev[0], prev[1].result())

    def flush(self) -> None:
        """Deliver the frame still in the codec stage (pipelined)."""
        prev, self._pending = self._pending, None
        if prev is not None:
            self._deliver(prev[0], prev[1].result())

    def _loop(self) -> None:
        torch.set_num_threads(self.threads)
        period = FRAME_MS / 1000.0
        t_next = time.monotonic()
        while self._running.is_set():
            now = time.monotonic()
            if now < t_next:
                time.sleep(min(t_next - now, 0.01))
                continue
            if now - t_next > period:  # the frame before took longer than real time (or the machine stalled us)
                self.late_frames += 1
            if now - t_next > MAX_BEHIND * period:  # far behind (a stall): re-sync rather than burst
                t_next = now
            t_next += period
            if self.seats:
                self.produce()
            elif self._pending is not None:  # the last seat left: nothing more to step
                self.flush()

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
        self.flush()
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

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


def _first_rows(obj, sizes: dict[int, int]):
    """A copy of a streaming state's structure whose per-stream tensors are views of their first rows (``sizes``:
    tensor id -> rows to keep); shared tensors are the same objects."""
    if isinstance(obj, torch.Tensor):
        return obj[: sizes[id(obj)]] if id(obj) in sizes else obj
    if isinstance(obj, StreamState):
        return dataclasses.replace(obj, **{f.name: _first_rows(getattr(obj, f.name), sizes)
                                           for f in dataclasses.fields(obj)})
    if isinstance(obj, list | tuple):
        return type(obj)(_first_rows(o, sizes) for o in obj)
    return obj
