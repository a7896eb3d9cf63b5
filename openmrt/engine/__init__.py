"""The live engine: model bundles, the per-frame audio stream, the real-time session."""
