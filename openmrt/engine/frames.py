"""One model-bundle stream: conditioning in, 40 ms of audio out, one frame per call.

``FrameStream`` chains the LM generator and the codec's streaming decoder. It is the whole
per-frame computation; the live ``Session`` adds a thread, a ring buffer and controls on top,
and offline generation calls it in a loop.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from openmrt import tokens as tk
from openmrt.codec.output import official_output
from openmrt.engine.bundle import Bundle
from openmrt.lm.generate import LMGenerator

FRAME = 1920  # samples per frame at 48 kHz


class FrameStream:
    """Args:
        bundle: the models.
        seed: seeds sampling; ``reset(seed)`` restarts the stream with another.
        guidance: optional batched-CFG scales (extra LM rows), see ``LMGenerator``.
    """

    def __init__(self, bundle: Bundle, seed: int = 0, temperature: float = 1.3, top_k: int = 40,
                 guidance: dict[str, float] | None = None):
        self.bundle = bundle
        self.lm = LMGenerator(bundle.lm, guidance=guidance, temperature=temperature, top_k=top_k, seed=seed)
        codec = bundle.codec
        self.device = next(codec.parameters()).device
        self.codec_state = codec.init_decode_state(1, self.device)
        self.levels = bundle.lm.cfg.num_levels
        self.frames_out = 0  # audio frames returned since the last reset (the first is codec latency)
        self.lm_ms = self.codec_ms = 0.0  # timings of the last step

    def reset(self, seed: int | None = None) -> None:
        self.lm.reset(seed)
        self.codec_state.reset_()  # zeroed = a fresh codec stream
        self.frames_out = 0

    @torch.inference_mode()
    def step(self, cond_raw: np.ndarray, forced: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """cond_raw [144] raw conditioning (-1 masked) -> (audio [1920, 2] float32, tokens [12]).

        The audio is the codec's output one frame late (its lookahead), at the official output
        level (0.5 x decoder, int16-quantised, clipped); the first frame of a stream is silence.
        """
        cond = tk.encode_conditioning(cond_raw)[None]
        f = None if forced is None else torch.as_tensor(forced)[None]
        t0 = time.perf_counter()
        toks = self.lm.step(cond, forced=f)
        t1 = time.perf_counter()
        audio = official_output(self.bundle.codec.decode_step(tk.from_unique(toks).to(self.device), self.codec_state))
        audio, toks = audio[0].cpu().numpy(), toks[0].cpu().numpy()
        self.lm_ms, self.codec_ms = (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3
        self.frames_out += 1
        return audio, toks

    @torch.inference_mode()
    def prefill(self, cond_raw: np.ndarray, tokens: np.ndarray) -> None:
        """Teacher-force known frames (tokens [T, 12] unique ids, cond [T, 144]) without decoding
        their audio: the LM continues after them; the codec starts fresh at the seam."""
        for c, t in zip(cond_raw, tokens, strict=True):
            self.lm.step(tk.encode_conditioning(c)[None], forced=torch.as_tensor(t)[None])

    def state_dict(self) -> dict[str, torch.Tensor]:
        sd = {f"lm.{k}": v for k, v in self.lm.state_dict().items()}
        sd.update({f"codec.{k}": v for k, v in self.codec_state.state_dict().items()})
        sd["frames_out"] = torch.tensor(self.frames_out)
        return sd

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.lm.load_state_dict({k[3:]: v for k, v in sd.items() if k.startswith("lm.")})
        self.codec_state.load_state_dict({k[6:]: v for k, v in sd.items() if k.startswith("codec.")})
        self.frames_out = int(sd["frames_out"])
