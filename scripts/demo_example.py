"""The audio example of docs/models.md: the demo bundle playing a held-out piece's notes, beside its render.

    python scripts/demo_example.py --data DATA/codec_heldout [--piece 0] [--seconds 10] [--drums on|off]

Takes one held-out piece (its source MIDI's note states, its style's name as the prompt), generates with the
bundle exactly as ``openmrt eval lm`` and ``openmrt generate`` do, and writes ``docs/demo_example.ogg`` and
``docs/demo_example.png`` (log-mel spectrograms of the FluidSynth render over the generated audio).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import soundfile as sf

from openmrt.engine.bundle import load_bundle
from openmrt.eval.lm import bundle_generator, conditioning, heldout_pieces
from openmrt.eval.roundtrip import spectrogram_png
from openmrt.frame import SAMPLE_RATE
from openmrt.style.data import style_label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="held-out shard folder (composed, with MIDI)")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--piece", type=int, default=0, help="which held-out piece")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--drums", choices=("on", "off"), default="on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/demo_example", help="path without extension (.ogg and .png)")
    args = ap.parse_args()

    bundle = load_bundle(args.model, seed=args.seed)
    piece = heldout_pieces(args.data, args.piece + 1, args.seconds)[args.piece]
    prompt = style_label(piece.style)
    style = bundle.style.tokens_for([(prompt, 1.0)])
    audio = bundle_generator(bundle, args.seed)(conditioning(piece, style, drums=args.drums == "on"), len(piece.audio))
    out = Path(args.out)
    sf.write(out.with_suffix(".ogg"), audio, SAMPLE_RATE, format="OGG", subtype="VORBIS")
    title = f'(held-out piece {args.piece}, prompt "{prompt}", drums {args.drums}, seed {args.seed})'
    spectrogram_png(piece.audio, audio, out.with_suffix(".png"), title,
                    names=("FluidSynth render of the notes", f"{bundle.name} bundle playing them"))
    print(f"wrote {out.with_suffix('.ogg')} and {out.with_suffix('.png')}: {title}")


if __name__ == "__main__":
    main()
