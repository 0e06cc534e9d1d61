"""The typed request of a gradient run: what the user asked for, checked, before TensorFlow runs anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradinspect.artifacts.loading import LoadedModel
from gradinspect.engine.objective import Objective
from gradinspect.engine.plans import BatchPlan
from gradinspect.engine.source import InputSource, fingerprint
from gradinspect.engine.stages import StageSpec
from gradinspect.report import InputSpec


@dataclass(frozen=True)
class GradientRequest:
    """One gradient run: the model, its inputs (checked, by input name), the loss and what to report.

    ``pairs`` are (from, to) layer paths (or name scopes, for a SavedModel without layers; empty
    means every variable). ``loss`` is the objective (its terms hold their targets); ``loss_spec``
    is what was asked for, and ``target`` the one target stage-2 expressions may read (every row,
    an array or a lazy view sliced a batch at a time).
    ``source`` and ``notes`` describe the inputs for the report.
    """

    loaded: LoadedModel
    arrays: dict[str, np.ndarray]
    specs: tuple[InputSpec, ...]
    pairs: tuple[tuple[str, str], ...]
    loss_spec: str
    loss: Objective
    target: Any = None
    training: bool = False
    stages: StageSpec | None = None
    source: str = "arrays"
    notes: tuple[str, ...] = ()
    plan: BatchPlan | None = None  # several batches, merged as one (None: one pass over all samples)
    # Where further batches are read from (a file read a slice at a time); ``arrays`` is the first.
    inputs: InputSource | None = None
    progress: Callable[[int, int, int], None] | None = field(default=None, compare=False)  # batches, total, samples
    compile: str = "auto"  # --compile: the batches after the first as one tf.function
    strategy: Any = field(default=None, compare=False)  # --devices: a tf.distribute.MirroredStrategy
    sink: Callable[[dict[str, np.ndarray], int, int], None] | None = field(default=None, compare=False)  # --save-h5

    def batch(self, start: int, stop: int) -> tuple[dict[str, np.ndarray], Objective]:
        """The inputs and the objective (its targets) of samples ``start:stop``."""
        first = int(next(iter(self.arrays.values())).shape[0])
        if (start, stop) == (0, first):
            feeds = self.arrays
        elif self.inputs is not None:
            feeds = self.inputs.rows(start, stop)
        else:
            feeds = {k: v[start:stop] for k, v in self.arrays.items()}
        return feeds, self.loss.rows(start, stop)  # targets read (a file's rows) with the inputs

    @property
    def samples(self) -> int:
        return self.inputs.n if self.inputs is not None else int(next(iter(self.arrays.values())).shape[0])

    def input_notes(self) -> list[str]:
        """What reading the inputs needed saying (casts, NaN/Inf counts over every row read)."""
        return self.inputs.notes if self.inputs is not None else []

    def fingerprint(self) -> str:
        """Which data the result came from (see :meth:`InputSource.fingerprint`)."""
        if self.inputs is not None:
            return self.inputs.fingerprint()
        return fingerprint(self.arrays, list(self.specs))


def say(progress: Any, text: str) -> None:
    """Name the step now running (``progress.phase``, when the progress display has one)."""
    phase = getattr(progress, "phase", None)
    if phase is not None:
        phase(text)
