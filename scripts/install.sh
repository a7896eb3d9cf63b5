#!/usr/bin/env bash
# Installs openmrt and everything its tests need on a fresh Debian/Ubuntu machine:
# system packages (FluidSynth, a General MIDI SoundFont, libsndfile, PortAudio, JACK, Chromium), then the
# package itself in editable mode with its dev tools inside a virtual environment `.venv` (stock
# Debian 12+/Ubuntu 24.04 Pythons refuse system-wide pip installs, PEP 668), and basic-pitch
# without its TensorFlow dependency pins. Afterwards: `.venv/bin/openmrt ...` or
# `source .venv/bin/activate`. OPENMRT_VENV=path picks another environment folder.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${OPENMRT_VENV:-.venv}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null; then
  $SUDO apt-get update -qq
  # fluid-soundfont-gm (148 MB) is the SoundFont the tests use; timgm6mb-soundfont (6 MB) adds
  # timbre variety to composed data. MuseScore's (86 MB, 5-11 s to load) is optional:
  # OPENMRT_ALL_SOUNDFONTS=1 bash scripts/install.sh.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    fluidsynth fluid-soundfont-gm timgm6mb-soundfont libsndfile1 >/dev/null
  # The compiled LM frame step (openmrt/lm/compiled.py): TorchInductor builds C++ against Python's headers.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ python3-dev >/dev/null
  # Live audio: PortAudio, and JACK (its dummy driver is the real-time sink on machines with no sound card).
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libportaudio2 jackd2 >/dev/null
  # The browser tests of `openmrt serve`: Debian's Chromium, driven by Playwright (pip, dev extras) through
  # executable_path; Playwright's own browser download is not needed.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  if [ "${OPENMRT_ALL_SOUNDFONTS:-0}" = 1 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq musescore-general-soundfont >/dev/null
  fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  # Debian's python3 ships venv without ensurepip until python3-venv is installed.
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    command -v apt-get >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q -e ".[dev,v1]"
# basic-pitch's default Linux deps pull TensorFlow 2.15 and numpy<2; it runs its ONNX model
# with onnxruntime (a dependency above), so install it alone.
"$PY" -m pip install -q --no-deps "basic-pitch==0.4.0"
echo "openmrt installed in $VENV: run '$VENV/bin/openmrt --help', or 'source $VENV/bin/activate' first"
