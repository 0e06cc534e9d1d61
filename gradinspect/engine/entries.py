"""Turning raw gradients into report entries: statistics, missing-gradient reasons, the report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from gradinspect.engine.losses import BUILTIN
from gradinspect.engine.stats import activation_stats, tensor_stats
from gradinspect.report import GradReport, ModelInfo, Noise, OutputGradient, PairReport, WeightGradient

if TYPE_CHECKING:
    from gradinspect.engine.objective import Term
    from gradinspect.engine.passes import PassResult, TensorGradient, VariableGradient
    from gradinspect.engine.request import GradientRequest

# What the reasons rest on: the tape found no gradient (a fact of this pass), and the saved graph
# says whether the layer feeds an output the loss reads. Losses read the recorded output tensors
# themselves, so a layer on such a path without a gradient has a non-differentiable op after it.
NO_PATH = (
    "no gradient: the tape found no differentiable path from the loss to here (either the layer feeds no "
    "output the loss reads, or an op on the way has no gradient, such as argmax, round or an integer cast)"
)
NOT_BETWEEN = "no gradient: the layer is not between the inputs and the loss (it feeds no output the loss reads)"
NON_DIFFERENTIABLE = (
    "no gradient: the layer feeds an output the loss reads, but the tape found no differentiable path back "
    "to it: an op on the way is non-differentiable (argmax, round, an integer cast, stop_gradient)"
)
UNUSED_VARIABLE = "no gradient: the signature does not use this variable"
INTEGER = "no gradient: the tensor is integer-typed (e.g. an Embedding's indices); integers have no gradient"
NOT_CALLED = "no gradient: the layer was not called in the forward pass"


def grad_report(
    request: GradientRequest,
    info: ModelInfo,
    result: PassResult,
    pairs: tuple[PairReport, ...],
    arrays: dict[str, Any],
    batches: int | None = None,
    noise: Noise | None = None,
) -> GradReport:
    """The report of one run: the loss that ran (``auto`` resolved, as ``result`` says: the same on
    every path, eager or compiled), with notes on what it chose, on a non-finite loss, and on
    gradients that are only rounding noise."""
    loss_value = result.loss_value
    spec = loss_name(request.loss.terms, result.loss_specs)
    rounding = rounding_noise(pairs, loss_value)
    fingerprint = request.inputs.fingerprint()  # reads any row no batch read, so before the notes
    notes = (*request.notes, *request.inputs.notes, *result.loss_notes)
    if batches and request.inputs.read_whole:
        notes = (*notes, f"{request.source}: this format is read whole (.npy and HDF5 are read a batch at a time)")
    if not np.isfinite(loss_value):
        notes = (*notes, f"the loss is {loss_value}: gradients hold NaN/Inf")
    if batches:
        notes = (
            *notes,
            f"{batches} batches merged as one: output gradients are summarized over every sample, not kept "
            "(--save-npz holds the weight gradients)",
        )
    unmeasured: dict[str, int] = {}  # why the table's Noise B and SNR cells are empty (JSON: noise.reason)
    reasons = {w.key: w.noise.reason for p in pairs for w in p.weights if w.noise is not None and w.noise.reason}
    for reason in reasons.values():
        unmeasured[reason] = unmeasured.get(reason, 0) + 1
    notes = (*notes, *(f"Noise B and SNR are — for {n} variable(s): {why}" for why, n in unmeasured.items()))
    if rounding is not None:
        notes = (
            *notes,
            f"every weight gradient is rounding noise (largest |g| {rounding:.2g} for a loss of {loss_value:.4g}): "
            f"the loss {spec} does not depend on the weights (the sum of softmax rows is always 1); use --loss "
            "logprob:pred (what auto picks for probability outputs), unit:K or a Keras loss with --target",
        )
    return GradReport(
        model=info,
        loss_spec=spec,
        loss_value=loss_value,
        input_source=request.source,
        batch_size=request.plan.batch_size if batches and request.plan else request.inputs.n,
        training=request.training,
        pairs=pairs,
        notes=tuple(notes),
        arrays=arrays,
        input_fingerprint=fingerprint,
        batches=batches,
        noise=noise,
    )


def loss_name(terms: list[Term], specs: list[str] | tuple[str, ...]) -> str:
    """The loss as the report names it, ``specs`` (one per term) being what ran: ``logprob:pred``,
    ``mse(out_a, out_b)``, or ``mse(out_a) + 0.5·mse(out_b)``."""
    if len(terms) == 1 or (len(set(specs)) == 1 and all(t.weight == 1 for t in terms)):
        single = specs[0]
        many = len(terms) > 1 and single not in BUILTIN
        return f"{single}({', '.join(t.name for t in terms)})" if many else single
    return " + ".join(f"{'' if t.weight == 1 else f'{t.weight:g}·'}{spec}({t.name})" for t, spec in zip(terms, specs))


# float32 rounding (2**-23) times a margin for the sums inside a backward pass.
_NOISE = 64 * 2.0**-23


def rounding_noise(pairs: tuple[PairReport, ...], loss_value: float) -> float | None:
    """The largest |weight gradient| when every one is within float32 rounding of the loss's scale, else None."""
    largest = [w.stats.abs_max for p in pairs for w in p.weights if w.stats is not None and w.stats.abs_max is not None]
    if not largest or not np.isfinite(loss_value):
        return None
    top = max(largest)
    return top if top <= _NOISE * max(1.0, abs(loss_value)) else None


def output_entry(
    tg: TensorGradient,
    reason: str,
    arrays: dict[str, Any],
    tensors: int = 1,
    activations: Mapping[str, str] | None = None,
) -> OutputGradient:
    """The entry for one recorded tensor (``tensors``: how many its call returned); its raw gradient
    goes into ``arrays`` under its ``--save-npz`` key. With ``activations`` (``--activations``: layer
    -> the activation whose saturation counts, or ""), the tensor's own values too."""
    shape = tuple(int(d) for d in tg.tensor.shape)
    merged = tg.rows is not None  # over several batches: statistics only
    act = None
    if activations is not None and tg.tensor.dtype.is_floating:
        act = tg.activation if merged else activation_stats(np.asarray(tg.tensor), activations.get(tg.name))
    entry = OutputGradient(tg.name, tg.call, tg.index, shape, None, reason, tensors, act)
    if act is not None and not merged:
        _store(arrays, entry.activation_key, np.asarray(tg.tensor))
    if tg.stats is not None and merged:
        return replace(entry, shape=(tg.rows, *shape[1:]), stats=tg.stats, missing=None)
    if tg.grad is None:
        return entry
    _store(arrays, entry.key, tg.grad)
    return replace(entry, stats=tensor_stats(tg.grad), missing=None)


def _store(arrays: dict[str, Any], key: str, value: np.ndarray) -> None:
    # One variable reached through two pair ends (a nested model and a layer inside it) is one
    # gradient under one key; two different gradients under one key would silently lose one: that
    # is a bug, never a user error.
    held = arrays.get(key)
    if held is None:
        arrays[key] = value
    elif not (held is value or held.shape == value.shape and np.array_equal(held, value, equal_nan=True)):
        raise RuntimeError(f"two different gradients have the --save-npz key {key!r}")


def weight_entry(vg: VariableGradient, reason: str, arrays: dict[str, Any]) -> WeightGradient:
    """The entry for one variable, with the variable's own L2 norm (float64)."""
    w = np.asarray(vg.variable.numpy())
    norm = float(np.sqrt(np.sum(np.square(w.astype(np.float64)))))
    if vg.grad is None:
        return WeightGradient(vg.group, vg.name, tuple(w.shape), None, norm, reason)
    entry = WeightGradient(vg.group, vg.name, tuple(w.shape), tensor_stats(vg.grad), norm, None, vg.noise)
    _store(arrays, entry.key, vg.grad)
    return entry


def pair_reports(
    pairs: Any, outs: dict[str, list[Any]], weights: dict[str, list[Any]], result: Any, arrays: dict[str, Any]
) -> tuple[Any, ...]:
    """Each (from, to) pair's report: both layers' output and weight entries (a layer paired with
    itself once) and, with stage 2, its stage report (compared with the plain weight gradients)."""
    from gradinspect.engine.stages import report as stage_report

    plain = {(vg.group, vg.name): vg.grad for vg in result.variables}
    staged = [stage_report(out, a, plain, arrays) for out, (a, _) in zip(result.staged, pairs)]
    return tuple(
        PairReport(
            a,
            b,
            tuple(outs.get(a, []) + (outs.get(b, []) if b != a else [])),
            tuple(weights.get(a, []) + (weights.get(b, []) if b != a else [])),
            staged[i] if staged else None,
        )
        for i, (a, b) in enumerate(pairs)
    )
