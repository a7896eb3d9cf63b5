"""The original Magenta RealTime (v1) language model: a T5 encoder over 10 s of 4-level context and
6 style tokens, and a "depthformer" decoder (temporal + depth stacks) that writes 2 s chunks of
50 frames x 16 RVQ levels (shared/spec/mrt_v1.md)."""
