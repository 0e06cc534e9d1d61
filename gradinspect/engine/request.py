"""The typed request of a gradient run: what the user asked for, checked, before TensorFlow runs anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradinspect.artifacts.loading import LoadedModel
from gradinspect.engine.stages import StageSpec
from gradinspect.report import InputSpec


@dataclass(frozen=True)
class GradientRequest:
    """One gradient run: the model, its inputs (checked, by input name), the loss and what to report.

    ``pairs`` are (from, to) layer paths (or name scopes, for a SavedModel without layers; empty
    means every variable). ``loss`` maps the flat model outputs and ``target`` to a scalar;
    ``loss_spec`` names it. ``source`` and ``notes`` describe the inputs for the report.
    """

    loaded: LoadedModel
    arrays: dict[str, np.ndarray]
    specs: tuple[InputSpec, ...]
    pairs: tuple[tuple[str, str], ...]
    loss_spec: str
    loss: Callable[[list[Any], Any], Any]
    target: np.ndarray | None = None
    training: bool = False
    stages: StageSpec | None = None
    source: str = "arrays"
    notes: tuple[str, ...] = ()
