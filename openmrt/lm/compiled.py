"""The CPU's counterpart of CUDA graphs: the whole frame step compiled once by TorchInductor.

On the CPU a frame of a small LM is mostly per-op overhead, not arithmetic: the demo LM's eager step
runs ~5,000 ATen calls (12 depth levels of norms, small matmuls and sampling) in ~16 ms, of which its
matmuls take ~6. ``torch.compile`` of ``FrameStep.run`` (the same graph-safe function CUDA graphs
capture: no host sync, no data-dependent shape, state written in place) fuses the elementwise work
into generated C++ and, with the C++ wrapper, calls it without Python in between: 11.0 ms p50 against
17.8 eager on one thread, with the same tokens (benchmarks/results/lm_step_compiled.json, docs/benchmarks.md).

The price is compile time: ~75 s the first time on a 2-core machine, 3-10 s when the kernels are
already in the cache (``cache_dir()``, kept across runs). So it happens once, before a live clock
starts, and never on it: the compiled step runs with the "eager_on_recompile" stance, so a guard that
no longer holds runs that frame eagerly instead of stopping the stream for a recompile. The generated
code is specialised on the intra-op thread count, so frames run on the count it was compiled with. Needs a C++
compiler (inductor's); without one, or with ``OPENMRT_COMPILE=0``, the generator stays eager.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from openmrt.lm.step import FrameStep

# Inductor's default cache is /tmp/torchinductor_USER, gone at a reboot; it fixes its choice in the environment
# when torch._dynamo is first imported, so ours goes there before that (a user's own setting wins).
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR",
                      str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "openmrt" / "inductor"))


def cache_dir() -> Path:
    """Where inductor keeps the compiled kernels."""
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def compile_available() -> tuple[bool, str]:
    """(whether the frame step can be compiled here, why not)."""
    if os.environ.get("OPENMRT_COMPILE", "1") == "0":
        return False, "OPENMRT_COMPILE=0"
    cxx = os.environ.get("CXX", "g++")
    if not (shutil.which(cxx) or shutil.which("clang++")):
        return False, f"no C++ compiler ({cxx}) on PATH"
    return True, ""


class CompiledStep:
    """``step.run(b)`` compiled (and run once, the stream's state put back): ``replay()`` runs one frame
    of the first ``b`` streams. Raises whatever inductor raises when it cannot compile."""

    def __init__(self, step: FrameStep, b: int):
        # cpp_wrapper: no Python between the generated kernels (~2 ms of the demo frame).
        self.fn = torch.compile(functools.partial(step.run, b), dynamic=False, fullgraph=True,
                                options={"cpp_wrapper": True})
        self.threads = torch.get_num_threads()  # the generated code is specialised (and guarded) on it
        t0 = time.perf_counter()
        print(f"openmrt: compiling the LM frame step for this CPU (the first time about a minute or two, "
              f"then cached in {cache_dir()})...", file=sys.stderr, flush=True)
        with step.kept():
            self.fn()
        print(f"openmrt: compiled in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    def replay(self) -> None:
        if torch.get_num_threads() != self.threads:  # else the guard fails and every frame runs eagerly
            torch.set_num_threads(self.threads)
        with torch.compiler.set_stance("eager_on_recompile"):
            self.fn()
