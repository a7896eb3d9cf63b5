"""Values fitted by benchmarks/data_transcription.py (run 2026-11-22, 60 fit pieces, 6 per
style; FluidR3_GM.sf2 + MuseScore_General_Full.sf3 + TimGM6mb.sf2).
Rerunning the benchmark with ``--write`` rewrites this file."""

ONSET_THRESHOLD = 0.6  # basic-pitch's default is 0.5
MIN_NOTE_MS = 92.9  # basic-pitch's default is 127.7
MERGE_GAP_S = 0.0  # re-onset merge gap with the best onset F1 (0: merging off)
# Logistic drum detector on transcribe.drum_features (44 features; standardisation folded in).
DRUM_WEIGHTS = (
    0.197329, -1.49257, -0.0679173, 0.641804, -4.46167, 22.7184, 1.70503, -7.08453,
    -31.9164, -1.28282, -4.02743, 5.94098, -1.83579, 19.7721, -3.63978, -0.0534436,
    11.1641, 4.56157, 6.76316, -25.0048, 4.00524, -71.9321, -0.519847, -0.258799,
    -0.061507, -1.7014, -4.28882, 6.95411, 5.37052, 1.85275, -2.95575, 2.28596,
    0.745981, -5.5597, -2.285, -12.7381, -3.50037, -4.95976, 17.0698, -1.59228,
    14.1634, 14.9023, 0.311488, 69.15,
)
DRUM_BIAS = 17.6481
