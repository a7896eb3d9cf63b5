"""The live session: a frame loop on its own thread feeding a ring buffer that an audio
callback drains (shared/spec/live_engine_and_controls.md §4).

* Pacing is back-pressure, not a timer: generate a frame, wait until the buffer has room for it
  under the chosen lead (2048 / 4096 / 8192 samples), write it.
* Controls are snapshotted once per frame by calling ``frame_input()``; an exception there is
  logged and the previous frame's input is reused, so a bad control never stops the stream.
* Start primes the buffer with 3 frames generated at once; a reset keeps what is queued and
  fades the next frame in over 1920 samples. Underruns are zero-filled and counted.
* Faults are reported once per episode (``faults``, the log), never per frame: a model step that raises
  plays a silent frame and is tried again next frame (fading in when it works again); ``pause`` stops the
  frame loop with a reason (the sound card went away) and keeps the stream's state for ``resume``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from openmrt import tokens as tk
from openmrt.controls import DEFAULTS, LiveControls, MidiGate, reset_fade
from openmrt.engine.bundle import Bundle
from openmrt.engine.chunks import is_v1, open_stream
from openmrt.engine.frames import FRAME
from openmrt.engine.ring import RingBuffer
from openmrt.errors import CheckpointError, ControlError
from openmrt.lm.generate import check_temperature, check_top_k
from openmrt.streaming import load_tensors, save_tensors

log = logging.getLogger("openmrt.session")

BUFFER_PRESETS = (2048, 4096, 8192)
PRIME_FRAMES = 3


@dataclass(frozen=True)
class FrameInput:
    """What the frame loop reads from the controls once per frame."""

    cond: np.ndarray  # [144] raw conditioning (-1 masked)
    temperature: float = DEFAULTS["temperature"]
    top_k: int = DEFAULTS["top_k"]
    midi_gate: bool = False  # mute the output while no notes sound (the note values are cond[NOTES])

    @staticmethod
    def from_live(live: LiveControls, style_tokens=None) -> FrameInput:
        """One snapshot of a ``LiveControls`` (controls + note tracker)."""
        c, _, cond = live.frame(style_tokens)
        return FrameInput(cond, c.temperature, c.top_k, c.midi_gate)


def check_input(inp: FrameInput) -> FrameInput:
    """A frame input checked where it enters the frame loop (a bad one keeps the previous input); ControlError."""
    if not isinstance(inp, FrameInput) or inp.cond.shape != (tk.NUM_COND,):
        raise ControlError(f"frame_input returned {type(inp).__name__}, not a 144-channel FrameInput")
    check_temperature(inp.temperature)
    check_top_k(inp.top_k, tk.CODEBOOK_SIZE)
    return inp


@dataclass
class FrameMetrics:
    frame: int
    compute_ms: float  # LM + codec for this frame
    lm_ms: float
    codec_ms: float
    wait_ms: float  # time spent waiting for room in the buffer (back-pressure)
    buffer_fill: int  # samples queued after writing this frame
    dropped_frames: int  # cumulative zero-filled output, in 40 ms frames (rounded up) so far
    t_snapshot: float  # perf_counter() when the controls were read
    t_written: float  # perf_counter() when the audio entered the buffer
    start_sample: int  # position of the frame's first sample in the output stream


@dataclass
class SessionStats:
    frames: int
    dropped_frames: int  # zero-filled output so far, in 40 ms frames (rounded up): the one unit for drops
    underrun_events: int
    compute_ms_p50: float
    compute_ms_p99: float
    buffer_fill: int
    extra: dict = field(default_factory=dict)


class Session:
    """Args:
        bundle: the models to play.
        frame_input: called once per frame on the engine thread; returns a ``FrameInput``.
        buffer_samples: lead of the ring buffer, one of 2048 / 4096 / 8192 (latency vs dropouts).
        seed, seed_rotation: read at every reset (change the attributes, or ``set_seed``, between resets): a
            reset starts sampling from seed + seed_rotation. A reset to a prefill keeps the prefill's sampling
            state unless either changed since the prefill (shared/spec/live_engine_and_controls.md §3.8).
        guidance: batched-CFG scales (extra LM rows per stream, ``LMGenerator``), e.g. {"musiccoca": 3.0}.
        threads: torch threads for the engine (1 leaves a core to audio, MIDI and the UI).
    """

    def __init__(self, bundle: Bundle, frame_input: Callable[[], FrameInput], buffer_samples: int = 2048,
                 seed: int = DEFAULTS["seed"], seed_rotation: int = DEFAULTS["seed_rotation"],
                 guidance: dict[str, float] | None = None, threads: int | None = 1, history: int = 10_000):
        if buffer_samples not in BUFFER_PRESETS:
            raise ControlError(f"buffer_samples must be one of {BUFFER_PRESETS}, got {buffer_samples}")
        self.bundle = bundle
        self.frame_input = frame_input
        self.buffer_samples = buffer_samples
        self.seed, self.seed_rotation = seed, seed_rotation
        self.threads = threads
        self.guidance = dict(guidance or {})
        self._pending_guidance: dict[str, float] | None = None  # new rows: applied at the next reset
        self.stream = open_stream(bundle, seed=seed, guidance=self.guidance or None)  # v1: a ChunkStream
        self.ring = RingBuffer(max(BUFFER_PRESETS) + PRIME_FRAMES * FRAME)
        self.metrics: deque[FrameMetrics] = deque(maxlen=history)
        self.control_errors = 0
        self._last_input: FrameInput | None = None
        self._reset_target: dict[str, torch.Tensor] | None = None  # set by prefill
        self._target_seeds = (seed, seed_rotation)  # the seeds the reset target was made with
        self._lock = threading.Lock()  # serialises state operations (reset/prefill/save/load) with frames
        self._requests: deque[Callable[[], None]] = deque()
        self._running = threading.Event()
        self._thread: threading.Thread | None = None
        self._warm = False  # the stream ran its warm-up frames (start)
        self._fade = False  # fade the next audible frame in (after a reset, a prefill or a load)
        self._gate = MidiGate()
        self._frames = 0
        self.faults: deque[str] = deque(maxlen=100)  # one line per fault episode, newest last
        self.silent_frames = 0  # frames played as silence because the model step raised
        self._failing = 0  # consecutive failed steps (0: the model works)
        self.paused: str | None = None  # why the frame loop was paused, None while it plays
        self.on_fault: Callable[[str], None] | None = None  # also told each fault line (``openmrt play``: stderr)

    # ------------------------------------------------------------------ frame loop
    def _input(self) -> FrameInput:
        try:
            self._last_input = check_input(self.frame_input())
        except Exception as e:  # a bad control must never stop the stream
            self.control_errors += 1
            log.error("control snapshot failed (keeping the previous one): %s", e)
            if self._last_input is None:
                self._last_input = FrameInput(tk.make_conditioning())
        return self._last_input

    def _envelopes(self, audio: np.ndarray, inp: FrameInput) -> np.ndarray:
        """Reset fade-in and MIDI Gate, per sample, in place."""
        # A fresh codec stream's first frame is its lookahead silence: the fade goes on the first frame with sound.
        if self._fade and self.stream.frames_out > 1:
            audio *= reset_fade(len(audio))[:, None]
            self._fade = False
        gains = self._gate.gains(inp.cond[tk.NOTES], inp.midi_gate, len(audio))
        if inp.midi_gate:
            audio *= gains[:, None]
        return audio

    def _generate(self) -> tuple[np.ndarray, float, float]:
        t_snapshot = time.perf_counter()
        inp = self._input()
        with self._lock:
            lm = self.stream.lm
            if (lm.temperature, lm.top_k) != (inp.temperature, inp.top_k):  # device writes only when they move
                lm.temperature, lm.top_k = inp.temperature, inp.top_k
            try:
                audio, _ = self.stream.step(inp.cond)
                if not np.isfinite(audio).all():  # never send NaN to a speaker (a corrupt state, a bad weight)
                    raise FloatingPointError("the model made NaN or infinite samples")
            except Exception as e:  # a model fault must not stop the stream: silence now, try again next frame
                audio = self._step_failed(e)
            else:
                if self._failing:
                    self.report(f"model step works again after {self._failing} silent frames")
                    self._failing, self._fade = 0, True
            self._frames += 1
        return self._envelopes(audio, inp), t_snapshot, (time.perf_counter() - t_snapshot) * 1e3

    def _step_failed(self, e: Exception) -> np.ndarray:
        if not self._failing:  # once per episode, not once per frame
            self.report(f"model step failed ({type(e).__name__}: {e}): playing silence until it works again", e)
        self._failing += 1
        self.silent_frames += 1
        return np.zeros((FRAME, 2), np.float32)

    def report(self, line: str, exc: BaseException | None = None) -> None:
        """A fault or a recovery, once: logged (with the traceback of ``exc``) and kept in ``faults``."""
        log.error("%s", line, exc_info=exc)
        self.faults.append(line)
        if self.on_fault is not None:
            try:
                self.on_fault(line)
            except Exception:  # a reporter's bug must not stop the stream
                log.exception("on_fault raised")

    def _write(self, audio: np.ndarray, t_snapshot: float, compute_ms: float, wait_for_room: bool) -> None:
        t0 = time.perf_counter()
        if wait_for_room:
            while self._running.is_set() and self.buffer_samples - self.ring.fill() < FRAME:
                time.sleep(0.0002)
        if self.ring.free() < FRAME:  # stopped while waiting, or priming past a full buffer
            return
        start = self.ring.written
        self.ring.write(audio)
        t1 = time.perf_counter()
        self.metrics.append(FrameMetrics(self._frames, compute_ms, self.stream.lm_ms, self.stream.codec_ms,
                                         (t1 - t0) * 1e3, self.ring.fill(), _frames(self.ring.underrun_samples),
                                         t_snapshot, t1, start))

    def produce(self) -> None:
        """Make one frame and queue it now, without waiting for room (virtual-clock drivers; the loop waits)."""
        self._write(*self._generate(), wait_for_room=False)

    def _prime(self) -> None:
        for _ in range(PRIME_FRAMES):
            self._write(*self._generate(), wait_for_room=False)

    def _loop(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        while self._running.is_set():
            while self._requests:
                request = self._requests.popleft()
                try:
                    request()
                except Exception as e:  # a failed reset must not end the frame loop: report it, play on
                    self.report(f"{getattr(request, '__name__', 'operation')} failed ({type(e).__name__}: {e}); "
                                "playing on from the current state", e)
            self._write(*self._generate(), wait_for_room=True)

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Prime 3 frames, then run the frame loop on its own thread."""
        if self._thread is not None:
            return
        if self.threads:
            torch.set_num_threads(self.threads)
        if not self._warm:  # once, before the clock
            self.stream.warm_up()
            self._warm = True
        self._prime()
        self._running.set()
        self._thread = threading.Thread(target=self._loop, name="openmrt-frames", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def pause(self, reason: str) -> None:
        """Stop making frames (the sound card went away), keeping the stream's state; reported once."""
        if self.paused is None:
            self.paused = reason
            self.report(f"paused: {reason}")
        self._running.clear()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
            self._thread = None

    def resume(self) -> None:
        """Play on after ``pause`` from the same state (primes the buffer again)."""
        if self.paused is not None:
            self.report(f"resumed after: {self.paused}")
            self.paused = None
        self._thread = None
        self.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def read(self, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """Audio callback side: the next n stereo samples (zeros where the engine fell behind)."""
        return self.ring.read(n, out)

    def _do_reset(self) -> None:
        with self._lock:
            if self._pending_guidance is not None:  # new LM rows: a fresh stream (its state no longer fits)
                self.guidance, self._pending_guidance = self._pending_guidance, None
                self.stream.close()
                speed = {} if is_v1(self.bundle) else {"speed": self.bundle.speed.uncompiled()}  # no compile mid-stream
                self.stream = open_stream(self.bundle, seed=self.seed, guidance=self.guidance or None, **speed)
                self._reset_target = None
            seed = self.seed + self.seed_rotation
            self.stream.reset(seed)
            if self._reset_target is not None:
                self.stream.load_state_dict(self._reset_target)
                if (self.seed, self.seed_rotation) != self._target_seeds:  # the seed changed: new noise from here on
                    self.stream.lm.set_seeds(seed)
            self._fade = True

    def reset(self) -> None:
        """Back to the reset target (fresh stream, or the last prefill), fading in; thread-safe."""
        if self.running:
            self._requests.append(self._do_reset)
        else:
            self._do_reset()

    def set_seed(self, seed: int | None = None, seed_rotation: int | None = None) -> None:
        """New seed and/or seed rotation, used from the next reset on."""
        if seed is not None:
            self.seed = seed
        if seed_rotation is not None:
            self.seed_rotation = seed_rotation

    def set_guidance(self, guidance: dict[str, float]) -> bool:
        """Batched-CFG scales. Same signals as now: applied from the next frame (True). Other signals need other
        LM rows: applied at the next reset, which starts a fresh stream and drops a prefill target (False)."""
        guidance = {k: float(v) for k, v in guidance.items()}
        if tuple(sorted(guidance)) == tuple(sorted(self.guidance)):
            with self._lock:
                lm = self.stream.lm
                lm.guidance = [guidance[k] for k in lm.guidance_keys]
                self.guidance = guidance
            return True
        self._pending_guidance = guidance
        return False

    # ------------------------------------------------------------------ state and prefill
    def save_state(self, path: str | Path, overwrite: bool = False) -> None:
        """Write the stream state (LM caches, tokens, RNG, codec buffers) to a safetensors file; an existing
        file is kept (CheckpointError) unless ``overwrite``."""
        if Path(path).exists() and not overwrite:
            raise CheckpointError(f"{path} exists: not overwriting it (choose another name, or allow overwrite)")
        with self._lock:
            sd = self.stream.state_dict()
        save_tensors(path, sd, {"bundle": self.bundle.name, "lm": self.bundle.lm.cfg.to_json()})

    def load_state(self, path: str | Path) -> None:
        sd, meta = load_tensors(path, "session state")
        if meta.get("lm") != self.bundle.lm.cfg.to_json():
            raise CheckpointError(f"session state {path} was saved with another model ({meta.get('bundle')})")
        with self._lock:
            try:
                self.stream.load_state_dict(sd)
            except (ValueError, KeyError, RuntimeError) as e:
                raise CheckpointError(f"session state {path} does not fit this bundle: {e}") from e
            self._fade = True

    def prefill_tokens(self, tokens: np.ndarray, drums: int = tk.MASKED) -> None:
        """Teacher-force known frames (tokens [T, 12] unique ids) and make the result the reset target.

        Conditioning during prefill: notes and style masked, drums as given (official engine)."""
        cond = np.stack([tk.make_conditioning(drums=drums) for _ in range(len(tokens))])
        with self._lock:
            self.stream.reset(self.seed + self.seed_rotation)
            self.stream.prefill(cond, np.asarray(tokens))
            self._reset_target = self.stream.state_dict()
            self._target_seeds = (self.seed, self.seed_rotation)
            self._fade = True

    def prefill_audio(self, audio: np.ndarray, trim_frames: int = 25, drums: int = tk.MASKED) -> int:
        """Encode audio [N, 2] at 48 kHz with the codec, trim ``trim_frames`` at each end (encoder
        warm-up and zero-padded lookahead), teacher-force the rest. Returns the frames used."""
        codec = self.bundle.codec
        if hasattr(self.stream, "set_context_audio"):  # v1: the audio becomes the context of every reset
            with self._lock:
                used = self.stream.set_context_audio(audio)
                self._reset_target = self.stream.state_dict()
                self._fade = True
            return used
        with torch.inference_mode():
            codes = codec.encode(torch.as_tensor(audio, dtype=torch.float32)[None], self.stream.levels)[0]
        if len(codes) > 2 * trim_frames + 1:
            codes = codes[trim_frames:-trim_frames]
        self.prefill_tokens(tk.to_unique(codes).numpy(), drums)
        return len(codes)

    def prefill_silence(self, frames: int = 550, drums: int = tk.MASKED) -> None:
        """Teacher-force ``frames`` frames of the codec's silence code (22 s by default)."""
        codec = self.bundle.codec
        with torch.inference_mode():
            codes = codec.encode(torch.zeros(1, 5 * FRAME, 2), self.stream.levels)[0, 2]  # past the warm-up
        self.prefill_tokens(np.tile(tk.to_unique(codes).numpy(), (frames, 1)), drums)

    # ------------------------------------------------------------------ reporting
    def stats(self) -> SessionStats:
        ms = np.array([m.compute_ms for m in self.metrics]) if self.metrics else np.zeros(1)
        return SessionStats(
            frames=self._frames,
            dropped_frames=_frames(self.ring.underrun_samples),
            underrun_events=self.ring.underrun_events,
            compute_ms_p50=float(np.percentile(ms, 50)),
            compute_ms_p99=float(np.percentile(ms, 99)),
            buffer_fill=self.ring.fill(),
            extra={"control_errors": self.control_errors, "silent_frames": self.silent_frames,
                   "paused": self.paused, "faults": list(self.faults)},
        )


def _frames(samples: int) -> int:
    """Dropped samples -> dropped frames (a partly dropped frame counts as one)."""
    return -(-samples // FRAME)
