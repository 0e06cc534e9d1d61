"""Naming the step a run is in, for the progress display (which may be absent)."""

from __future__ import annotations

from typing import Any


def say(progress: Any, text: str) -> None:
    """Name the step now running (``progress.phase``, when the progress display has one)."""
    phase = getattr(progress, "phase", None)
    if phase is not None:
        phase(text)
