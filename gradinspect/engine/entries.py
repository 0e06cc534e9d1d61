"""Turning raw gradients into report entries: statistics, missing-gradient reasons, the report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from gradinspect.engine.inputs import fingerprint
from gradinspect.engine.stats import tensor_stats
from gradinspect.errors import GradientError
from gradinspect.report import GradReport, ModelInfo, OutputGradient, PairReport, WeightGradient

if TYPE_CHECKING:
    from gradinspect.engine.passes import TensorGradient, VariableGradient
    from gradinspect.engine.request import GradientRequest

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


def grad_report(
    request: GradientRequest, info: ModelInfo, loss_value: float, pairs: tuple[PairReport, ...], arrays: dict
) -> GradReport:
    """The report of one run, with a note when the loss is non-finite or every gradient is ~0."""
    notes = request.notes
    if not np.isfinite(loss_value):
        notes = (*notes, f"the loss is {loss_value}: gradients hold NaN/Inf")
    norms = [w.stats.norm for p in pairs for w in p.weights if w.stats is not None and w.stats.norm is not None]
    if request.loss_spec in ("sum", "mean") and norms and max(norms) < 1e-6:
        notes = (
            *notes,
            f"every weight gradient is ~0 (largest norm {max(norms):.2g}): the {request.loss_spec} of a softmax "
            "output is constant; use --loss unit:K or a Keras loss with --target",
        )
    return GradReport(
        model=info,
        loss_spec=request.loss_spec,
        loss_value=loss_value,
        input_source=request.source,
        batch_size=int(next(iter(request.arrays.values())).shape[0]),
        training=request.training,
        pairs=pairs,
        notes=tuple(notes),
        arrays=arrays,
        input_fingerprint=fingerprint(request.arrays),
    )


def output_entry(tg: TensorGradient, reason: str, arrays: dict, layer: str | None = None) -> OutputGradient:
    """The entry for one recorded tensor (reported under ``layer``, default its name); its raw
    gradient goes into ``arrays`` under its ``--save-npz`` key."""
    layer = tg.name if layer is None else layer
    shape = tuple(int(d) for d in tg.tensor.shape)
    if tg.grad is None:
        return OutputGradient(layer, tg.call, tg.index, shape, None, reason)
    entry = OutputGradient(layer, tg.call, tg.index, shape, tensor_stats(tg.grad))
    arrays[entry.key] = tg.grad
    return entry


def weight_entry(vg: VariableGradient, reason: str, arrays: dict) -> WeightGradient:
    """The entry for one variable, with the variable's own L2 norm (float64)."""
    w = np.asarray(vg.variable.numpy())
    norm = float(np.sqrt(np.sum(np.square(w.astype(np.float64)))))
    if vg.grad is None:
        return WeightGradient(vg.group, vg.name, tuple(w.shape), None, norm, reason)
    entry = WeightGradient(vg.group, vg.name, tuple(w.shape), tensor_stats(vg.grad), norm)
    arrays[entry.key] = vg.grad
    return entry
