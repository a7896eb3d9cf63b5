"""``openmrt serve`` over Starlette's TestClient: the protocol, the limits and the security rules, with the tiny
random model playing (real sessions, real frame loops)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient  # needs httpx (dev extras)

from openmrt.controls import LiveControls
from openmrt.errors import ConfigError, ControlError
from openmrt.server import protocol
from openmrt.server.app import Server
from openmrt.server.cli import resolve_token

FRAME_BYTES = 1920 * 2 * 2  # one 40 ms stereo PCM16 frame


@pytest.fixture(scope="module")
def bundle():
    from openmrt.engine.bundle import load_bundle

    return load_bundle("random:tiny", seed=0, device="cpu", dtype="float32")


def _server(bundle, **kw) -> Server:
    return Server(bundle, **kw)


def _freed(server: Server, seconds: float = 20.0) -> bool:
    """Whether every player left (the server cleans up after the page has gone: wait for it, bounded)."""
    deadline = time.monotonic() + seconds
    while server.players and time.monotonic() < deadline:
        time.sleep(0.05)
    return not server.players


def recv_json(ws, kind: str | None = None, limit: int = 2000) -> tuple[dict, int]:
    """The next JSON message (of ``kind``), skipping audio; returns it and the audio bytes skipped."""
    audio = 0
    for _ in range(limit):
        m = ws.receive()
        if m.get("bytes") is not None:
            assert len(m["bytes"]) == FRAME_BYTES
            audio += len(m["bytes"])
            continue
        msg = json.loads(m["text"])
        if kind is None or msg["type"] == kind:
            return msg, audio
    raise AssertionError(f"no {kind} message in {limit} messages")


def recv_audio(ws, frames: int) -> np.ndarray:
    out = []
    while len(out) < frames:
        m = ws.receive()
        if m.get("bytes") is not None:
            out.append(np.frombuffer(m["bytes"], "<i2").reshape(-1, 2))
    return np.concatenate(out)


def keeps_playing(ws, player, frames: int = 3) -> bool:
    """Whether the player's session makes ``frames`` more frames while its audio keeps arriving (bounded wait:
    up to 1000 frames of audio, 40 s, however loaded the machine)."""
    start = player.session.stats().frames
    for _ in range(1000):
        recv_audio(ws, 1)
        if player.session.stats().frames >= start + frames:
            return player.session.running
    return False


# -- protocol ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    '{"type": "note_on", "pitch": 60}', '{"type": "note_on", "pitch": 60, "velocity": 12}',
    '{"type": "note_off", "pitch": 0}', '{"type": "all_notes_off"}', '{"type": "cc", "control": 64, "value": 127}',
    '{"type": "prompts", "prompts": [{"text": "jazz", "weight": 1.5}]}', '{"type": "prompts", "prompts": []}',
    '{"type": "set", "name": "temperature", "value": 1.1}', '{"type": "set", "name": "drums", "value": "off"}',
    '{"type": "set", "name": "solo", "value": true}', '{"type": "reset"}', '{"type": "ping", "t": 12.5}'])
def test_valid_messages_parse(text):
    assert protocol.parse(text).type == json.loads(text)["type"]


@pytest.mark.parametrize("text, words", [
    ("not json", "not JSON"), ("[1, 2]", "invalid"), ('{"type": "explode"}', "type"),
    ('{"type": "note_on"}', "pitch"), ('{"type": "note_on", "pitch": 128}', "pitch"),
    ('{"type": "note_on", "pitch": "60"}', "pitch"), ('{"type": "note_on", "pitch": true}', "pitch"),
    ('{"type": "note_on", "pitch": 60, "extra": 1}', "extra"), ('{"type": "ping", "t": NaN}', "t"),
    ('{"type": "set", "name": "volume", "value": 1}', "name"),
    ('{"type": "prompts", "prompts": [' + ",".join(['{"text": "a", "weight": 1}'] * 7) + "]}", "prompts"),
    ('{"type": "prompts", "prompts": [{"text": "a", "weight": -1}]}', "weight"),
    ('{"type": "reset", "pad": "' + "x" * 9000 + '"}', "characters"), ("[" * 4000 + "]" * 4000, "not JSON|invalid"),
])
def test_bad_messages_raise_control_errors(text, words):
    with pytest.raises(ControlError, match=words):
        protocol.parse(text)


def test_values_are_checked_by_the_controls():
    live = LiveControls()
    reply, msg = protocol.handle(live, '{"type": "set", "name": "temperature", "value": -1}')
    assert reply["type"] == "error" and "temperature" in reply["message"] and msg is None
    reply, _ = protocol.handle(live, '{"type": "set", "name": "top_k", "value": 7}')
    assert reply == {"type": "ok", "for": "set"} and live.snapshot().top_k == 7
    reply, _ = protocol.handle(live, '{"type": "prompts", "prompts": [{"text": "a", "weight": 1}]}', has_style=False)
    assert reply["type"] == "error" and "style model" in reply["message"]
    reply, _ = protocol.handle(live, b"\x00\x01")
    assert reply["code"] == "bad_message" and "binary" in reply["message"]


def test_a_page_cannot_make_the_server_read_its_files(tmp_path):
    import soundfile as sf

    from openmrt.style import is_audio_prompt

    wav = tmp_path / "secret.wav"
    sf.write(wav, np.zeros((4800, 2)), 48000)
    assert is_audio_prompt(str(wav))  # what the style model would read as audio
    live = LiveControls()
    for text in (str(wav), f" {wav}".upper(), "song.flac ", "x.Mp3"):
        reply, _ = protocol.handle(live, json.dumps({"type": "prompts", "prompts": [{"text": text, "weight": 1}]}))
        assert reply["type"] == "error" and "audio-file prompts" in reply["message"]
    assert live.snapshot().prompts == ()


def _wav_bytes(seconds: float, sr: int = 48000) -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(int(seconds * sr)) / sr
    sf.write(buf, np.stack([np.sin(2 * np.pi * 220 * t)] * 2, axis=1) * 0.3, sr, format="WAV")
    return buf.getvalue()


def test_audio_prompts_are_uploaded_checked_and_played(bundle):
    from openmrt.style import load_style

    server = _server(bundle, style_source=load_style("demo"), token="upload-token")
    with TestClient(server.app) as client:
        assert client.post("/upload", content=_wav_bytes(1)).status_code == 403  # no token
        url = "/upload?token=upload-token"
        r = client.post(url, content=b"RIFF not really a wav" * 10)
        assert r.status_code == 415 and r.json()["code"] == "bad_audio"
        r = client.post(url, content=_wav_bytes(121, sr=8000))  # longer than the style model should read
        assert r.status_code == 415
        r = client.post(url, content=b"\0" * (10 * 2**20 + 1))
        assert r.status_code == 413 and r.json()["code"] == "too_large"
        r = client.post(url, content=_wav_bytes(2))
        assert r.status_code == 200 and r.json()["id"].startswith("upload:") and r.json()["seconds"] == 2.0
        uid = r.json()["id"]
        with client.websocket_connect("/ws?token=upload-token") as ws:
            player = server.players[recv_json(ws, "hello")[0]["player"]]
            ws.send_text(json.dumps({"type": "prompts", "prompts": [{"text": uid, "weight": 1},
                                                                    {"text": "warm pads", "weight": 0.5}]}))
            assert recv_json(ws, "ok")[0]["for"] == "prompts"
            (path, w), (text, _) = player.live.snapshot().prompts
            assert path == str(server.uploads[uid.split(":", 1)[1]]) and w == 1.0 and text == "warm pads"
            assert player.style.tokens(player.live.snapshot(), wait=True) is not None  # the style model read it
            assert player.style.errors == 0
            ws.send_text(json.dumps({"type": "prompts", "prompts": [{"text": "upload:nope", "weight": 1}]}))
            assert "no such upload" in recv_json(ws, "error")[0]["message"]
        upload_dir = Path(server._upload_dir.name)
    server.close()
    assert not upload_dir.exists()


def test_pcm16_is_interleaved_little_endian_and_clipped():
    a = np.array([[0.5, -0.5], [2.0, -2.0]], dtype=np.float32)
    pcm = np.frombuffer(protocol.encode_pcm16(a), "<i2")
    assert pcm.tolist() == [16383, -16383, 32767, -32767]


# -- the app -----------------------------------------------------------------------------------------------------------

def test_page_and_static_files_only_from_the_package(bundle):
    with TestClient(_server(bundle).app) as client:
        r = client.get("/")
        assert r.status_code == 200 and "<script src=\"/static/app.js\">" in r.text
        assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
        assert "registerProcessor" in client.get("/static/player-worklet.js").text
        for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/app.py",
                     "/static/%2e%2e%2f%2e%2e%2fpyproject.toml", "/static//etc/passwd", "/static/",
                     "/static/..%5capp.py", "/../pyproject.toml", "/static/sub/app.js"):
            r = client.get(path)
            assert r.status_code == 404, path
            assert "import" not in r.text and "root:" not in r.text


def test_player_gets_audio_and_controls_reach_its_session(bundle):
    server = _server(bundle)
    with TestClient(server.app) as client, client.websocket_connect("/ws") as ws:
        hello, _ = recv_json(ws, "hello")
        assert hello["sample_rate"] == 48000 and hello["frame_samples"] == 1920 and hello["format"] == "pcm16le"
        player = server.players[hello["player"]]
        audio = recv_audio(ws, 10)
        assert audio.shape == (19200, 2) and np.abs(audio).max() > 0  # the random model plays noise, not silence
        ws.send_text('{"type": "note_on", "pitch": 64, "velocity": 90}')
        assert recv_json(ws, "ok")[0] == {"type": "ok", "for": "note_on"}
        assert player.live.tracker.peek()[64] > 0
        ws.send_text('{"type": "set", "name": "temperature", "value": 0.7}')
        assert recv_json(ws, "ok")[0]["for"] == "set"
        assert player.live.snapshot().temperature == 0.7
        ws.send_text('{"type": "set", "name": "top_k", "value": 5000}')
        err, _ = recv_json(ws, "error")
        assert err["code"] == "bad_message" and "top_k" in err["message"]
        ws.send_text('{"type": "ping", "t": 3.5}')
        assert recv_json(ws, "pong")[0]["t"] == 3.5
        status, _ = recv_json(ws, "status")
        assert status["frames"] > 0 and status["accepted"] == 3 and status["rejected"] == 1
        assert {"buffer_fill", "late_frames", "skipped_frames", "compute_ms", "latency_ms"} <= set(status)
        assert [h["type"] for h in player.history] == ["note_on", "set", "ping"]
        assert keeps_playing(ws, player)  # still generating after the bad message
    assert _freed(server)  # the session was stopped and the slot freed


def test_server_full(bundle):
    server = _server(bundle, max_players=1)
    with TestClient(server.app) as client, client.websocket_connect("/ws") as first:
        recv_json(first, "hello")
        with client.websocket_connect("/ws") as second:
            err = second.receive_json()
            assert err["code"] == "server_full" and "try again" in err["message"]
        assert len(recv_audio(first, 3)) == 3 * 1920  # the first player plays on
        assert len(server.players) == 1


def test_token_is_required_when_set(bundle):
    server = _server(bundle, token="s3cret-token")
    with TestClient(server.app) as client:
        for url in ("/ws", "/ws?token=wrong", "/ws?token=s3cret-toke", "/ws?token="):
            with client.websocket_connect(url) as ws:
                err = ws.receive_json()
                assert err["code"] == "bad_token"
        assert server.players == {}
        with client.websocket_connect("/ws?token=s3cret-token") as ws:
            assert recv_json(ws, "hello")[0]["player"] >= 1


def test_listening_beyond_localhost_always_needs_a_token():
    assert resolve_token("127.0.0.1", None) is None
    assert resolve_token("localhost", None) is None
    made = resolve_token("0.0.0.0", None)
    assert made and len(made) >= 16 and made != resolve_token("0.0.0.0", None)
    assert resolve_token("::", None) and resolve_token("192.168.1.5", None)
    assert resolve_token("0.0.0.0", "given-token") == "given-token"
    with pytest.raises(ConfigError, match="8 characters"):
        resolve_token("0.0.0.0", "short")


def test_two_players_are_independent(bundle):
    server = _server(bundle)
    with TestClient(server.app) as client, client.websocket_connect("/ws") as a, \
            client.websocket_connect("/ws") as b:
        pa = server.players[recv_json(a, "hello")[0]["player"]]
        pb = server.players[recv_json(b, "hello")[0]["player"]]
        assert pa is not pb and pa.session is not pb.session
        a.send_text('{"type": "note_on", "pitch": 60}')
        b.send_text('{"type": "set", "name": "top_k", "value": 3}')
        recv_json(a, "ok"), recv_json(b, "ok")
        assert pa.live.tracker.peek()[60] > 0 and pb.live.tracker.peek()[60] <= 0
        assert pb.live.snapshot().top_k == 3 and pa.live.snapshot().top_k != 3
        assert len(recv_audio(a, 3)) and len(recv_audio(b, 3))


def test_rate_limit_drops_messages_but_not_the_stream(bundle):
    server = _server(bundle, rate=5, burst=5)
    with TestClient(server.app) as client, client.websocket_connect("/ws") as ws:
        player = server.players[recv_json(ws, "hello")[0]["player"]]
        for _ in range(60):
            ws.send_text('{"type": "all_notes_off"}')
        err, _ = recv_json(ws, "error")
        assert err["code"] == "rate_limited"
        recv_audio(ws, 5)
        assert player.rate_limited >= 40 and player.accepted <= 15


def _random_message(rng: random.Random) -> str | bytes:
    kinds = ["note_on", "note_off", "all_notes_off", "cc", "prompts", "set", "reset", "ping", "bogus", ""]
    names = list(protocol.SETTABLE) + ["volume", "", "__class__"]
    values = [0, 1, -1, 127, 128, 1e308, -1e308, 0.5, True, False, None, "on", "auto", "x" * 50, [], {}, [1, 2]]
    r = rng.random()
    if r < 0.1:  # raw garbage
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
    if r < 0.2:
        return "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(0, 64)))
    msg = {"type": rng.choice(kinds)}
    fields = ["pitch", "velocity", "control", "value", "name", "t", "prompts", "extra"]
    for key in rng.sample(fields, rng.randint(0, 4)):
        if key == "name":
            msg[key] = rng.choice(names)
        elif key == "prompts":
            msg[key] = [{"text": rng.choice(["", "a", 5]), "weight": rng.choice(values)}
                        for _ in range(rng.randint(0, 8))]
        else:
            msg[key] = rng.choice(values)
    text = json.dumps(msg)
    if rng.random() < 0.2:  # cut or corrupt valid JSON
        i = rng.randint(0, len(text))
        text = text[:i] + rng.choice(["", "}", "\x00", "NaN", '"']) + text[i + 1:]
    return text


def test_fuzz_ten_thousand_messages_keep_both_streams_going(bundle):
    server = _server(bundle, rate=1e6, burst=1e6)
    rng = random.Random(1234)
    n = 10_000
    with TestClient(server.app) as client, client.websocket_connect("/ws") as ws, \
            client.websocket_connect("/ws") as other:
        player = server.players[recv_json(ws, "hello")[0]["player"]]
        bystander = server.players[recv_json(other, "hello")[0]["player"]]
        for _ in range(n):
            m = _random_message(rng)
            ws.send_bytes(m) if isinstance(m, bytes) else ws.send_text(m)
        replies = 0
        while replies < n:  # one reply per message (audio and status interleaved)
            m = ws.receive()
            if m.get("text") is not None and json.loads(m["text"])["type"] in ("ok", "error", "pong"):
                replies += 1
        assert player.accepted + player.rejected == n and player.rejected > n // 2 and player.accepted > 0
        ws.send_text('{"type": "note_on", "pitch": 61}')
        assert recv_json(ws, "ok")[0]["for"] == "note_on"
        assert keeps_playing(ws, player) and keeps_playing(other, bystander)
        assert bystander.rejected == 0


def test_serve_command_beyond_localhost_prints_a_token_url_and_requires_it(monkeypatch, capsys):
    import uvicorn

    from openmrt.cli import main

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app, **kw))
    assert main(["serve", "--host", "0.0.0.0", "--port", "8799", "--model", "random:tiny", "--device", "cpu"]) == 0
    server = ran["app"].state.server
    assert ran["host"] == "0.0.0.0" and ran["port"] == 8799 and server.token
    assert f"http://127.0.0.1:8799/?token={server.token}" in capsys.readouterr().err
    with TestClient(ran["app"]) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_json()["code"] == "bad_token"

    assert main(["serve", "--max-players", "0", "--model", "random:tiny"]) == 1
    assert "--max-players" in capsys.readouterr().err
    assert main(["serve", "--host", "0.0.0.0", "--token", "abc", "--model", "random:tiny"]) == 1
    assert "8 characters" in capsys.readouterr().err
