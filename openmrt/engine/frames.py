"""One model-bundle stream: conditioning in, 40 ms of audio out, one frame per call.

``FrameStream`` chains the LM generator and the codec's streaming decoder. It is the whole
per-frame computation; the live ``Session`` adds a thread, a ring buffer and controls on top,
and offline generation calls it in a loop.

Two stages on two cores (``pipeline=True``): the codec decode runs on a worker thread, so frame
t's decode overlaps frame t + 1's LM step and the frame period is the slower stage, not the sum
(torch releases the GIL inside its ops). The price is one more frame of audio latency:
``latency_frames`` says how many ``step`` calls a frame's audio trails its tokens (1 sequential,
the codec's lookahead; 2 pipelined). ``pipeline=None`` turns it on whenever the process may use two
cores (``cpu_cores()``).

Threads: each stage runs torch ops on ``threads`` intra-op threads (default ``max(1, free // 2)``,
so one each on a 2-core machine). Two OpenMP threads spinning against a busy neighbour collapse
(docs/benchmarks.md); one thread per stage only slows down in proportion.

The codec stage can be any object with ``init_decode_state`` / ``decode_step`` (``decoder=``),
e.g. ``openmrt.codec.fast.prepare_decoder(bundle.codec, "bf16")``.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from openmrt import tokens as tk
from openmrt.codec.output import official_output
from openmrt.controls import DEFAULTS
from openmrt.device import free_cores
from openmrt.engine.bundle import Bundle, Speed
from openmrt.frame import FRAME_SAMPLES
from openmrt.lm.generate import make_generator

FRAME = FRAME_SAMPLES  # samples per frame at 48 kHz (kept for importers)


def stage_threads(stages: int = 2) -> int:
    """Intra-op threads per stage so that all stages together use no more than the free cores."""
    return max(1, free_cores() // stages)


def _packed(bundle: Bundle, setting: str):
    """The LM's inference weights for ``setting``, packed once per bundle (a stream restart reuses them)."""
    from openmrt.lm.packed import pack

    key = ("lm", setting == "int8")
    if key not in bundle.prepared:
        bundle.prepared[key] = pack(bundle.lm, setting == "int8")
    return bundle.prepared[key]


def _decoder(bundle: Bundle, precision: str):
    """The codec stage for ``precision`` ("reference" or one of openmrt.codec.fast's), made once per bundle."""
    if precision == "reference":
        return bundle.codec
    key = ("codec", precision)
    if key not in bundle.prepared:
        from openmrt.codec.fast import prepare_decoder

        bundle.prepared[key] = prepare_decoder(bundle.codec, precision)
    return bundle.prepared[key]


class FrameStream:
    """Args:
        bundle: the models.
        seed: seeds sampling; ``reset(seed)`` restarts the stream with another.
        guidance: optional batched-CFG scales (extra LM rows), see ``LMGenerator``.
        speed: LM setting, codec precision and pipelining (default ``bundle.speed``, which
            ``load_bundle`` picks from ``--dtype``; a bundle made directly runs exact and sequential).
        pipeline: overrides ``speed.pipeline``: run the codec on its own thread (one more frame of
            latency).
        threads: intra-op torch threads per stage (default: free cores split over two stages).
        decoder: the codec stage (default from ``speed.codec``); must decode like ``SpectroStream``.
    """

    def __init__(self, bundle: Bundle, seed: int = DEFAULTS["seed"], temperature: float = DEFAULTS["temperature"],
                 top_k: int = DEFAULTS["top_k"], guidance: dict[str, float] | None = None,
                 pipeline: bool | None = None, threads: int | None = None, decoder=None, speed: Speed | None = None):
        self.bundle = bundle
        self.speed = speed = speed or bundle.speed
        self.threads = threads or stage_threads()
        torch.set_num_threads(self.threads)  # the stepping thread's budget (a compiled LM specialises on it)
        self.lm = make_generator(bundle.lm, speed.lm, guidance=guidance, temperature=temperature, top_k=top_k,
                                 seed=seed, packed=_packed(bundle, speed.lm))
        if speed.lm == "compiled" and not self.lm.compiled:  # it said why; describe what actually runs
            self.speed = speed = speed.uncompiled()
        self.codec = decoder if decoder is not None else _decoder(bundle, speed.codec)
        self.device = next(bundle.codec.parameters()).device
        self.codec_state = self.codec.init_decode_state(1, self.device)
        self.levels = bundle.lm.cfg.num_levels
        self.pipeline = speed.pipeline if pipeline is None else bool(pipeline)
        self.latency_frames = bundle.codec.decoder_latency_frames + int(self.pipeline)
        self._worker = None
        if self.pipeline:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="openmrt-codec",
                                              initializer=torch.set_num_threads, initargs=(self.threads,))
        self._pending: Future | None = None  # the decode of the previous step's tokens
        self.frames_out = 0  # audio frames returned since the last reset (the first ones are latency)
        self.lm_ms = self.codec_ms = 0.0  # timings of the last step (pipelined: the codec of the frame before)

    def _decode(self, codes: torch.Tensor) -> np.ndarray:
        t0 = time.perf_counter()
        with torch.inference_mode():
            audio = official_output(self.codec.decode_step(codes, self.codec_state))[0].cpu().numpy()
        self.codec_ms = (time.perf_counter() - t0) * 1e3
        return audio

    def _drain(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def reset(self, seed: int | None = None) -> None:
        self._drain()
        self.lm.reset(seed)
        self.codec_state.reset_()  # zeroed = a fresh codec stream
        self.frames_out = 0

    @torch.inference_mode()
    def step(self, cond_raw: np.ndarray, forced: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """cond_raw [144] raw conditioning (-1 masked) -> (audio [1920, 2] float32, tokens [12]).

        The tokens are this step's; the audio trails them by ``latency_frames`` steps (the codec's
        lookahead, plus one when pipelined), at the official output level (0.5 x decoder,
        int16-quantised, clipped). The first ``latency_frames`` frames of a stream are silence.
        """
        cond = tk.encode_conditioning(cond_raw)[None]
        f = None if forced is None else torch.as_tensor(forced)[None]
        t0 = time.perf_counter()
        toks = self.lm.step(cond, forced=f)
        codes = tk.from_unique(toks).to(self.device)  # a new tensor: the LM may reuse its buffers
        self.lm_ms = (time.perf_counter() - t0) * 1e3
        toks = toks[0].cpu().numpy()
        self.frames_out += 1
        if self._worker is None:
            return self._decode(codes), toks
        if self._pending is None:
            audio = np.zeros((FRAME, 2), np.float32)  # the pipeline's extra frame
        else:
            audio = self._pending.result()
        self._pending = self._worker.submit(self._decode, codes)
        return audio, toks

    @torch.inference_mode()
    def prefill(self, cond_raw: np.ndarray, tokens: np.ndarray) -> None:
        """Teacher-force known frames (tokens [T, 12] unique ids, cond [T, 144]) without decoding
        their audio: the LM continues after them; the codec starts fresh at the seam."""
        for c, t in zip(cond_raw, tokens, strict=True):
            self.lm.step(tk.encode_conditioning(c)[None], forced=torch.as_tensor(t)[None])

    def close(self) -> None:
        """Stop the codec worker (pipelined streams); the stream cannot step afterwards."""
        self._drain()
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    def __del__(self):
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.shutdown(wait=False)

    def warm_up(self, frames: int = 3) -> None:
        """Run ``frames`` steps and put the state back exactly: the first calls allocate, pick kernels, compile
        the phase head and start the codec thread (the first frame of a 10-minute soak took 584 ms, and the
        next ones ~50 ms), which belongs before a live clock starts, not in its first frames."""
        snapshot = {k: v.clone() for k, v in self.state_dict().items()}
        cond = tk.make_conditioning()
        for _ in range(frames):
            self.step(cond)
        self.load_state_dict(snapshot)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The stream's state. Pipelined: after the in-flight decode finishes (its audio is still returned
        by the next step here; a stream loaded from this state starts with one silent frame instead)."""
        if self._pending is not None:
            self._pending.result()
        sd = {f"lm.{k}": v for k, v in self.lm.state_dict().items()}
        sd.update({f"codec.{k}": v for k, v in self.codec_state.state_dict().items()})
        sd["frames_out"] = torch.tensor(self.frames_out)
        return sd

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self._drain()
        self.lm.load_state_dict({k[3:]: v for k, v in sd.items() if k.startswith("lm.")})
        self.codec_state.load_state_dict({k[6:]: v for k, v in sd.items() if k.startswith("codec.")})
        self.frames_out = int(sd["frames_out"])
