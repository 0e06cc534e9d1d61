"""The compiled step: the later batches of a Keras model run as one ``tf.function``.

The first batch always runs eagerly through :func:`~gradinspect.engine.passes.run_pass`: it
resolves ``--loss auto``, records which tensors each layer call produced and turns any failure
into a clear error. The step then compiled computes exactly what that pass computes (the same
forward pass, recording, loss and one ``tape.gradient`` call) for every further batch, traced
once: its input signature leaves the batch dimension free, so a short last batch does not
retrace. Gradients leave the graph as float32 and are accumulated on the host in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gradinspect.engine.objective import Objective, Term
from gradinspect.engine.passes import (
    KerasSubject,
    PassRequest,
    PassResult,
    TensorGradient,
    VariableGradient,
    to_numpy,
)
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
            loss = Objective(terms, template.requested)(outputs)
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


class CompiledStep:
    """Callable on a batch's :class:`PassRequest`: its :class:`PassResult`, from the compiled step."""

    def __init__(self, first_request: PassRequest, first: PassResult) -> None:
        import tensorflow as tf

        self.first = first
        feed_specs = {k: _free_batch(v) for k, v in first_request.feeds.items()}
        target_specs = [_free_batch(t.target) for t in first_request.loss.terms if t.target is not None]
        signature = (feed_specs, target_specs, tf.TensorSpec((), tf.float32))
        fn = tf.function(step_function(first_request, first), input_signature=signature, reduce_retracing=True)
        # Traced once, here; calling the concrete function skips tf.function's per-call dispatch.
        self._fn = fn.get_concrete_function(*signature)

    def __call__(self, request: PassRequest) -> PassResult:
        import tensorflow as tf

        feeds, targets = batch_tensors(request)
        try:
            loss, grads = self._fn(feeds, targets, tf.constant(1.0))
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise failed(request, exc) from exc
        arrays = [None if g is None else to_numpy(g) for g in grads]
        return as_result(self.first, float(loss.numpy()), arrays)


def _free_batch(array: Any) -> Any:
    import tensorflow as tf

    return tf.TensorSpec((None, *array.shape[1:]), tf.as_dtype(array.dtype))
