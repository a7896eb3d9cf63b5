"""Training loops (codec, style, mapper, LM), augmentations, distributed set-up."""
