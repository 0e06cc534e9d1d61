"""`gradinspect grad`: gradients of a loss w.r.t. chosen layers' outputs and weights, as a GradReport."""

from __future__ import annotations

from typing import Any

from gradinspect.engine.runner import run_gradients
from gradinspect.report import GradReport


def inspect_gradients(
    model_or_path: Any, inputs: Any = None, pairs: list[tuple[str, str]] | None = None, **options: Any
) -> GradReport:
    """Gradients of the loss w.r.t. the outputs and trainable variables of each pair's layers.

    ``model_or_path`` is a path, a LoadedModel or a live Keras model; ``inputs`` is a file spec
    (as ``--input``), an array, a dict of arrays keyed by input name, or None for seeded random
    samples. ``options`` are the fields of :class:`GradOptions`, :class:`DataOptions` (``loss``,
    ``target``, ``training``, ``random``, ``seed``, ``input_shape``, ``samples``, ``batch_size``)
    and :class:`ModelOptions` (``custom_objects``, ``unsafe``). Raises GradinspectError
    subclasses for every expected failure; options that need no model are checked first.
    """
    return run_gradients(model_or_path, inputs, pairs, **options)
