"""The composer's named styles: tempo, meter, keys, chord progressions, GM instruments per part,
bass, comping, melody and drum settings. Chord symbols are explained in ``theory.py``; part
generators and their parameters in ``parts.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["STYLES", "PartSpec", "Style"]


@dataclass(frozen=True)
class PartSpec:
    """One part a style may use: the generator, GM programs with caption words, parameters."""

    gen: str  # key of parts.GENERATORS
    programs: tuple[tuple[int, str], ...]  # (GM program, caption words) choices
    params: dict = field(default_factory=dict)
    prob: float = 1.0  # chance the part is in a given piece
    sections: str = "iABbo"  # section kinds it plays in: intro, A, B, break, outro
    same_program_as: int | None = None  # index of an earlier part (a pianist's two hands)


@dataclass(frozen=True)
class Style:
    name: str
    label: str  # caption words, e.g. "disco funk"
    tempo: tuple[int, int]
    beats: int  # beats per bar (quarter-note beats)
    modes: dict[str, tuple[str, ...]]  # mode -> chord progressions ("|" between bars)
    parts: tuple[PartSpec, ...]
    moods: tuple[str, ...]
    swing: float = 0.5  # where the off-beat eighth falls (0.5 straight, 0.64 jazz swing)
    humanize_ms: float = 8.0  # timing jitter, standard deviation
    keys: tuple[int, ...] = tuple(range(12))  # tonic pitch classes the style favours


def _drums(groove: str, prob: float, sections: str = "ABo") -> PartSpec:
    return PartSpec("drums", ((0, ""),), {"groove": groove}, prob, sections)


E8 = 0.5  # an eighth note in beats
T3 = 1 / 3  # a triplet eighth

STYLES: dict[str, Style] = {s.name: s for s in [
    Style(
        "disco_funk", "disco funk", (108, 126), 4,
        {"dorian": ("i7 | IV7", "i7 | i7 | IV7 | IV7", "i7 | IV7 | i7 | bVII7"),
         "minor": ("i7 | iv7 | bVII7 | bIIImaj7", "i7 | bVImaj7 | bVII | i7"),
         "major": ("Imaj7 | ii7 | iii7 | ii7", "IVmaj7 | iii7 | ii7 | Imaj7", "Imaj7 | vi7 | ii7 | V7")},
        (PartSpec("bass", ((36, "slap bass"), (37, "slap bass"), (33, "electric bass"), (38, "synth bass")),
                  {"kind": "funk", "grids": ("x..x..x.x.x...x.", "x.xx..x...x.x.x.", "x..x.xx...x..xx.")}, 0.6),
         PartSpec("bass", ((33, "octave bass"), (38, "synth bass")), {"kind": "octaves"}, 0.4),
         PartSpec("comp", ((28, "muted funk guitar"), (27, "clean funk guitar")),
                  {"kind": "chop", "center": 66,
                   "grids": ("x.xxx.x.x.xxx.x.", "..x...x...x.x.x.", "x..x.x..x..x.x..")}, 0.8),
         PartSpec("comp", ((48, "string pads"), (49, "string pads"), (50, "synth strings")),
                  {"kind": "pad", "vel": 58, "center": 64}, 0.6, "iABo"),
         PartSpec("comp", ((61, "brass stabs"), (62, "synth brass stabs")),
                  {"kind": "stabs", "center": 68, "size": 3, "vel": 88,
                   "grids": ("......x.......x.", "..x...x...x...x.", "x.....x..x......")}, 0.6, "AB"),
         PartSpec("lead", ((65, "alto sax"), (81, "synth lead"), (73, "flute"), (56, "trumpet")),
                  {"durs": (0.25, E8, 0.75, 1.0, 2.0), "weights": (3, 4, 2, 2, 1), "rest": 0.12,
                   "low": 62, "high": 86}, 0.8, "AB"),
         _drums("disco", 0.6), _drums("funk", 0.35)),
        ("groovy", "danceable", "funky"), humanize_ms=6.0),
    Style(
        "bossa_nova", "bossa nova", (120, 145), 4,
        {"major": ("Imaj7 | Imaj7 | II7 | II7 | ii7 | bII7 | Imaj7 | bII7", "Imaj7 | vi7 | ii7 | V7",
                   "ii7 | V7 | Imaj7 | VI7", "Imaj7 | IVmaj7 | iii7 | VI7 | ii7 | V7 | Imaj7 | Imaj7"),
         "minor": ("i7 | iv7 | iiø7 | V7", "i7 | i7 | iv7 | bVII7 | bIIImaj7 | bVImaj7 | iiø7 | V7")},
        (PartSpec("comp", ((24, "nylon guitar"),),
                  {"kind": "bossa", "center": 60, "vel": 64, "grids": ("x..x..x...x..x..", "x..x..x..x..x...")}),
         PartSpec("bass", ((32, "upright bass"), (33, "electric bass")), {"kind": "bossa"}, 0.8),
         PartSpec("lead", ((73, "flute"), (66, "tenor sax"), (11, "vibraphone"), (71, "clarinet"), (65, "alto sax")),
                  {"durs": (E8, 1.0, 1.5, 2.0), "weights": (4, 3, 2, 1), "rest": 0.15, "low": 62, "high": 84,
                   "vel": 84}, 0.9, "AB"),
         PartSpec("comp", ((48, "soft strings"), (89, "warm pad")), {"kind": "pad", "vel": 46, "center": 66}, 0.35),
         _drums("bossa", 0.7, "iABo")),
        ("relaxed", "breezy", "warm"), humanize_ms=10.0),
    Style(
        "baroque", "baroque", (76, 116), 4,
        {"major": ("I IV | vii° iii | vi ii | V I", "I V | vi iii | IV I | IV V", "I IV | I V | vi ii | V I",
                   "I | V | vi | iii | IV | I | ii | V"),
         "harmonic minor": ("i iv | bVII bIII | bVI iiø7 | V i", "i | iv | V | i", "i V | i iv | i V7 | i i")},
        (PartSpec("bass", ((42, "cello continuo"), (43, "contrabass"), (70, "bassoon"), (6, "harpsichord continuo")),
                  {"kind": "continuo", "low": 36, "high": 55}),
         PartSpec("comp", ((6, "harpsichord"), (46, "harp"), (19, "church organ")),
                  {"kind": "arp", "step": 0.25, "span": 5, "center": 60, "vel": 64}, 0.85),
         PartSpec("lead", ((40, "violin"), (73, "flute"), (68, "oboe"), (74, "recorder"), (56, "trumpet")),
                  {"durs": (0.25, E8, 1.0), "weights": (3, 4, 1), "rest": 0.03, "low": 64, "high": 88}, 1.0, "iABbo"),
         PartSpec("counter", ((41, "viola"), (68, "oboe"), (40, "second violin"), (71, "clarinet")),
                  {"low": 55, "high": 79}, 0.7, "ABbo")),
        ("stately", "ornate", "lively"), humanize_ms=7.0),
    Style(
        "ambient", "ambient", (60, 84), 4,
        {"major": ("Imaj7 | Imaj7 | IVmaj7 | IVmaj7 | vi7 | vi7 | IVmaj7 | IVmaj7",
                   "Isus2 | Isus2 | IVadd9 | IVadd9 | vi7 | vi7 | Vsus4 | V"),
         "lydian": ("Imaj7 | Imaj7 | II | II", "Iadd9 | II | vii7 | II"),
         "minor": ("i7 | i7 | bVImaj7 | bVImaj7 | bIIImaj7 | bIIImaj7 | bVII | bVII", "i9 | i9 | iv9 | iv9"),
         "dorian": ("i7 | i7 | IV | IV", "i9 | IVadd9 | i9 | bVIImaj7")},
        (PartSpec("comp", ((89, "warm pad"), (90, "polysynth pad"), (91, "choir pad"), (95, "sweep pad"),
                           (52, "choir"), (92, "bowed pad"), (48, "slow strings")),
                  {"kind": "pad", "vel": 62, "center": 60, "size": 4}),
         PartSpec("comp", ((88, "new age pad"), (94, "halo pad"), (49, "high strings")),
                  {"kind": "pad", "vel": 48, "center": 74, "size": 3}, 0.4),
         PartSpec("comp", ((8, "celesta"), (9, "glockenspiel"), (11, "vibraphone"), (46, "harp"), (98, "crystal"),
                           (14, "tubular bells")),
                  {"kind": "arp", "step": 1.0, "span": 5, "center": 70, "legato": 1.8, "vel": 52}, 0.7),
         PartSpec("lead", ((75, "pan flute"), (73, "flute"), (79, "ocarina"), (85, "voice lead")),
                  {"durs": (1.0, 2.0, 3.0, 4.0), "weights": (2, 3, 1, 1), "rest": 0.3, "low": 62, "high": 82,
                   "vel": 70}, 0.5, "AB"),
         PartSpec("bass", ((38, "synth bass drone"), (32, "deep bass"), (89, "low pad")),
                  {"kind": "drone", "low": 30, "high": 50}, 0.7),
         _drums("ambient", 0.25, "AB")),
        ("calm", "spacious", "dreamy"), humanize_ms=15.0),
    Style(
        "techno", "techno", (124, 136), 4,
        {"minor": ("i | i | i | i", "i | i | bVI | bVII", "i | bVII | bVI | bVII", "i7 | i7 | iv7 | iv7"),
         "dorian": ("i7 | IV | i7 | IV",)},
        (PartSpec("bass", ((38, "synth bass"), (39, "acid synth bass"), (87, "bass and lead")),
                  {"kind": "offbeat", "low": 28, "high": 48,
                   "grids": ("..x...x...x...x.", ".xxx.xxx.xxx.xxx", "..xx..xx..xx..xx")}, 0.95, "ABbo"),
         PartSpec("comp", ((81, "sawtooth arpeggio"), (80, "square arpeggio"), (84, "charang arpeggio")),
                  {"kind": "arp", "step": 0.25, "span": 4, "center": 62, "vel": 70, "legato": 0.6}, 0.8, "ABb"),
         PartSpec("comp", ((90, "polysynth stabs"), (62, "synth brass stabs")),
                  {"kind": "stabs", "center": 62, "size": 3, "vel": 80,
                   "grids": ("...x..x....x..x.", "..x...x...x...x.", "x..x..x.x..x..x.")}, 0.6, "Bb"),
         PartSpec("comp", ((91, "choir pad"), (95, "sweep pad"), (92, "bowed pad")),
                  {"kind": "pad", "vel": 50, "center": 64}, 0.5, "iBbo"),
         _drums("techno", 1.0, "iABo")),
        ("driving", "hypnotic", "dark"), humanize_ms=0.0, keys=(0, 2, 4, 5, 7, 9)),
    Style(
        "rock", "rock", (96, 150), 4,
        {"major": ("I | V | vi | IV", "I | IV | I | V", "vi | IV | I | V"),
         "mixolydian": ("I | bVII | IV | I", "I | I | bVII | IV"),
         "minor": ("i | bVI | bIII | bVII", "i | bVII | bVI | V")},
        (PartSpec("comp", ((30, "distorted guitar"), (29, "overdriven guitar")),
                  {"kind": "power", "vel": 92, "grids": ("eighths", "eighths", "halves")}, 0.9, "iABo"),
         PartSpec("bass", ((34, "picked bass"), (33, "electric bass")), {"kind": "root8"}),
         PartSpec("comp", ((25, "acoustic guitar"), (27, "clean electric guitar")),
                  {"kind": "strum", "vel": 70, "grids": ("D.DU.UDU", "D.D.D.DU", "D..UD.DU")}, 0.5, "iABbo"),
         PartSpec("lead", ((29, "overdriven lead guitar"), (30, "distorted lead guitar"), (18, "rock organ")),
                  {"durs": (E8, 1.0, 1.5, 2.0), "weights": (4, 3, 1, 1), "rest": 0.12, "low": 60, "high": 84}, 0.8,
                  "AB"),
         PartSpec("comp", ((18, "rock organ"), (16, "drawbar organ")), {"kind": "pad", "vel": 56, "center": 60}, 0.3),
         _drums("rock", 0.95)),
        ("energetic", "gritty", "anthemic"), humanize_ms=7.0, keys=(0, 2, 4, 7, 9)),
    Style(
        "jazz_trio", "jazz trio", (100, 190), 4,
        {"major": ("ii7 | V7 | Imaj7 | Imaj7", "Imaj7 | vi7 | ii7 | V7", "Imaj7 VI7 | ii7 V7 | iii7 VI7 | ii7 V7",
                   "iii7 | VI7 | ii7 | V7 | Imaj7 | IV7 | iii7 VI7 | ii7 V7"),
         "minor": ("iiø7 | V7 | i7 | i7", "i7 | iv7 | bVII7 | bIIImaj7 | bVImaj7 | iiø7 | V7 | i7")},
        (PartSpec("bass", ((32, "walking upright bass"),), {"kind": "walking", "low": 28, "high": 55}),
         PartSpec("comp", ((0, "piano"), (1, "bright piano"), (4, "electric piano")),
                  {"kind": "rootless", "steps": 2, "center": 58, "size": 3, "vel": 62,
                   "grids": ("x..x....", "..x...x.", ".x...x..", "x...x.x.")}),
         PartSpec("lead", ((0, "piano"),), {"durs": (E8, 1.0, 1.5, 0.25), "weights": (6, 2, 1, 1), "rest": 0.1,
                                           "low": 62, "high": 86, "chromatic": 0.15, "vel": 88},
                  1.0, "AB", same_program_as=1),
         _drums("swing", 0.9, "ABbo")),
        ("swinging", "smoky", "late-night"), swing=0.64, humanize_ms=12.0, keys=(0, 3, 5, 7, 8, 10)),
    Style(
        "solo_piano", "solo piano", (60, 108), 4,
        {"major": ("I | vi | IV | V", "I | IV | V | I", "vi | IV | I | V", "I | iii | IV | V",
                   "I V | vi iii | IV I | IV V"),
         "harmonic minor": ("i | iv | V | i", "i | bVI | bIII | V", "i | iv | bVII | bIII | bVI | iiø7 | V | i")},
        (PartSpec("comp", ((0, "grand piano"), (1, "bright piano"), (2, "electric grand piano"), (4, "electric piano")),
                  {"kind": ("broken", "alberti", "broken", "block"), "vel": 58, "center": 56, "size": 3,
                   "grids": ("x...x...x...x...", "x.......x.x.....")}),
         PartSpec("lead", ((0, ""),), {"durs": (E8, 1.0, 1.5, 2.0, 0.25), "weights": (4, 3, 1, 1, 1), "rest": 0.08,
                                      "low": 64, "high": 88, "vel": 84}, 1.0, "iABbo", same_program_as=0),
         PartSpec("counter", ((0, ""),), {"low": 58, "high": 80, "vel": 66}, 0.3, "B", same_program_as=0)),
        ("gentle", "expressive", "intimate"), humanize_ms=12.0),
    Style(
        "blues_shuffle", "blues shuffle", (70, 112), 4,
        {"mixolydian": ("I7 | IV7 | I7 | I7 | IV7 | IV7 | I7 | I7 | V7 | IV7 | I7 | V7",
                        "I7 | I7 | I7 | I7 | IV7 | IV7 | I7 | I7 | V7 | IV7 | I7 | I7"),
         "minor": ("i7 | iv7 | i7 | i7 | iv7 | iv7 | i7 | i7 | bVI7 | V7 | i7 | V7",)},
        (PartSpec("bass", ((33, "electric bass"), (32, "upright bass")), {"kind": "boogie", "low": 28, "high": 60}),
         PartSpec("comp", ((16, "drawbar organ"), (17, "percussive organ")), {"kind": "pad", "vel": 54, "center": 60},
                  0.5),
         PartSpec("comp", ((0, "shuffle piano"), (3, "honky-tonk piano")),
                  {"kind": "block", "steps": 3, "center": 64, "size": 3, "vel": 64,
                   "grids": ("..x..x..x..x", "x.x..x.x..x.")}, 0.6),
         PartSpec("lead", ((26, "jazz guitar"), (29, "overdriven blues guitar"), (27, "clean blues guitar"),
                           (22, "harmonica"), (65, "alto sax")),
                  {"durs": (T3, 2 * T3, 1.0, 4 * T3, 2.0), "weights": (2, 3, 3, 1, 1), "rest": 0.15, "low": 60,
                   "high": 84, "scale": "blues"}, 0.9, "AB"),
         _drums("shuffle", 0.9, "ABbo")),
        ("laid-back", "soulful", "gritty"), humanize_ms=10.0, keys=(0, 2, 4, 7, 9, 10)),
    Style(
        "folk_waltz", "folk waltz", (96, 160), 3,
        {"major": ("I | IV | V | I", "I | I | IV | V", "I | vi | IV | V", "I | V | IV | I"),
         "dorian": ("i | IV | i | bVII", "i | bVII | IV | i")},
        (PartSpec("comp", ((21, "accordion"), (25, "acoustic guitar"), (0, "piano")), {"kind": "oompah", "vel": 62}),
         PartSpec("comp", ((25, "strummed acoustic guitar"),),
                  {"kind": "strum", "vel": 60, "grids": ("D.DUDU", "D.D.D.")}, 0.5),
         PartSpec("lead", ((40, "fiddle"), (21, "accordion melody"), (73, "flute"), (71, "clarinet"),
                           (22, "harmonica")),
                  {"durs": (E8, 1.0, 2.0, 3.0, 1.5), "weights": (4, 4, 2, 1, 1), "rest": 0.06, "low": 62, "high": 86},
                  1.0, "iABo"),
         PartSpec("bass", ((32, "upright bass"), (33, "electric bass")), {"kind": "waltz"}, 0.6),
         _drums("waltz", 0.35, "ABo")),
        ("lilting", "rustic", "cheerful"), humanize_ms=10.0, keys=(0, 2, 5, 7, 9)),
]}
