"""The page in a real browser: Playwright drives Debian's Chromium headless against ``openmrt serve`` running in
this process (so the test can look into the players' sessions). Skipped when Chromium or Playwright is missing,
unless in CI (OPENMRT_CI=1), where scripts/install.sh installs both and a missing one fails."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from needs import free_port, need

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "server.png"
SECONDS = 10.0  # audio each page must play


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright (pip)")
    need(Path(CHROMIUM).is_file(), "chromium (Debian package)")
    return sync_playwright


@pytest.fixture(scope="module")
def served():
    import uvicorn

    from openmrt.engine.bundle import load_bundle
    from openmrt.server.app import Server
    from openmrt.style import load_style

    server = Server(load_bundle("random:tiny", seed=0, device="cpu", dtype="float32"), load_style("demo"),
                    max_players=2)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(server.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started, "uvicorn did not start"
    yield server, f"http://127.0.0.1:{port}/"
    uv.should_exit = True
    thread.join(timeout=10)
    server.close()


def _player(server, page):
    page.wait_for_function("window.openmrt && window.openmrt.player !== null", timeout=20_000)
    return server.players[page.evaluate("window.openmrt.player")]


def test_two_pages_play_and_their_controls_reach_their_own_sessions(served):
    server, url = served
    with _playwright()() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            pages = [browser.new_context(viewport={"width": 1100, "height": 900}).new_page() for _ in range(2)]
            errors: list[str] = []
            for page in pages:
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(url)
                page.click("#start")
            a, b = (_player(server, p) for p in pages)
            assert a is not b and a.session is not b.session

            pages[0].locator('.key[data-pitch="60"]').click()  # pointer down then up: note on, then off
            pages[1].locator("#temperature").fill("0.8")  # a slider moved: input + change events
            pages[1].locator("#prompt-list input[type=text]").first.fill("jazz piano")
            pages[1].click("#prompt-add")
            pages[1].locator("#prompt-list input[type=text]").nth(1).fill("drum and bass")
            pages[1].locator("#blend").click(position={"x": 120, "y": 35})  # on the first prompt of the blend
            for page in pages:  # both play on, side by side, for 10 s of audio each
                page.wait_for_function(f"window.openmrt.samplesPlayed >= {int(SECONDS * 48000)}", timeout=60_000)

            assert {"type": "note_on", "pitch": 60, "velocity": 100} in a.history
            assert not any(h["type"] == "note_on" for h in b.history)
            assert {"type": "set", "name": "temperature", "value": 0.8} in b.history
            assert b.live.snapshot().temperature == 0.8 and a.live.snapshot().temperature != 0.8
            assert b.live.snapshot().prompts == (("jazz piano", 1.0), ("drum and bass", 0.0))  # the blend's weights
            assert a.live.snapshot().prompts == ()
            for page, player in zip(pages, (a, b), strict=True):
                got = page.evaluate("window.openmrt.samplesReceived")
                assert got >= SECONDS * 48000 and got <= player.sent_samples
            pages[0].wait_for_function("window.openmrt.status !== null", timeout=10_000)
            assert "frames" in pages[0].inner_text("#v-drops")
            assert not errors, errors
            SCREENSHOT.parent.mkdir(exist_ok=True)
            pages[1].screenshot(path=str(SCREENSHOT), full_page=True)  # the one with prompts and a blend
        finally:
            browser.close()
