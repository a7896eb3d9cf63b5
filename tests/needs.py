"""What some tests need from the machine, and one rule for when it is missing: a skip on a developer's machine,
a failure in CI (``OPENMRT_CI=1``, set by .ci/run, or ``CI``), where scripts/install.sh installs everything."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

FLUID_R3 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")  # Debian fluid-soundfont-gm (scripts/install.sh)


def in_ci() -> bool:
    return os.environ.get("OPENMRT_CI") == "1" or bool(os.environ.get("CI"))


def need(ok: bool, what: str) -> None:
    """Skip (locally) or fail (in CI) unless ``ok``."""
    if not ok:
        (pytest.fail if in_ci() else pytest.skip)(f"{what} is not available (scripts/install.sh installs it)")


def need_soundfont() -> Path:
    need(FLUID_R3.is_file(), f"the SoundFont {FLUID_R3} (Debian fluid-soundfont-gm)")
    return FLUID_R3


def free_port() -> int:
    """A TCP port nobody listens on right now (for a test server: fixed ports collide between runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cli(*args: str) -> list[str]:
    """``openmrt ARGS`` in 2 processes under torchrun; ``--standalone`` lets torchrun bind its own free rendezvous port
    (a port picked before it starts can be taken before it binds)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m", "openmrt.cli",
            *args]
