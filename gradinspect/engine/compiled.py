"""The compiled step: the later batches of a Keras model run as one ``tf.function``.

The first batch always runs eagerly through :func:`~gradinspect.engine.passes.run_pass`: it
resolves ``--loss auto``, records which tensors each layer call produced and turns any failure
into a clear error. The step then compiled computes exactly what that pass computes (the same
forward pass, recording, loss and one ``tape.gradient`` call) for every further batch, traced
once: its input signature leaves the batch dimension free, so a short last batch does not
retrace. Gradients leave the graph as float32 and are accumulated on the host in float64.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gradinspect.engine.objective import Objective, Term
from gradinspect.engine.passes import KerasSubject, PassRequest, PassResult, TensorGradient, VariableGradient
from gradinspect.errors import GradientError
from gradinspect.formatting import first_line

COMPILE_MODES = ("auto", "always", "never")
# With --compile auto, runs of at least this many batches are compiled (tracing costs a few batches).
AUTO_BATCHES = 4


def wants_compiled(mode: str, request: PassRequest, batches: int) -> bool:
    """Whether the batches after the first run compiled: a Keras model without stage 2, by ``mode``."""
    if mode == "never" or request.stages is not None or not isinstance(request.subject, KerasSubject):
        return False
    return mode == "always" or batches >= AUTO_BATCHES


class CompiledStep:
    """Callable on a batch's :class:`PassRequest`: its :class:`PassResult`, from the compiled step."""

    def __init__(self, first_request: PassRequest, first: PassResult) -> None:
        import tensorflow as tf

        self.first = first
        subject = first_request.subject
        order = [(tg.name, tg.call, tg.index) for tg in first.tensors]
        variables = [v for *_, v in subject.variables()]
        resolved = list(first_request.loss.ran)  # --loss auto as the first batch resolved it
        template = first_request.loss

        def step(feeds: dict[str, Any], given: list[Any]) -> tuple[Any, list[Any]]:
            supplied = iter(given)  # the terms' targets, for those that take one
            targets = [None if t.target is None else next(supplied) for t in template.terms]
            with tf.GradientTape() as tape:
                for t in feeds.values():
                    if t.dtype.is_floating:
                        tape.watch(t)
                outputs, recorded = subject.forward(feeds, [tape])
                terms = [Term(t.index, t.name, s, t.weight, y) for t, s, y in zip(template.terms, resolved, targets)]
                loss = Objective(terms, template.requested)(outputs)
            sources = [recorded[n][c][j] for n, c, j in order] + variables
            return loss, tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.NONE)

        feed_specs = {k: _free_batch(v) for k, v in first_request.feeds.items()}
        target_specs = [_free_batch(t.target) for t in template.terms if t.target is not None]
        self._fn = tf.function(step, input_signature=(feed_specs, target_specs), reduce_retracing=True)

    def __call__(self, request: PassRequest) -> PassResult:
        import numpy as np
        import tensorflow as tf

        feeds = {k: tf.convert_to_tensor(v) for k, v in request.feeds.items()}
        targets = [tf.convert_to_tensor(t.target) for t in request.loss.terms if t.target is not None]
        try:
            loss, grads = self._fn(feeds, targets)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise GradientError(f"{request.subject.label} failed (compiled step): {first_line(exc)}") from exc
        arrays = [None if g is None else np.asarray(tf.convert_to_tensor(g)) for g in grads]
        n = len(self.first.tensors)
        tensors = tuple(
            TensorGradient(tg.name, tg.call, tg.index, tg.tensor, a) for tg, a in zip(self.first.tensors, arrays)
        )
        variables = tuple(
            VariableGradient(vg.group, vg.name, vg.variable, a) for vg, a in zip(self.first.variables, arrays[n:])
        )
        return replace(self.first, loss_value=float(loss.numpy()), tensors=tensors, variables=variables)


def _free_batch(array: Any) -> Any:
    import tensorflow as tf

    return tf.TensorSpec((None, *array.shape[1:]), tf.as_dtype(array.dtype))
