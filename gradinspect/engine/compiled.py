"""The compiled step: the later batches of a Keras model run as one ``tf.function``.

The first batch always runs eagerly through :func:`~gradinspect.engine.passes.run_pass`: it
resolves ``--loss auto``, records which tensors each layer call produced and turns any failure
into a clear error. The step then compiled computes exactly what that pass computes (the same
forward pass, recording, loss and one ``tape.gradient`` call) for every further batch, traced
once: its input signature leaves the batch dimension free, so a short last batch does not
retrace. Output gradients leave the graph per sample (their statistics are streamed on the
host); weight gradients are added up inside the step, in float64 variables (:class:`GraphSums`),
and read once at the end: `benchmarks/bench_stream.py` measured that faster than copying every
batch's gradients out and adding them on the host, at the same float64 precision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gradinspect.engine.objective import Objective, Term
from gradinspect.engine.passes import (
    PassRequest,
    PassResult,
    TensorGradient,
    VariableGradient,
    to_numpy,
    with_regularization,
)
from gradinspect.engine.subjects import KerasSubject
from gradinspect.errors import GradientError
from gradinspect.formatting import first_line

COMPILE_MODES = ("auto", "always", "never")
# With --compile auto, runs of at least this many batches are compiled (tracing costs a few batches).
AUTO_BATCHES = 4


def compilable(request: PassRequest) -> bool:
    """Whether the compiled step can compute this pass: a Keras model without stage 2."""
    return request.stages is None and isinstance(request.subject, KerasSubject)


def wants_compiled(mode: str, request: PassRequest, batches: int) -> bool:
    """Whether the batches after the first run compiled, by ``mode`` (auto: ``AUTO_BATCHES`` or more)."""
    if mode == "never" or not compilable(request):
        return False
    return mode == "always" or batches >= AUTO_BATCHES


def step_function(first_request: PassRequest, first: PassResult) -> Callable[..., tuple[Any, list[Any]]]:
    """``step(feeds, targets, scale) -> (scale · loss, its gradients)``: what the first batch's pass
    computed, as a function of tensors (``targets``: those of the terms that take one)."""
    import tensorflow as tf

    subject = first_request.subject
    order = [(tg.name, tg.call, tg.index) for tg in first.tensors]
    variables = [v for *_, v in subject.variables()]
    resolved = list(first_request.loss.ran)  # --loss auto as the first batch resolved it
    template = first_request.loss

    def step(feeds: dict[str, Any], given: list[Any], scale: Any) -> tuple[Any, list[Any]]:
        supplied = iter(given)
        targets = [None if t.target is None else next(supplied) for t in template.terms]
        with tf.GradientTape() as tape:
            for t in feeds.values():
                if t.dtype.is_floating:
                    tape.watch(t)
            outputs, recorded = subject.forward(feeds, [tape])
            terms = [Term(t.index, t.name, s, t.weight, y) for t, s, y in zip(template.terms, resolved, targets)]
            loss, _ = with_regularization(subject, template, Objective(terms, template.requested)(outputs))
            loss = loss * tf.cast(scale, loss.dtype)
        sources = [recorded[n][c][j] for n, c, j in order] + variables
        return loss, tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.NONE)

    return step


def batch_tensors(request: PassRequest) -> tuple[dict[str, Any], list[Any]]:
    """A batch's feeds and (for the terms that take one) targets, as tensors."""
    import tensorflow as tf

    feeds = {k: tf.convert_to_tensor(v) for k, v in request.feeds.items()}
    return feeds, [tf.convert_to_tensor(t.target) for t in request.loss.terms if t.target is not None]


def as_result(first: PassResult, loss: float, grads: list[Any]) -> PassResult:
    """The first batch's result with another batch's loss and gradients (numpy, or None)."""
    n = len(first.tensors)
    tensors = tuple(TensorGradient(tg.name, tg.call, tg.index, tg.tensor, a) for tg, a in zip(first.tensors, grads))
    variables = tuple(VariableGradient(vg.group, vg.name, vg.variable, a) for vg, a in zip(first.variables, grads[n:]))
    return replace(first, loss_value=loss, tensors=tensors, variables=variables)


def failed(request: PassRequest, exc: Exception) -> GradientError:
    return GradientError(f"{request.subject.label} failed (compiled step): {first_line(exc)}")


@dataclass(frozen=True)
class Summing:
    """How batches add up: ``share`` of the giant batch per row count (see streaming), and the size
    of a full batch (only full batches enter the noise sums, as the mean-loss gradient ``g_b``)."""

    mean_type: bool
    batch_size: int
    samples: int

    def weights(self, rows: int) -> tuple[float, float, float]:
        """(the batch's share, the factor that makes its gradient g_b, 1 if it is full else 0)."""
        share = rows / self.samples if self.mean_type else 1.0
        return share, 1.0 if self.mean_type else 1.0 / rows, float(rows == self.batch_size)


@dataclass(frozen=True)
class VariableSums:
    """One variable over the compiled batches: Σ share·g, and over the full ones Σ g_b, Σ |g_b|², k."""

    total: np.ndarray
    noise: np.ndarray
    squares: float
    full_batches: int


class GraphSums:
    """Float64 variables the compiled step adds each batch's weight gradients into."""

    def __init__(self, first: PassResult) -> None:
        import tensorflow as tf

        def zeros(vg: VariableGradient) -> Any:
            return tf.Variable(tf.zeros(vg.variable.shape, tf.float64), trainable=False)

        self.slots = [
            None if vg.grad is None else (zeros(vg), zeros(vg), tf.Variable(tf.constant(0.0, tf.float64)))
            for vg in first.variables
        ]
        self.full_batches = 0

    def add(self, grads: list[Any], weights: Any) -> None:
        """Inside the step: add ``grads`` (one per variable) with ``weights`` = (share, to g_b, full)."""
        import tensorflow as tf

        share, to_batch_mean, full = weights
        for slot, g in zip(self.slots, grads):
            if slot is None or g is None:
                continue
            g64 = tf.cast(tf.convert_to_tensor(g), tf.float64)
            g_b = g64 * to_batch_mean
            slot[0].assign_add(g64 * share)
            slot[1].assign_add(g_b * full)
            slot[2].assign_add(tf.reduce_sum(g_b * g_b) * full)

    def collect(self) -> list[VariableSums | None]:
        """The sums on the host, once, after the last batch."""
        k = self.full_batches
        return [
            None if slot is None else VariableSums(slot[0].numpy(), slot[1].numpy(), float(slot[2].numpy()), k)
            for slot in self.slots
        ]


class CompiledStep:
    """Callable on a batch's :class:`PassRequest`: its :class:`PassResult` from the compiled step,
    with the weight gradients added into :attr:`sums` instead (the result's are None and it says
    ``variables_summed``)."""

    def __init__(self, first_request: PassRequest, first: PassResult, summing: Summing) -> None:
        import tensorflow as tf

        self.first, self.summing = first, summing
        self.sums = GraphSums(first)
        step = step_function(first_request, first)
        n = len(first.tensors)

        def summed(feeds: dict[str, Any], given: list[Any], weights: Any) -> tuple[Any, list[Any]]:
            loss, grads = step(feeds, given, tf.constant(1.0))
            self.sums.add(grads[n:], tf.unstack(weights))
            return loss, grads[:n]

        feed_specs = {k: _free_batch(v) for k, v in first_request.feeds.items()}
        target_specs = [_free_batch(t.target) for t in first_request.loss.terms if t.target is not None]
        signature = (feed_specs, target_specs, tf.TensorSpec((3,), tf.float64))
        fn = tf.function(summed, input_signature=signature, reduce_retracing=True)
        # Traced once, here; calling the concrete function skips tf.function's per-call dispatch.
        self._fn = fn.get_concrete_function(*signature)

    def __call__(self, request: PassRequest) -> PassResult:
        import tensorflow as tf

        feeds, targets = batch_tensors(request)
        rows = int(next(iter(feeds.values())).shape[0])
        weights = self.summing.weights(rows)
        try:
            loss, grads = self._fn(feeds, targets, tf.constant(weights, tf.float64))
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise failed(request, exc) from exc
        self.sums.full_batches += int(weights[2])
        arrays = [None if g is None else to_numpy(g) for g in grads]
        result = as_result(self.first, float(loss.numpy()), arrays + [None] * len(self.first.variables))
        return replace(result, variables_summed=True)


def _free_batch(array: Any) -> Any:
    import tensorflow as tf

    return tf.TensorSpec((None, *array.shape[1:]), tf.as_dtype(array.dtype))
