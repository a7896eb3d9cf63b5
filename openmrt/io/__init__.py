"""Control input: OSC (`osc.py`) and MIDI ports and files (`midi.py`).

Both feed a `ControlTarget`, e.g. `openmrt.controls.LiveControls`. Audio output lives elsewhere in this package.
"""

from __future__ import annotations

from typing import Any, Protocol


class ControlTarget(Protocol):
    """What OSC and MIDI input drive. Methods raise `openmrt.errors.ControlError` for bad values."""

    def apply(self, name: str, value: Any) -> Any:
        """Set one control by message name (see `openmrt.controls.MESSAGE_NAMES`)."""

    def note_on(self, pitch: int, velocity: int) -> None: ...

    def note_off(self, pitch: int) -> None: ...

    def control_change(self, control: int, value: int) -> None: ...

    def all_notes_off(self) -> None: ...

    def reset(self) -> None:
        """Reset the session (notes off, model reset, fade-in)."""
