"""The frame: the one unit of time everything streams in (one LM step, 12 codec tokens)."""

SAMPLE_RATE = 48000  # Hz, every model and audio path
CHANNELS = 2  # stereo
FRAME_SAMPLES = 1920  # samples per frame per channel: 40 ms at 48 kHz
FRAME_RATE = SAMPLE_RATE // FRAME_SAMPLES  # 25 frames per second
FRAME_MS = 1000.0 * FRAME_SAMPLES / SAMPLE_RATE  # 40.0
