"""Fuzzed OSC: random datagrams, mutated valid ones and well-formed messages with hostile arguments, straight into
the server's packet handler. Nothing escapes, every message is counted, and every rejection is the package's own
ControlError (never the "internal error" line a bug elsewhere would leave)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc import osc_packet
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from openmrt.controls import LiveControls
from openmrt.io.osc import ROUTES, OscServer

FUZZ = settings(max_examples=2000, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

ADDRESSES = st.sampled_from(sorted(ROUTES)) | st.text(min_size=1, max_size=20).map(lambda s: "/" + s)
ARG = (st.integers(-2**31, 2**31 - 1) | st.floats(width=32) | st.text(max_size=30) | st.booleans()
       | st.binary(max_size=16) | st.none())


def _server() -> OscServer:
    return OscServer(LiveControls(), name="fuzz")  # never started: the handler alone, no socket


def _datagram(address: str, args: list) -> bytes | None:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    try:
        return b.build().dgram
    except Exception:  # the builder refuses some values (e.g. a text with a NUL): no datagram to send
        return None


def _messages(data: bytes) -> int | None:
    try:
        return len(osc_packet.OscPacket(data).messages)
    except Exception:
        return None


def _check(server: OscServer, data: bytes) -> None:
    n = _messages(data)
    assert server.handled == (1 if n is None else n)  # each message counted once, an undecodable datagram too
    assert not any("internal error" in line for line in server.last_errors), list(server.last_errors)[-1]


@FUZZ
@given(st.binary(max_size=200))
def test_random_datagrams(data):
    s = _server()
    s.handle_packet(data)
    _check(s, data)


@FUZZ
@given(ADDRESSES, st.lists(ARG, max_size=14))
def test_messages_with_hostile_arguments(address, args):
    dgram = _datagram(address, args)
    if dgram is None:
        return
    s = _server()
    s.handle_packet(dgram)
    _check(s, dgram)
    if s.rejected:
        sent = address.split("\x00")[0][:20]  # OSC strings end at a NUL
        assert sent in s.last_errors[-1] or "undecodable" in s.last_errors[-1]


@settings(FUZZ, max_examples=1500)
@given(st.sampled_from(sorted(ROUTES)), st.lists(ARG, max_size=4), st.data())
def test_mutated_valid_datagrams_and_bundles(address, args, data):
    dgram = _datagram(address, args)
    if dgram is None:
        return
    if data.draw(st.booleans()):  # wrapped in a bundle
        b = OscBundleBuilder(IMMEDIATELY)
        b.add_content(OscMessageBuilder(address).build())
        b.add_content(OscMessageBuilder(address).build())
        dgram = b.build().dgram
    raw = bytearray(dgram)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    s = _server()
    dgram = bytes(raw[:cut] if data.draw(st.booleans()) else raw)
    s.handle_packet(dgram)
    _check(s, dgram)
