"""The package's own exception types: errors a user can cause, with messages that say what to do."""


class OpenMRTError(Exception):
    """Base class for every error openmrt raises on purpose."""


class CheckpointError(OpenMRTError):
    """A weight file is missing, corrupt, or does not fit the model (names the key or file)."""


class ConfigError(OpenMRTError):
    """An unknown preset or an inconsistent configuration."""


class ControlError(OpenMRTError, ValueError):
    """A control value is out of range or of the wrong type."""


class DataError(OpenMRTError):
    """An input file (audio, MIDI, shard) cannot be read or is malformed."""
