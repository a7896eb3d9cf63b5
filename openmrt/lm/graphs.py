"""CUDA graphs of the frame step: the temporal step and the whole 12-level depth loop with
sampling, captured as one graph per batch size and replayed every frame.

The captured code is ``FrameStep.run``, the same function the CPU runs eagerly (and the CPU
tests cover). Controls (temperature, top-k, guidance, seeds), inputs and resets are writes into
the step's tensors, so nothing ever recaptures; only a new batch size captures once.
"""

from __future__ import annotations

import torch

from openmrt.errors import ConfigError
from openmrt.lm.step import FrameStep


def require_cuda(device: torch.device) -> None:
    if device.type != "cuda":
        raise ConfigError(f"CUDA graphs need the model on a CUDA device, it is on {device}: use the eager or "
                          "int8 setting on the CPU (or move the bundle to cuda with --device cuda)")


class StepGraph:
    """``step.run(b)`` captured once: ``replay()`` runs one frame of the first ``b`` streams."""

    def __init__(self, step: FrameStep, b: int, warmup: int = 2):
        require_cuda(step.device)
        self.b = b
        with step.kept():  # warm-up and capture frames must not count
            side = torch.cuda.Stream(step.device)
            side.wait_stream(torch.cuda.current_stream(step.device))
            with torch.cuda.stream(side):  # warm-up off the capture stream (cuBLAS workspaces, autotuning)
                for _ in range(warmup):
                    step.run(b)
            torch.cuda.current_stream(step.device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                step.run(b)

    def replay(self) -> None:
        self.graph.replay()


@torch.inference_mode()
def graph_vs_eager(model, cond: torch.Tensor, seed: int = 0, temperature: float = 1.3, top_k: int = 40,
                   guidance: dict[str, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The same stream through the eager step and the captured graph (a GPU self-check):
    cond [T, 144] model tokens -> (eager tokens, graph tokens), each [T, 12] on the host. Both use
    the generator's hashed noise for ``seed``, so they must agree token for token."""
    from openmrt.lm.generate import LMGenerator
    from openmrt.lm.packed import pack

    packed = pack(model)
    out = []
    for graph in (False, True):
        gen = LMGenerator(model, guidance=guidance, temperature=temperature, top_k=top_k, seed=seed,
                          cuda_graph=graph, packed=packed)
        out.append(torch.stack([gen.step(cond[t : t + 1])[0] for t in range(cond.shape[0])]).cpu())
    return out[0], out[1]
