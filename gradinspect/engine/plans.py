"""Plain value types of a gradient run that several engine modules share; this module imports
nothing from the engine, so any of them can use it without an import circle."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPlan:
    """``n`` samples in batches of ``batch_size`` (the last may be short), at most ``max_batches``."""

    n: int
    batch_size: int
    max_batches: int | None = None

    def ranges(self) -> Iterator[tuple[int, int]]:
        for i, start in enumerate(range(0, self.n, self.batch_size)):
            if self.max_batches is not None and i >= self.max_batches:
                return
            yield start, min(start + self.batch_size, self.n)

    @property
    def samples(self) -> int:
        """How many samples the plan reads (fewer than ``n`` when ``max_batches`` stops it early)."""
        return sum(stop - start for start, stop in self.ranges())
