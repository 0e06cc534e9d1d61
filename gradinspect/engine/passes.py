"""The one pass: a typed request in, one forward pass under one tape, one backward call, a typed result out.

Every command that needs gradients builds a :class:`PassRequest` and calls :func:`run_pass`:
``grad`` and ``check`` through :mod:`~gradinspect.engine.keras_pass` and
:mod:`~gradinspect.engine.signatures`, ``verify`` on its float64 copy. What is called is a
*subject*: :class:`KerasSubject` (a Keras model, recording chosen layers' outputs by shadowing
``call`` on the instance, see :func:`recording`) or :class:`SignatureSubject` (a SavedModel
signature without layers). Nothing else in gradinspect opens a GradientTape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from gradinspect.engine.objective import Objective
from gradinspect.errors import GradientError
from gradinspect.formatting import first_line
from gradinspect.report import ActivationStats, ModelInfo, Noise, PairReport, TensorStats

# Recorded outputs: layer (or input) name -> one list of tensors per call.
Recorded = dict[str, list[list[Any]]]
INPUT_PREFIX = "input:"


class Subject(Protocol):
    """What a pass calls: it names its variables, runs the forward pass and records tensors."""

    @property
    def label(self) -> str:
        """``the forward pass`` or ``the signature 'serving_default'``, for error messages."""

    @property
    def watch_variables(self) -> bool:
        """Restored SavedModel variables must be watched by hand; Keras watches its trainable
        weights itself (and a Keras 3 Variable is not a tf.Variable that tape.watch accepts)."""

    def variables(self) -> list[tuple[str, str, Any]]:
        """``(group, name, variable)`` for every variable whose gradient is wanted."""

    def forward(self, feeds: dict[str, Any], tapes: list[Any]) -> tuple[list[Any], Recorded]:
        """The model's flat outputs and the recorded tensors (each watched by every tape)."""

    def regularization(self) -> tuple[Any, int]:
        """After ``forward``: the sum of the model's regularization losses and how many there are
        ((None, 0) for a model without Keras layers)."""


def with_regularization(subject: Subject, objective: Objective, loss: Any) -> tuple[Any, str | None]:
    """``loss`` plus the subject's regularization losses when the objective takes them (``--loss
    compiled``: what Keras trains on), and the note that says so."""
    import tensorflow as tf

    if not objective.regularizers:
        return loss, None
    penalty, count = subject.regularization()
    if penalty is None:
        return loss, None
    note = (
        f"--loss compiled adds the model's {count} regularization loss(es) (model.losses), as Keras trains on "
        "them; --no-regularizers leaves them out"
    )
    return loss + tf.cast(penalty, loss.dtype), note


@dataclass(frozen=True)
class PassRequest:
    """One pass: the subject, its inputs (by input name), the objective and, optionally, stage 2.

    ``loss`` takes the flat model outputs and returns a scalar tensor (it holds its own targets).
    ``stages``, when given, is called inside the outer tape with the recorded tensors, outputs
    and one inner tape per stage-2 pair, and returns the live staged pairs (see
    :mod:`gradinspect.engine.stages`); ``stage2_variables`` names, per pair, the variables
    whose stage-2 gradients are taken.
    """

    subject: Subject
    feeds: Mapping[str, np.ndarray]
    loss: Objective
    stage_pairs: int = 0
    stages: Callable[[Recorded, list[Any], list[Any]], list[Any]] | None = None
    stage2_variables: tuple[tuple[tuple[str, str, Any], ...], ...] = field(default=())
    phase: Callable[[str], None] | None = field(default=None, compare=False)  # names the step running
    # --activations: layer -> the activation whose saturation counts ("" none); every batch then runs eagerly.
    activations: Mapping[str, str] | None = None


@dataclass(frozen=True)
class TensorGradient:
    """A recorded tensor (``name``'s ``call``-th call, ``index``-th tensor) and d loss / d it."""

    name: str
    call: int
    index: int
    tensor: Any
    grad: np.ndarray | None
    # Over several batches the per-sample gradients are not kept: their statistics, and the sample count.
    stats: TensorStats | None = None
    rows: int | None = None
    activation: ActivationStats | None = None  # over several batches (--activations): the values' statistics


@dataclass(frozen=True)
class VariableGradient:
    """A variable (``group``: its layer or name scope) and d loss / d it."""

    group: str
    name: str
    variable: Any
    grad: np.ndarray | None
    noise: Noise | None = None


@dataclass(frozen=True)
class PassResult:
    """What one pass produced: the loss, every requested gradient (None: not connected), stage 2."""

    loss_value: float
    outputs: tuple[Any, ...]
    recorded: Recorded
    tensors: tuple[TensorGradient, ...]
    variables: tuple[VariableGradient, ...]
    staged: tuple[Any, ...] = ()  # a StageOutcome per stage-2 pair
    # True when the variables' gradients were added into the compiled step's own sums (their grad is None).
    variables_summed: bool = False
    # The loss that ran (``auto`` resolved, one spec per term) and why: the first batch's, for every batch.
    loss_specs: tuple[str, ...] = ()
    loss_notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Front:
    """What one kind of model contributes to a run: the ``subject`` every batch's pass differentiates;
    ``reports(result, arrays)``, each pair's entries from the merged result (arrays to save go into
    ``arrays``); ``info``, the model as the report names it; ``notes``, what it adds to the request's
    notes; ``compile`` and ``strategy``, how batches after the first run (see
    :func:`gradinspect.engine.streaming.execute`). With stage 2: ``stage_pairs`` pairs,
    ``starter(rows)`` the hook of samples ``rows`` and ``stage2_variables`` (see PassRequest)."""

    subject: Subject
    reports: Callable[[PassResult, dict[str, np.ndarray]], tuple[PairReport, ...]]
    info: ModelInfo
    notes: tuple[str, ...] = ()
    compile: str = "auto"
    strategy: Any = None
    stage_pairs: int = 0
    starter: Callable[[tuple[int, int]], Callable[[Recorded, list[Any], list[Any]], list[Any]]] | None = None
    stage2_variables: tuple[tuple[tuple[str, str, Any], ...], ...] = ()
    activations: Mapping[str, str] | None = None  # see PassRequest


def run_pass(request: PassRequest) -> PassResult:
    """One forward pass under one tape, then one backward call for every requested gradient."""
    import tensorflow as tf

    feeds = {name: tf.convert_to_tensor(a) for name, a in request.feeds.items()}
    variables = request.subject.variables()
    with _tapes(request.stage_pairs) as (tape, inner, close_inner):
        try:
            for t in feeds.values():
                if t.dtype.is_floating:
                    for each in (tape, *inner):
                        each.watch(t)
            if request.subject.watch_variables:
                for _, _, v in variables:
                    tape.watch(v)
            if request.phase is not None:
                request.phase("forward pass")
            outputs, recorded = request.subject.forward(feeds, [tape, *inner])
            require_differentiable([outputs[i] for i in request.loss.output_indices if i < len(outputs)])
            loss_value, regularized = with_regularization(request.subject, request.loss, request.loss(outputs))
            staged = request.stages(recorded, outputs, inner) if request.stages else []
            close_inner()
            from gradinspect.engine.stages import finish, outcome

            for pair in staged:
                finish(pair)
        except GradientError:
            raise
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise GradientError(f"{request.subject.label} failed: {first_line(exc)}") from exc
    targets = [(n, c, j, t) for n, calls in recorded.items() for c, ts in enumerate(calls) for j, t in enumerate(ts)]
    sources = [t for *_, t in targets] + [v for *_, v in variables]
    if request.phase is not None:
        request.phase("backward pass")
    # One backward call for every target: the cost of a single forward+backward pass.
    grads = tape.gradient(loss_value, sources, unconnected_gradients=tf.UnconnectedGradients.NONE) if sources else []
    outcomes = tuple(
        outcome(pair, tuple((g, n, v, d) for (g, n, v), d in zip(chosen, _stage2_grads(tape, pair, chosen))))
        for pair, chosen in zip(staged, request.stage2_variables)
    )
    del tape  # the forward pass's intermediate tensors can go before the gradients are copied out
    arrays = [None if g is None else to_numpy(g) for g in grads]
    return PassResult(
        float(loss_value.numpy()),
        tuple(outputs),
        recorded,
        tuple(TensorGradient(*target, a) for target, a in zip(targets, arrays)),
        tuple(VariableGradient(g, n, v, a) for (g, n, v), a in zip(variables, arrays[len(targets) :])),
        outcomes,
        loss_specs=tuple(request.loss.ran),
        loss_notes=(*request.loss.notes, *([regularized] if regularized else [])),
    )


@contextlib.contextmanager
def _tapes(stage_pairs: int) -> Iterator[tuple[Any, list[Any], Any]]:
    """The outer tape (persistent when stage 2 needs a second gradient call) and one inner tape per pair."""
    import tensorflow as tf

    with contextlib.ExitStack() as stack:
        tape = stack.enter_context(tf.GradientTape(persistent=stage_pairs > 0))
        inner_stack = stack.enter_context(contextlib.ExitStack())
        inner = [inner_stack.enter_context(tf.GradientTape()) for _ in range(stage_pairs)]
        yield tape, inner, inner_stack.close


def _stage2_grads(tape: Any, pair: Any, chosen: tuple[tuple[str, str, Any], ...]) -> list[Any]:
    import tensorflow as tf

    return list(
        tape.gradient(pair.stage2_value, [v for *_, v in chosen], unconnected_gradients=tf.UnconnectedGradients.NONE)
    )


def to_numpy(g: Any) -> np.ndarray:
    """A gradient as a numpy array (an IndexedSlices densified), sharing the tensor's buffer."""
    # An Embedding's gradient arrives as IndexedSlices; convert_to_tensor densifies it.
    # np.asarray shares the tensor's buffer (read-only) where .numpy() would copy it.
    import tensorflow as tf

    return np.asarray(tf.convert_to_tensor(g))


def require_differentiable(used: list[Any]) -> None:
    """Refuse a loss on outputs that have no gradient at all (an argmax or integer cast at the end)."""
    if used and not any(getattr(t.dtype, "is_floating", False) for t in used):
        dtypes = ", ".join(sorted({t.dtype.name for t in used}))
        raise GradientError(
            f"the model's output is {dtypes}, which has no gradient (an argmax or an integer cast at the end); "
            "nothing can be differentiated — inspect a model that stops before that layer"
        )
