"""The typed request of a gradient run: what the user asked for, checked, before TensorFlow runs anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gradinspect.artifacts.loading import LoadedModel
from gradinspect.engine.objective import Objective
from gradinspect.engine.passes import Front, PassRequest
from gradinspect.engine.plans import BatchPlan
from gradinspect.engine.source import InputSource
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
    # Every sample of the run (``inputs.n`` of them), read a slice at a time; ``arrays`` is the first batch.
    inputs: InputSource = field(kw_only=True)
    progress: Callable[[int, int, int], None] | None = field(default=None, compare=False)  # batches, total, samples
    compile: str = "auto"  # --compile: the batches after the first as one tf.function
    strategy: Any = field(default=None, compare=False)  # --devices: a tf.distribute.MirroredStrategy
    sink: Callable[[dict[str, np.ndarray], int, int], None] | None = field(default=None, compare=False)  # --save-h5
    activations: bool = False  # --activations: the recorded outputs' own values' statistics too

    def pass_request(self, front: Front, start: int, stop: int) -> PassRequest:
        """The pass of samples ``start:stop``: their inputs and targets, and stage 2 when the front has it."""
        feeds, objective = self.batch(start, stop)
        phase = getattr(self.progress, "phase", None) if start == 0 else None  # names the first batch's steps
        if front.starter is None:
            return PassRequest(front.subject, feeds, objective, phase=phase, activations=front.activations)
        starter = front.starter((start, stop))
        staged = (front.stage_pairs, starter, front.stage2_variables)
        return PassRequest(front.subject, feeds, objective, *staged, phase, front.activations)

    def batch(self, start: int, stop: int) -> tuple[dict[str, np.ndarray], Objective]:
        """The inputs and the objective (its targets) of samples ``start:stop``."""
        first = int(next(iter(self.arrays.values())).shape[0])
        feeds = self.arrays if (start, stop) == (0, first) else self.inputs.rows(start, stop)
        loss = self.loss  # the same objective, its targets cut to the rows (a file's rows read now)
        terms = [replace(t, target=None if t.target is None else np.asarray(t.target[start:stop])) for t in loss.terms]
        return feeds, Objective(terms, loss.requested, loss.fixed_notes, loss.regularizers)
