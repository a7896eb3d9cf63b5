"""``openmrt generate`` (offline), ``openmrt play`` (live) and ``openmrt devices``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from openmrt import tokens as tk
from openmrt.controls import Controls, LiveControls, parse_token_prompt
from openmrt.engine.frames import FrameStream
from openmrt.errors import ConfigError, ControlError

DEFAULT_MODEL = "auto"  # best installed bundle that keeps up here; random:tiny (with a note) until the demo ships
MODEL_HELP = "model bundle: auto, demo, mrt2_small, mrt2_base, PATH or random:LM[+CODEC] (default auto)"


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
        temperature=args.temperature, top_k=args.top_k, seed=args.seed,
        auto_strum=not args.no_auto_strum, unmask_width=args.width,
    )


def _check_style(controls: Controls, bundle, style: str | None = None) -> None:
    """Attach the --style source to the bundle; a bundle with none can't embed text/audio prompts."""
    if style:
        from openmrt.style import load_style

        bundle.style = load_style(style)
    if controls.prompts and controls.style_tokens is None and bundle.style is None:
        raise ConfigError(
            f"bundle {bundle.name!r} has no style model, so text/audio prompts cannot be embedded; pass "
            "--style demo (our style model) or --style musiccoca (the official files), or --style-tokens "
            "a,b,...,l (12 ints) instead")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--style", help="style model for --prompt: demo (ours), musiccoca (official files) or a file")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT[:WEIGHT]", help="style prompt (repeatable)")
    p.add_argument("--style-tokens", metavar="A,B,...,L", help="12 style tokens 0..1023 (or -1) instead of prompts")
    p.add_argument("--drums", choices=["auto", "off", "on"], default="auto")
    p.add_argument("--cfg-style", type=float, default=3.0)
    p.add_argument("--cfg-notes", type=float, default=1.0)
    p.add_argument("--cfg-drums", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=1.3)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=0, help="unmask width around played notes (127 = solo)")
    p.add_argument("--no-auto-strum", action="store_true", help="send onsets then held notes (Auto-Strum off)")


def cmd_generate(args: argparse.Namespace) -> int:
    import soundfile as sf

    from openmrt.engine.bundle import load_bundle
    from openmrt.engine.offline import render
    from openmrt.io.midi import MidiTimeline

    controls = controls_from_args(args)
    if args.seconds <= 0 or not np.isfinite(args.seconds):
        raise ControlError(f"--seconds must be a positive number, got {args.seconds}")
    out = Path(args.output)
    if out.suffix.lower() not in (".wav", ".flac"):
        raise ControlError(f"-o: write .wav or .flac, not {out.name}")
    bundle = load_bundle(args.model, seed=0)
    _check_style(controls, bundle, args.style)
    style_tokens = bundle.style.tokens_for(controls.prompts) if controls.prompts and bundle.style else None
    live = LiveControls(controls)
    timeline = MidiTimeline.from_file(args.notes) if args.notes else None
    notes_asked = []

    def cond_for_frame(t: int) -> np.ndarray:
        if timeline is not None:
            timeline.feed(t, live)
        _, notes, cond = live.frame(style_tokens, style_levels=tk.NUM_STYLE)
        notes_asked.append(notes)
        return cond

    n = int(round(args.seconds * 48000))
    stream = FrameStream(bundle, seed=controls.seed, temperature=controls.temperature, top_k=controls.top_k)
    print(f"openmrt: generating {args.seconds:g} s with {bundle.name}", file=sys.stderr)
    audio, _ = render(stream, n, cond_for_frame, progress=True)
    sf.write(str(out), audio, 48000)
    print(f"wrote {out} ({len(audio)} samples, 48 kHz stereo)", file=sys.stderr)
    if args.plot:
        from openmrt.engine.plots import notes_vs_spectrogram

        notes_vs_spectrogram(np.stack(notes_asked[: -(-n // 1920)]), audio, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    from openmrt.engine.bundle import load_bundle
    from openmrt.engine.session import FrameInput, Session
    from openmrt.io.audio_out import AudioOutput
    from openmrt.io.osc import OscServer
    from openmrt.io.recorder import Recorder

    controls = controls_from_args(args)
    bundle = load_bundle(args.model, seed=0)
    _check_style(controls, bundle, args.style)
    from openmrt.style.live import LivePromptStyle

    style = LivePromptStyle(bundle.style, controls.prompts)  # prompts changed over OSC re-encode off the frame loop
    live = LiveControls(controls)
    session = Session(bundle, lambda: FrameInput.from_live(live, style.tokens(live.snapshot())),
                      buffer_samples=args.buffer, seed=controls.seed, seed_rotation=controls.seed_rotation)
    live.on_reset = session.reset
    recorder = Recorder(args.record) if args.record else None
    midi = None
    if args.midi is not None:
        from openmrt.io.midi import MidiInput

        midi = MidiInput(live, port=args.midi or None)
    osc = OscServer(live, host=args.osc_host, port=args.osc_port).start()
    session.start()
    out = AudioOutput(session.read, device=args.device, recorder=recorder)
    out.start()
    print(f"openmrt: playing {bundle.name}; OSC on {args.osc_host}:{osc.port}; Ctrl-C stops", file=sys.stderr)
    try:
        t_end = time.monotonic() + args.seconds if args.seconds else None
        while t_end is None or time.monotonic() < t_end:
            time.sleep(2.0)
            st = session.stats()
            print(f"frames {st.frames}  compute p50 {st.compute_ms_p50:.1f} ms p99 {st.compute_ms_p99:.1f} ms  "
                  f"buffer {st.buffer_fill}  dropped {st.dropped_frames}  bad controls "
                  f"{st.extra['control_errors'] + osc.rejected}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        out.close()
        session.stop()
        style.close()
        osc.stop()
        if midi is not None:
            midi.close()
        if recorder is not None:
            recorder.close()
            print(f"recorded {args.record}", file=sys.stderr)
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from openmrt.io.audio_out import list_devices
    from openmrt.io.midi import input_ports

    print("audio outputs:")
    print(list_devices())
    print("MIDI inputs:")
    try:
        print("\n".join(input_ports()) or "(none)")
    except Exception as e:  # no MIDI backend on this machine
        print(f"(unavailable: {e})")
    return 0


def cmd_bench_latency(args: argparse.Namespace) -> int:
    import json

    from openmrt.engine.bundle import load_bundle
    from openmrt.engine.latency import STAGES, measure

    bundle = load_bundle(args.model, seed=0)
    result = measure(bundle, trials=args.trials, buffer_samples=args.buffer)
    result["model"] = bundle.name
    for stage in STAGES:
        q = result["stages"].get(stage, {})
        print(f"{stage:18s} p50 {q.get(50, float('nan')):7.1f}  p95 {q.get(95, float('nan')):7.1f}  "
              f"p99 {q.get(99, float('nan')):7.1f} ms")
    print(f"trials {result['trials']}, dropped samples {result['dropped_samples']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("generate", help="generate audio offline to a file")
    _add_common(g)
    g.add_argument("--seconds", type=float, default=10.0)
    g.add_argument("--notes", metavar="FILE.mid", help="MIDI file: the notes to play, frame by frame")
    g.add_argument("--plot", metavar="PNG", help="also draw the notes asked for over the output spectrogram")
    g.add_argument("-o", "--output", required=True, help="output .wav or .flac")
    g.set_defaults(func=cmd_generate)

    p = sub.add_parser("play", help="play live: audio out, MIDI in, OSC control")
    _add_common(p)
    p.add_argument("--device", help="audio output device (index or name; `openmrt devices`)")
    p.add_argument("--buffer", type=int, default=2048, choices=[2048, 4096, 8192], help="buffer lead in samples")
    p.add_argument("--midi", nargs="?", const="", help="MIDI input port name (no name: a virtual port 'openmrt')")
    p.add_argument("--osc-host", default="127.0.0.1")
    p.add_argument("--osc-port", type=int, default=9000)
    p.add_argument("--record", metavar="FILE.wav", help="record what is played (never overwrites)")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    p.set_defaults(func=cmd_play)

    d = sub.add_parser("devices", help="list audio outputs and MIDI inputs")
    d.set_defaults(func=cmd_devices)

    b = sub.add_parser("bench", help="measurements").add_subparsers(dest="bench", required=True)
    lat = b.add_parser("latency", help="MIDI note-on to sound, p50/p95/p99 with the breakdown")
    lat.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    lat.add_argument("--trials", type=int, default=40)
    lat.add_argument("--buffer", type=int, default=2048, choices=[2048, 4096, 8192])
    lat.add_argument("--out", help="JSON file for the results")
    lat.set_defaults(func=cmd_bench_latency)
