"""openmrt: an open, streaming Magenta RealTime 2-style live music model."""

__version__ = "0.1.0"
