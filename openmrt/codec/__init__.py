"""SpectroStream codec: STFT front end, conv encoder, residual VQ, conv decoder, causal inverse STFT.

Whole sequence: ``SpectroStream.encode(audio) -> codes`` and ``decode(codes) -> audio``.
Streaming: ``encode_step`` / ``decode_step`` with states from ``init_encode_state`` /
``init_decode_state``. ``decode`` returns the raw decoder audio; ``official_output`` applies
the official ½-gain int16 stage. Official weights: ``load_official`` (convert.py).
"""

from openmrt.codec.convert import load_official, load_official_state
from openmrt.codec.model import FRAME_SAMPLES, SpectroStream
from openmrt.codec.output import official_output, to_int16

__all__ = ["FRAME_SAMPLES", "SpectroStream", "load_official", "load_official_state", "official_output", "to_int16"]
