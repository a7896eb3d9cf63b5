"""The OSC server: 1,000 malformed messages over real UDP leave it running; each is counted and logged."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from pythonosc.udp_client import SimpleUDPClient

from openmrt.controls import LiveControls
from openmrt.io.osc import ROUTES, SESSION_ROUTES, OscServer

NAN, INF = float("nan"), float("inf")

# (address, args, words the error line must contain)
MALFORMED = [
    ("/cfg/style", ["abc"], "cfg_style"),  # wrong types
    ("/topk", ["ten"], "top_k"),
    ("/topk", [40.5], "top_k"),
    ("/noteon", ["a", 100], "note pitch"),
    ("/temperature", [b"\x00\x01"], "temperature"),
    ("/autostrum", ["yes"], "auto_strum"),
    ("/drums", [2.5], "drums"),
    ("/prompt", [0, 3, 1.0], "prompt 0"),
    ("/cfg/notes", [NAN], "cfg_notes"),  # NaN / inf
    ("/temperature", [NAN], "temperature"),
    ("/noteon", [NAN, 100], "note pitch"),
    ("/cfg/style", [INF], "cfg_style"),
    ("/weight", [0, NAN], "weight"),
    ("/cfg/drums", [9.0], "[-1.0, 7.0]"),  # out of range
    ("/topk", [0], "[1, 1024]"),
    ("/topk", [5000], "[1, 1024]"),
    ("/width", [300], "unmask_width"),
    ("/seed", [-5], "seed"),
    ("/noteon", [200, 100], "note pitch"),
    ("/cc", [64, 300], "control 64 value"),
    ("/prompt", [9, "x", 1.0], "prompt slot"),
    ("/temperature", [-1.0], "temperature"),
    ("/style_tokens", [1024] + [0] * 11, "style_tokens[0]"),
    ("/seed_rotation", [1001], "seed_rotation"),
    ("/volume", [1.0], "unknown address"),  # unknown addresses
    ("/cfg/bass", [1.0], "unknown address"),
    ("/noteon/extra", [60], "unknown address"),
    ("/", [], "unknown address"),
    ("/noteon", [], "expects 1 or 2"),  # wrong argument counts
    ("/cc", [64], "expects 2"),
    ("/prompt", [0, "x"], "expects 3"),
    ("/reset", [1], "expects 0"),
    ("/style_tokens", [1, 2, 3], "expects 12"),
    ("/cfg/style", [1.0, 2.0], "expects 1"),
]
GARBAGE = [b"garbage", b"", b"/x\x00\x00,zz\x00", b"#bundle\x00short"]  # not decodable as OSC


def _wait_for(server: OscServer, n: int, timeout: float = 10.0) -> None:
    """Bounded wait until the server has handled n messages (UDP to localhost is fast but asynchronous)."""
    deadline = time.monotonic() + timeout
    while server.handled < n and time.monotonic() < deadline:
        time.sleep(0.002)
    assert server.handled == n, f"server handled {server.handled} of {n} messages"


@pytest.fixture
def osc():
    resets = []
    live = LiveControls(on_reset=lambda: resets.append(1))
    with OscServer(live, host="127.0.0.1", port=0) as server:
        yield server, live, resets
    assert not server.alive  # stopped by the context manager


def test_thousand_malformed_messages(osc, caplog):
    server, live, resets = osc
    client = SimpleUDPClient("127.0.0.1", server.port)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    valid = [
        ("/cfg/style", 5.0), ("/topk", 50), ("/temperature", 0.5), ("/drums", "off"), ("/autostrum", 0),
        ("/prompt", [0, "disco funk", 2.0]), ("/width", 3.0), ("/noteon", [60, 100]), ("/noteon", [64.0, 90.0]),
        ("/noteoff", 64), ("/reset", []), ("/noteon", [62, 80]), ("/seed", 7),
    ]
    sent = bad = 0
    caplog.set_level(logging.WARNING, logger="openmrt.io.osc")
    with raw:
        for i in range(1000):
            if i % 50 == 0:
                raw.sendto(GARBAGE[(i // 50) % len(GARBAGE)], ("127.0.0.1", server.port))
            else:
                address, args, _ = MALFORMED[i % len(MALFORMED)]
                client.send_message(address, args)
            sent, bad = sent + 1, bad + 1
            if i % 77 == 0 and valid:
                client.send_message(*valid.pop(0))
                sent += 1
            if sent % 40 == 0:  # keep the socket buffer from overflowing on a loaded machine
                _wait_for(server, sent)
        for v in valid:
            client.send_message(*v)
            sent += 1
        _wait_for(server, sent)

    assert server.alive
    assert server.rejected == bad == 1000 and server.accepted == sent - 1000 == 13
    c = live.snapshot()
    assert (c.cfg_style, c.top_k, c.temperature, c.drums, c.auto_strum) == (5.0, 50, 0.5, "off", False)
    assert c.prompts == (("disco funk", 2.0),) and c.unmask_width == 3 and c.seed == 7
    assert resets == [1]
    assert live.frame()[1][62] == 2  # only the note played after the reset: onset (Auto-Strum off)
    rejected = [r for r in caplog.records if r.name == "openmrt.io.osc" and r.levelno == logging.WARNING]
    assert len(rejected) == 1000

    client.send_message("/cfg/notes", 2.0)  # still serving after all that
    _wait_for(server, sent + 1)
    assert live.snapshot().cfg_notes == 2.0


@pytest.mark.parametrize(("address", "args", "words"), MALFORMED)
def test_error_lines_say_what_was_wrong(address, args, words):
    server = OscServer(LiveControls(), port=0)  # not started: handle_message is the same code the thread runs
    assert server.handle_message(address, list(args)) is False
    line = server.last_errors[-1]
    assert line.startswith(address) and words in line, line
    assert server.rejected == 1 and server.accepted == 0


def test_garbage_datagrams_are_counted():
    server = OscServer(LiveControls(), port=0)
    for g in GARBAGE:
        server.handle_packet(g)
    assert server.rejected == len(GARBAGE)  # one count per datagram
    assert sum("undecodable" in e for e in server.last_errors) == 3  # the 4th decodes (bad type tag) to "/x": unknown


def test_a_target_bug_is_contained():
    class Broken(LiveControls):
        def reset(self) -> None:
            raise RuntimeError("boom")

    server = OscServer(Broken(), port=0)
    assert server.handle_message("/reset", []) is False
    assert "internal error RuntimeError: boom" in server.last_errors[-1]


def test_every_route_has_a_valid_example():
    """Guards the table against typos: one valid message per address must be accepted."""
    examples = {
        "/prompt": [0, "piano", 1.0], "/weight": [0, 2.0], "/prompts/clear": [], "/style_tokens": [5] * 12,
        "/style_tokens/clear": [], "/cfg/style": [2.0], "/cfg/notes": [2.0], "/cfg/drums": [2.0],
        "/temperature": [1.0], "/topk": [10], "/seed": [3], "/seed_rotation": [4], "/drums": ["auto"],
        "/autostrum": [True], "/width": [5], "/solo": [1], "/midigate": [1], "/noteon": [60], "/noteoff": [60, 0],
        "/cc": [64, 127], "/allnotesoff": [], "/reset": [],
    }
    assert set(examples) == set(ROUTES) - SESSION_ROUTES
    server = OscServer(LiveControls(), port=0)
    for address, args in examples.items():
        assert server.handle_message(address, args), server.last_errors
    for address in SESSION_ROUTES:  # state, prefill, guidance: only a session (openmrt play's target) has them
        assert not server.handle_message(address, [] if address.endswith(("clear", "silence")) else ["x"])
        assert "openmrt play" in server.last_errors[-1] or "expects" in server.last_errors[-1]


def test_accepted_messages_echo_the_state_they_left():
    lines = []
    server = OscServer(LiveControls(), port=0, echo=lines.append)
    for address, args in [("/temperature", [1.1]), ("/solo", [1]), ("/seed", [7]), ("/noteon", [60, 90]),
                          ("/topk", ["ten"])]:
        server.handle_message(address, args)
    assert lines == ["osc: /temperature 1.1 -> temperature 1.1", "osc: /solo 1 -> unmask_width 127",
                     "osc: /seed 7 -> seed 7 (from the next reset: /reset)", "osc: /noteon 60 90 -> note 60 on"]
