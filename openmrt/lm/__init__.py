"""The MRT2 Depthformer language model: conditioning encoder, temporal and depth transformers,
sampling, the streaming generator and official checkpoint conversion."""
