"""``openmrt generate`` (offline), ``openmrt play`` (live) and ``openmrt devices``."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from openmrt import tokens as tk
from openmrt.controls import DEFAULTS, Controls, LiveControls, parse_token_prompt
from openmrt.device import add_device_args
from openmrt.engine.chunks import is_v1, open_stream
from openmrt.engine.live import parse_guidance
from openmrt.engine.session import BUFFER_PRESETS
from openmrt.errors import CheckpointError, ConfigError, ControlError
from openmrt.frame import FRAME_SAMPLES, SAMPLE_RATE

DEFAULT_MODEL = "auto"  # best installed bundle that keeps up here; random:tiny (with a note) until the demo ships
MODEL_HELP = ("model bundle: auto, demo, mrt2_small, mrt2_base, mrt_v1_base, mrt_v1_large, PATH or random:LM[+CODEC] "
              "(default auto)")
STATUS_SECONDS = 2.0


def fresh_path(name: str) -> Path:
    """``name`` in the current folder, or ``stem-2.ext``, ``stem-3.ext``, ... : the first that does not exist, so
    a command run without ``-o`` never overwrites what an earlier run wrote."""
    path, n = Path(name), 2
    while path.exists():
        path, n = Path(f"{Path(name).stem}-{n}{Path(name).suffix}"), n + 1
    return path


def _style_tokens(arg: str | None) -> tuple[int, ...] | None:
    if arg is None:
        return None
    toks = parse_token_prompt(arg if arg.startswith("musiccoca:") else "musiccoca:" + arg)
    if toks is None:
        raise ControlError(f"--style-tokens: expected 12 comma-separated ints 0..1023 or -1, got {arg!r}")
    return toks


def _prompts(items: list[str]) -> tuple[tuple[str, float], ...]:
    out = []
    for item in items:
        text, sep, weight = item.rpartition(":")
        if not sep or not weight.replace(".", "", 1).isdigit():
            text, weight = item, "1"
        out.append((text, float(weight)))
    return tuple(out)


def controls_from_args(args: argparse.Namespace) -> Controls:
    """A validated ``Controls`` from the shared command-line options (ControlError names the bad one)."""
    return Controls(
        prompts=_prompts(args.prompt),
        style_tokens=_style_tokens(args.style_tokens),
        drums=args.drums,
        cfg_style=args.cfg_style, cfg_notes=args.cfg_notes, cfg_drums=args.cfg_drums,
        temperature=args.temperature, top_k=args.top_k, seed=args.seed, seed_rotation=args.seed_rotation,
        auto_strum=not args.no_auto_strum, unmask_width=args.width,
    )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def choose_style(bundle, style: str | None, needed: bool):
    """The style model that turns prompts into this bundle's style tokens, and says which (one rule for play and
    generate): --style when given; else the bundle's own; else MusicCoCa for an official bundle; else the shipped
    demo style model. None when ``needed`` is False and MusicCoCa is missing for an official bundle."""
    from openmrt.style import load_style

    if style:
        return load_style(style)
    if bundle.style is not None:
        return bundle.style
    if is_v1(bundle):  # v1 reads MusicCoCa tokens too; the demo style model's only stand in for them
        try:
            return load_style("musiccoca")
        except CheckpointError as e:
            _stderr(f"openmrt: note: MusicCoCa is not installed ({e}); v1 prompts use the demo style model's tokens, "
                    "which v1 was not trained on")
            return load_style("demo")
    if bundle.lm.cfg.name.startswith("mrt2"):  # the official LMs read MusicCoCa tokens; nothing else fits them
        try:
            return load_style("musiccoca")
        except CheckpointError as e:
            if needed:
                raise
            _stderr(f"openmrt: note: prompts are off until MusicCoCa is installed ({e})")
            return None
    _stderr(f"openmrt: {bundle.name} has no style model of its own: prompts use the shipped demo style model "
            "(--style demo; --style musiccoca for the official one)")
    return load_style("demo")


def compute_device(args: argparse.Namespace) -> str:
    """--device is the compute device everywhere; a sound card given there gets a clear error."""
    dev = (args.device or "auto").strip()
    if dev.lower() == "auto" or dev.lower() == "cpu" or dev.lower().startswith("cuda"):
        return dev
    raise ConfigError(f"--device {dev!r}: --device is the compute device (auto, cpu, cuda, cuda:N); for a sound card "
                      f"use --audio-device {dev!r} (`openmrt devices` lists them)")


def guidance_from_args(args: argparse.Namespace, controls: Controls) -> dict[str, float] | None:
    """Batched CFG (extra LM rows): --guidance style=3,notes=1, or --cfg-batch (the --cfg-style/--cfg-notes scales)."""
    if args.guidance:
        return parse_guidance(args.guidance)
    if args.cfg_batch:
        return {"musiccoca": controls.cfg_style, "notes": controls.cfg_notes}
    return None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    add_device_args(p)
    p.add_argument("--style", help="style model for --prompt: demo (ours), musiccoca (official files) or a file "
                                   "(default: the bundle's own, MusicCoCa for official bundles, else demo)")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT[:WEIGHT]", help="style prompt (repeatable)")
    p.add_argument("--style-tokens", metavar="A,B,...,L", help="12 style tokens 0..1023 (or -1) instead of prompts")
    p.add_argument("--drums", choices=["auto", "off", "on"], default="auto")
    p.add_argument("--cfg-style", type=float, default=DEFAULTS["cfg_style"])
    p.add_argument("--cfg-notes", type=float, default=DEFAULTS["cfg_notes"])
    p.add_argument("--cfg-drums", type=float, default=DEFAULTS["cfg_drums"])
    p.add_argument("--guidance", metavar="style=S,notes=N",
                   help="batched CFG: also mix logits of extra LM rows with these scales (costs one row each)")
    p.add_argument("--cfg-batch", action="store_true", help="batched CFG with the --cfg-style/--cfg-notes scales")
    p.add_argument("--temperature", type=float, default=DEFAULTS["temperature"])
    p.add_argument("--top-k", type=int, default=DEFAULTS["top_k"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--seed-rotation", type=int, default=DEFAULTS["seed_rotation"],
                   help="0..1000: every reset restarts sampling from seed + rotation")
    p.add_argument("--width", type=int, default=DEFAULTS["unmask_width"],
                   help="unmask width around played notes (127 = solo)")
    p.add_argument("--no-auto-strum", action="store_true", help="send onsets then held notes (Auto-Strum off)")


def load_model(args: argparse.Namespace):
    """The bundle that --model, --device and --dtype name (every command that plays loads it this way)."""
    from openmrt.engine.bundle import load_bundle

    return load_bundle(args.model, seed=0, device=compute_device(args), dtype=args.dtype)


def cmd_generate(args: argparse.Namespace) -> int:
    import soundfile as sf

    from openmrt.engine.offline import render
    from openmrt.io.midi import MidiTimeline

    controls = controls_from_args(args)
    guidance = guidance_from_args(args, controls)
    if args.seconds <= 0 or not np.isfinite(args.seconds):
        raise ControlError(f"--seconds must be a positive number, got {args.seconds}")
    out = Path(args.output) if args.output else fresh_path("generated.wav")
    if out.suffix.lower() not in (".wav", ".flac"):
        raise ControlError(f"-o: write .wav or .flac, not {out.name}")
    timeline = MidiTimeline.from_file(args.notes) if args.notes else None
    bundle = load_model(args)
    if args.context_audio and not is_v1(bundle):
        raise ControlError("--context-audio is for v1 bundles (mrt_v1_base/large); MRT2 bundles continue audio with "
                           "`openmrt play` and /prefill/audio")
    style_tokens = None
    if controls.prompts and controls.style_tokens is None:
        style_tokens = choose_style(bundle, args.style, needed=True).tokens_for(controls.prompts)
    live = LiveControls(controls)
    notes_asked = []

    def cond_for_frame(t: int) -> np.ndarray:
        if timeline is not None:
            timeline.feed(t, live)
        _, notes, cond = live.frame(style_tokens, style_levels=tk.NUM_STYLE)
        notes_asked.append(notes)
        return cond

    n = int(round(args.seconds * SAMPLE_RATE))
    # v1: nothing to overlap offline, controls per chunk. MRT2: eager, as compiling costs more than it saves
    # unless the render is long (~10 s of compile, cached, against ~7 ms a frame).
    offline = {"prefetch": False} if is_v1(bundle) else {"speed": bundle.speed.uncompiled()}
    stream = open_stream(bundle, seed=controls.seed, temperature=controls.temperature, top_k=controls.top_k,
                         guidance=guidance, **offline)
    if is_v1(bundle):
        _stderr(f"openmrt: {stream.describe()}")
        if args.context_audio:
            from openmrt.audio import read_audio

            used = stream.set_context_audio(read_audio(args.context_audio))
            _stderr(f"openmrt: continuing {args.context_audio} ({used} frames of context)")
    _stderr(f"openmrt: generating {args.seconds:g} s with {bundle.name}")
    audio, _ = render(stream, n, cond_for_frame, progress=True)
    stream.close()
    sf.write(str(out), audio, SAMPLE_RATE)
    _stderr(f"wrote {out} ({len(audio)} samples, 48 kHz stereo)")
    if args.plot:
        from openmrt.engine.plots import notes_vs_spectrogram

        notes_vs_spectrogram(np.stack(notes_asked[: -(-n // FRAME_SAMPLES)]), audio, args.plot)
        _stderr(f"wrote {args.plot}")
    return 0


class DropWatch:
    """Says once when drops repeat: frames dropped in two status periods of the last three."""

    def __init__(self, buffer: int) -> None:
        self.buffer, self.last, self.recent, self.said = buffer, 0, [], False

    def update(self, dropped_frames: int) -> str | None:
        self.recent = (self.recent + [dropped_frames > self.last])[-3:]
        self.last = dropped_frames
        if self.said or sum(self.recent) < 2:
            return None
        self.said = True
        bigger = [b for b in BUFFER_PRESETS if b > self.buffer]
        fix = f"try --buffer {bigger[0]} (more lead, more latency)" if bigger else \
            "the model is too slow for this machine: try a smaller --model, or --device cuda"
        return f"openmrt: frames keep dropping (the model is not keeping up): {fix}"


def status_line(st, bad_controls: int) -> str:
    return (f"frames {st.frames}  compute p50 {st.compute_ms_p50:.1f} ms p99 {st.compute_ms_p99:.1f} ms  "
            f"buffer {st.buffer_fill} samples  dropped {st.dropped_frames} frames  bad controls {bad_controls}")


def _typed_commands(target, dispatch, stop: threading.Event) -> threading.Thread:
    """Typed commands on the terminal: one-letter keys (h lists them) or any OSC address with its arguments."""
    from openmrt.engine.live import parse_line

    def run() -> None:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                if len(line) == 1:
                    if not target.key(line, dispatch):
                        stop.set()
                        return
                    continue
                dispatch(*parse_line(line))
            except ControlError as e:
                _stderr(f"keys: {e}")

    t = threading.Thread(target=run, name="openmrt-keys", daemon=True)
    t.start()
    return t


def cmd_play(args: argparse.Namespace) -> int:
    from openmrt.engine.live import make_instrument
    from openmrt.engine.session import Session
    from openmrt.io.audio_out import AudioOutput
    from openmrt.io.osc import OscServer
    from openmrt.io.recorder import Recorder

    controls = controls_from_args(args)
    guidance = guidance_from_args(args, controls)
    bundle = load_model(args)
    source = choose_style(bundle, args.style, needed=bool(controls.prompts))  # also for /prompt sent later
    player = make_instrument(controls, source, lambda frame_input: Session(
        bundle, frame_input, buffer_samples=args.buffer, seed=controls.seed, seed_rotation=controls.seed_rotation,
        guidance=guidance), echo=_stderr)
    session, target, style = player.session, player.target, player.style
    session.on_fault = lambda line: _stderr(f"openmrt: {line}")  # model faults, a lost sound card: said once
    with contextlib.ExitStack() as on_exit:  # whatever opened is closed again, also when a later step fails
        on_exit.callback(style.close)
        on_exit.callback(target.close)
        out = AudioOutput(session.read, device=args.audio_device,  # opened first: no sound card, nothing started
                          on_lost=session.pause)  # the card went away: pause, keep the state and the recording
        if args.record:
            out.recorder = Recorder(args.record, on_error=lambda line: _stderr(f"openmrt: {line}"))
            on_exit.callback(lambda: (out.recorder.close(), _stderr(f"recorded {args.record}")))
        midi = None
        if args.midi is not None:
            from openmrt.io.midi import MidiInput

            midi = MidiInput(target, port=args.midi or None, backend=args.midi_backend, echo=_stderr)
            on_exit.callback(lambda: (midi.close(), _stderr(
                f"openmrt: MIDI received {midi.received} messages ({midi.rejected} rejected)")))
            _stderr(f"openmrt: MIDI input {midi.name!r} ({midi.backend})")
        osc = OscServer(target, host=args.osc_host, port=args.osc_port, echo=_stderr).start()
        on_exit.callback(osc.stop)
        keys = OscServer(target, echo=_stderr, name="keys")  # never started: typed commands use its dispatch
        stop = threading.Event()
        session.start()
        on_exit.callback(session.stop)
        out.start()
        on_exit.callback(out.close)
        _stderr(f"openmrt: playing {bundle.name}; OSC on {args.osc_host}:{osc.port}; Ctrl-C stops")
        if sys.stdin is not None and sys.stdin.isatty():
            _typed_commands(target, keys.handle_message, stop)
            _stderr("openmrt: type h + Enter for keys (s save, l load, r reset, q quit) or an OSC address, e.g. "
                    "`/temperature 1.1`")
        watch = DropWatch(args.buffer)
        # Ctrl-C must reach this thread: audio and MIDI libraries may start their threads with signals blocked
        # and leave the caller's mask so; a SIGINT blocked everywhere would never stop play.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        try:
            t_end = time.monotonic() + args.seconds if args.seconds else None
            while not stop.is_set() and (t_end is None or time.monotonic() < t_end):
                stop.wait(min(STATUS_SECONDS, max(0.0, t_end - time.monotonic())) if t_end else STATUS_SECONDS)
                st = session.stats()
                _stderr(status_line(st, st.extra["control_errors"] + osc.rejected + keys.rejected + target.errors))
                hint = watch.update(st.dropped_frames)
                if hint:
                    _stderr(hint)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from openmrt.io.audio_out import list_devices
    from openmrt.io.midi import find_backend, input_ports

    print("audio outputs (--audio-device):")
    print(list_devices())
    try:
        backend = find_backend(args.midi_backend)
    except ConfigError as e:  # no MIDI system on this machine: say what to start
        print(f"MIDI inputs: none ({e})")
        return 0
    print(f"MIDI inputs ({backend}):")
    print("\n".join(input_ports(backend)) or "(none)")
    return 0


def cmd_bench_latency(args: argparse.Namespace) -> int:
    import json

    from openmrt.engine.latency import STAGES, measure

    bundle = load_model(args)
    result = measure(bundle, trials=args.trials, buffer_samples=args.buffer)
    result["model"] = bundle.name
    for stage in STAGES:
        q = result["stages"].get(stage, {})
        print(f"{stage:18s} p50 {q.get(50, float('nan')):7.1f}  p95 {q.get(95, float('nan')):7.1f}  "
              f"p99 {q.get(99, float('nan')):7.1f} ms")
    print(f"trials {result['trials']}, dropped {result['dropped_frames']} frames")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    import json

    from openmrt.engine.soak import plot, soak

    bundle = load_model(args)
    result = soak(bundle, args.seconds, buffer_samples=args.buffer, hog=args.hog)
    print(f"{result['model']}: {result['frames']} frames, dropped {result['dropped_frames']}, compute p50 "
          f"{result['p50_ms']:.1f} p99 {result['p99_ms']:.1f} max {result['max_ms']:.1f} ms")
    out = Path(args.out) if args.out else fresh_path("soak.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    png = out.with_suffix(".png")
    plot(result, str(png))
    print(f"wrote {out} and {png}")
    return 0


def cmd_bench_longrun(args: argparse.Namespace) -> int:
    import json

    from openmrt.eval.longrun import composed_timeline, longrun, plot
    from openmrt.io.midi import MidiTimeline

    timeline = MidiTimeline.from_file(args.notes) if args.notes else composed_timeline()
    bundle = load_model(args)  # says which model (and why, for auto)
    _stderr(f"openmrt: {args.minutes:g} min of {bundle.name} playing {timeline.source} on repeat, judged every "
            f"{args.window_minutes:g} min")
    result = longrun(bundle, timeline, args.minutes, args.window_minutes, seed=args.seed, echo=_stderr)
    out = Path(args.out) if args.out else fresh_path("longrun.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    png = out.with_suffix(".png")
    plot(result, png)
    s = result["summary"]
    print(f"{result['model']}: onset F1 first {s['onset_f1_first']} last {s['onset_f1_last']}, loudness spread "
          f"{s['lufs_spread_lu']} LU, {s['nonfinite_samples']} NaN/inf samples, {s['failed_frames']} failed frames; "
          f"{result['wall_seconds_per_audio_minute']} s per minute of audio")
    print(f"wrote {out} and {png}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("generate", help="generate audio offline to a file")
    _add_common(g)
    g.add_argument("--seconds", type=float, default=10.0)
    g.add_argument("--notes", metavar="FILE.mid", help="MIDI file: the notes to play, frame by frame")
    g.add_argument("--plot", metavar="PNG", help="also draw the notes asked for over the output spectrogram")
    g.add_argument("--context-audio", metavar="FILE", help="v1: continue this audio (its last 10 s are the context)")
    g.add_argument("-o", "--out", "--output", dest="output",
                   help="output .wav or .flac (default: generated.wav here, or the first free generated-N.wav)")
    g.set_defaults(func=cmd_generate)

    p = sub.add_parser("play", help="play live: audio out, MIDI in, OSC control")
    _add_common(p)
    p.add_argument("--audio-device", help="sound card (index or name; `openmrt devices` lists them)")
    for alias in ("--output-device", "--sound-device"):
        p.add_argument(alias, dest="audio_device", help=argparse.SUPPRESS)
    p.add_argument("--buffer", type=int, default=BUFFER_PRESETS[0], choices=BUFFER_PRESETS,
                   help="buffer lead in samples (more: fewer dropped frames, more latency)")
    p.add_argument("--midi", nargs="?", const="", help="MIDI input port name (no name: a virtual port 'openmrt')")
    p.add_argument("--midi-backend", metavar="alsa|jack|NAME",
                   help="MIDI system (default: the ALSA sequencer when it works, else JACK)")
    p.add_argument("--osc-host", default="127.0.0.1")
    p.add_argument("--osc-port", type=int, default=9000)
    p.add_argument("--record", metavar="FILE.wav", help="record what is played (never overwrites)")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    p.set_defaults(func=cmd_play)

    d = sub.add_parser("devices", help="list audio outputs and MIDI inputs")
    d.add_argument("--midi-backend", metavar="alsa|jack|NAME", help="MIDI system (default: ALSA, else JACK)")
    d.set_defaults(func=cmd_devices)

    b = sub.add_parser("bench", help="measurements").add_subparsers(dest="bench", required=True)
    lat = b.add_parser("latency", help="MIDI note-on to sound, p50/p95/p99 with the breakdown")
    lat.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    add_device_args(lat)
    lat.add_argument("--trials", type=int, default=40)
    lat.add_argument("--buffer", type=int, default=BUFFER_PRESETS[0], choices=BUFFER_PRESETS)
    lat.add_argument("-o", "--out", help="JSON file for the results")
    lat.set_defaults(func=cmd_bench_latency)
    soak = b.add_parser("soak", help="a live session into a null sink at real-time pace: drops and frame times")
    soak.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    add_device_args(soak)
    soak.add_argument("--seconds", type=float, default=60.0)
    soak.add_argument("--buffer", type=int, default=BUFFER_PRESETS[0], choices=BUFFER_PRESETS)
    soak.add_argument("--hog", action="store_true", help="run a one-core busy loop beside it")
    soak.add_argument("-o", "--out", help="JSON file, a PNG timeline beside it (default: soak.json here, or the "
                      "first free soak-N.json)")
    soak.set_defaults(func=cmd_bench_soak)
    lr = b.add_parser("longrun", help="quality over a long offline stream of a MIDI file on repeat: onset F1, "
                      "loudness, spectral centroid, NaN per window")
    lr.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    add_device_args(lr)
    lr.add_argument("--minutes", type=float, default=30.0, help="minutes of audio to make")
    lr.add_argument("--window-minutes", type=float, default=5.0, help="judge the audio in windows this long")
    lr.add_argument("--notes", metavar="FILE.mid", help="MIDI file to repeat (default: a composed solo piano piece)")
    lr.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    lr.add_argument("-o", "--out", help="JSON file, a PNG plot beside it (default: longrun.json here, or the first "
                    "free longrun-N.json)")
    lr.set_defaults(func=cmd_bench_longrun)
