"""Turning raw gradients into report entries: statistics, missing-gradient reasons, the report."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradinspect.engine.inputs import fingerprint
from gradinspect.engine.stats import tensor_stats
from gradinspect.errors import GradientError
from gradinspect.report import GradReport, OutputGradient, WeightGradient

NO_PATH = (
    "no gradient: the layer is not between the inputs and the loss, or the path to the loss goes "
    "through a non-differentiable op (argmax, round, a cast to integer)"
)
NOT_BETWEEN = "no gradient: the layer is not between the inputs and the loss (it feeds no output the loss uses)"
NON_DIFFERENTIABLE = (
    "no gradient: the path from here to the loss goes through a non-differentiable op "
    "(argmax, round, a cast to integer, stop_gradient)"
)
UNUSED_VARIABLE = "no gradient: the signature does not use this variable"
INTEGER = "no gradient: the tensor is integer-typed (e.g. an Embedding's indices); integers have no gradient"
NOT_CALLED = "no gradient: the layer was not called in the forward pass"


def require_differentiable(outputs: list[Any], loss_spec: str) -> None:
    """Refuse a loss on outputs that have no gradient at all (an argmax or integer cast at the end)."""
    from gradinspect.engine.losses import outputs_used

    used = [outputs[i] for i in outputs_used(loss_spec, len(outputs)) if i < len(outputs)]
    if used and not any(getattr(t.dtype, "is_floating", False) for t in used):
        dtypes = ", ".join(sorted({t.dtype.name for t in used}))
        raise GradientError(
            f"the model's output is {dtypes}, which has no gradient (an argmax or an integer cast at the end); "
            "nothing can be differentiated — inspect a model that stops before that layer"
        )


def grad_report(info, loss_spec, loss_value, source, arrays, training, pairs, notes, arrays_out) -> GradReport:
    value = float(loss_value.numpy())
    if not np.isfinite(value):
        notes = (*notes, f"the loss is {value}: gradients hold NaN/Inf")
    norms = [w.stats.norm for p in pairs for w in p.weights if w.stats is not None and w.stats.norm is not None]
    if loss_spec in ("sum", "mean") and norms and max(norms) < 1e-6:
        notes = (
            *notes,
            f"every weight gradient is ~0 (largest norm {max(norms):.2g}): the {loss_spec} of a softmax output is "
            "constant; use --loss unit:K or a Keras loss with --target",
        )
    return GradReport(
        model=info,
        loss_spec=loss_spec,
        loss_value=value,
        input_source=source,
        batch_size=int(next(iter(arrays.values())).shape[0]),
        training=training,
        pairs=pairs,
        notes=tuple(notes),
        arrays=arrays_out,
        input_fingerprint=fingerprint(arrays),
    )


def output_gradient(
    layer: str, call: int, tensor: int, t: Any, arr: np.ndarray | None, stats: Any, reason: str, arrays: dict
) -> OutputGradient:
    """The entry for one output tensor; its raw gradient goes into ``arrays`` under its key."""
    shape = tuple(int(d) for d in t.shape)
    if arr is None:
        return OutputGradient(layer, call, tensor, shape, None, reason)
    entry = OutputGradient(layer, call, tensor, shape, stats)
    arrays[entry.key] = arr
    return entry


def weight_gradient(
    layer: str, name: str, v: Any, arr: np.ndarray | None, stats: Any, reason: str, arrays: dict
) -> WeightGradient:
    """The entry for one variable, with the variable's own L2 norm (float64)."""
    w = np.asarray(v.numpy())
    norm = float(np.sqrt(np.sum(np.square(w.astype(np.float64)))))
    if arr is None:
        return WeightGradient(layer, name, tuple(w.shape), None, norm, reason)
    entry = WeightGradient(layer, name, tuple(w.shape), stats, norm)
    arrays[entry.key] = arr
    return entry


def numpy_and_stats(grads: list[Any]) -> tuple[list[np.ndarray | None], list[Any]]:
    arrays = [None if g is None else _numpy(g) for g in grads]
    return arrays, [None if a is None else tensor_stats(a) for a in arrays]


def _numpy(g: Any) -> np.ndarray:
    # An Embedding's gradient arrives as IndexedSlices; convert_to_tensor densifies it.
    import tensorflow as tf

    return tf.convert_to_tensor(g).numpy()
