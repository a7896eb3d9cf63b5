"""Shared fixtures: where the golden vectors live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The compiled LM step costs ~1 min of compiling per process: tests (and the commands they start) stay eager;
# tests/test_lm_compiled.py switches it on for itself.
os.environ["OPENMRT_COMPILE"] = "0"

SHARED = Path(os.environ.get("OPENMRT_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _golden_dir() -> Path:
    return Path(os.environ.get("OPENMRT_GOLDEN", SHARED / "golden"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """shared/golden; missing: a failure in CI (where it must be), a skip elsewhere."""
    d = _golden_dir()
    if not d.is_dir():
        msg = f"golden vectors not found at {d} (set OPENMRT_GOLDEN)"
        if os.environ.get("CI") or os.environ.get("OPENMRT_CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture
def jack_server(monkeypatch):
    """A private JACK server on the dummy driver (real time, no sound card), under a name of its own so
    parallel runs do not collide; libjack clients of this process and its children find it through
    JACK_DEFAULT_SERVER. Needs jackd and python-rtmidi (a skip locally, a failure in CI)."""
    import shutil
    import subprocess
    import time

    from needs import need

    need(shutil.which("jackd") is not None, "jackd (apt-get install jackd2)")
    try:
        import rtmidi  # noqa: F401
    except ImportError:
        need(False, "python-rtmidi")
    name = f"openmrt-test-{os.getpid()}"
    proc = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "480"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and subprocess.run(["jack_lsp"], capture_output=True).returncode != 0:
            time.sleep(0.1)
        yield name
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
