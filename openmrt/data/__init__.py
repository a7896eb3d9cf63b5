"""The data engine: composed MIDI rendered with FluidSynth (exact labels), a user's folder
transcribed with basic-pitch, both stored as shards of audio (or codec tokens) with 25 Hz note,
drum and style labels. See docs/data.md.

Modules: ``theory``/``drums``/``parts``/``styles``/``compose`` (the composer), ``render``
(FluidSynth), ``labels`` (frame labels and captions), ``transcribe`` (basic-pitch and the drum
detector), ``shards`` (on-disk format), ``pipeline`` (parallel builds), ``dataset`` (PyTorch
crops), ``heldout`` (the fixed evaluation clips), ``show`` (pictures), ``cli`` (``openmrt data ...``).
"""
