"""The objective a pass differentiates: a sum of per-output loss terms, each aimed at one named output.

``--loss`` names one loss for every term; ``--output NAME`` (repeatable) chooses the outputs; a
Keras loss reads each term's own target. ``auto`` (the default) is decided per output when the
pass runs: ``logprob:pred`` when the output's rows are a probability distribution, else ``sum``.
Every term reads the output tensor the model returned, never a copy Keras keeps beside it (Keras
computes crossentropy from the logits it attaches to a softmax output, which would bypass the
recorded output), so output gradients always mean d objective / d that tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradinspect.engine.losses import (
    BUILTIN,
    KERAS_LOSSES,
    LOGPROB_PRED,
    check_loss_spec,
    term_function,
)
from gradinspect.errors import GradientError

# Rows that sum to 1 within this (relative) tolerance, with entries in [0, 1], are distributions.
_DISTRIBUTION_TOL = 1e-3


@dataclass(frozen=True)
class Term:
    """``weight`` · loss ``spec`` of output ``index`` (called ``name``), against ``target`` if it takes one."""

    index: int
    name: str
    spec: str
    weight: float = 1.0
    target: np.ndarray | None = field(default=None, compare=False, repr=False)


class Objective:
    """Callable as ``objective(outputs, _unused_target)``: the scalar sum of its terms.

    After a call, :attr:`ran` holds the loss each term ran (``auto`` resolved; see
    :func:`gradinspect.engine.entries.loss_name` for how the report names it) and :attr:`notes`
    say why ``auto`` chose what it chose.
    """

    def __init__(
        self, terms: list[Term], requested: str, notes: tuple[str, ...] = (), regularizers: bool = False
    ) -> None:
        if not terms:
            raise GradientError("the loss reads no output; name one with --model-output NAME")
        self.terms = terms
        self.requested = requested
        self.output_indices = [t.index for t in terms]
        self.ran: list[str] = [t.spec for t in terms]
        self.fixed_notes = notes
        # Add the model's regularization losses (``--loss compiled``, unless --no-regularizers).
        self.regularizers = regularizers
        # What the report should say about the loss: how ``compiled`` and (after a call) ``auto`` were resolved.
        self.notes: tuple[str, ...] = notes

    def __call__(self, outputs: list[Any], _target: Any = None) -> Any:
        import tensorflow as tf

        values = []
        auto: list[str] = []
        for i, term in enumerate(self.terms):
            if term.index >= len(outputs):
                raise GradientError(f"--model-output {term.name}: the model returned {len(outputs)} outputs")
            y = outputs[term.index]
            spec = _resolve(term, y, auto)
            self.ran[i] = spec
            value = term_function(spec)(y, term.target)
            values.append(value if term.weight == 1 else term.weight * tf.cast(value, value.dtype))
        self.notes = (*self.fixed_notes, *auto)
        return tf.add_n(values) if len(values) > 1 else values[0]


def _resolve(term: Term, y: Any, notes: list[str]) -> str:
    """The loss ``auto`` stands for on output ``y`` (with a note in ``notes`` when it is not ``sum``)."""
    if term.spec != "auto":
        return term.spec
    if is_distribution(y):
        notes.append(
            f"--loss auto: output {term.name!r} holds probability rows (each sums to 1), whose sum is "
            f"constant; the loss is {LOGPROB_PRED} (Σ log p of each sample's predicted class)"
        )
        return LOGPROB_PRED
    return "sum"


def is_distribution(y: Any) -> bool:
    """True when the last axis of ``y`` holds probability rows: entries in [0, 1] that sum to 1."""
    import tensorflow as tf

    if not y.dtype.is_floating or len(y.shape) < 2 or (y.shape[-1] or 0) < 2:
        return False
    values = tf.stop_gradient(y).numpy().astype(np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        return False
    return bool(np.all(np.abs(values.sum(axis=-1) - 1.0) <= _DISTRIBUTION_TOL))


@dataclass(frozen=True)
class OutputChoice:
    """The outputs a loss is aimed at (``--output``), with a target file for each where given."""

    names: tuple[str, ...] = ()
    targets: dict[str, Any] = field(default_factory=dict)


def build_objective(
    spec: str,
    names: list[str],
    choice: OutputChoice,
    targets: dict[str, np.ndarray],
    compiled: Any = None,
    regularizers: bool = True,
) -> Objective:
    """The objective for ``--loss spec`` over the model's outputs ``names``.

    ``targets`` maps output names to target arrays (already read and cut). ``compiled`` is the
    model's compiled ``(losses by output name, weights by output name)`` for ``--loss compiled``,
    which adds the model's regularization losses too unless ``regularizers`` is False.
    """
    for name in choice.names:
        if name not in names:
            raise GradientError(
                f"--model-output {name}: the model has no output {name!r}; its outputs are {', '.join(names)}"
            )
    if spec == "compiled":
        compiled_objective = _compiled_objective(names, choice, targets, compiled)
        compiled_objective.regularizers = regularizers
        return compiled_objective
    check_loss_spec(spec, bool(targets))
    aimed = list(choice.names) or _default_outputs(spec, names)
    terms = [Term(names.index(n), n, spec, 1.0, targets.get(n)) for n in aimed]
    _require_targets(terms)
    return Objective(terms, spec)


def _default_outputs(spec: str, names: list[str]) -> list[str]:
    """Without --output: reductions read every output; any other loss needs a single-output model."""
    if spec in (*BUILTIN, "auto") or len(names) == 1:
        return list(names)
    raise GradientError(
        f"--loss {spec}: the model has {len(names)} outputs ({', '.join(names)}); aim the loss with --model-output NAME"
    )


def _compiled_objective(names: list[str], choice: OutputChoice, targets: dict[str, Any], compiled: Any) -> Objective:
    losses, weights = compiled
    aimed = list(choice.names) or [n for n in names if n in losses]
    terms = []
    for name in aimed:
        if name not in losses:
            raise GradientError(f"--loss compiled: the model was compiled without a loss for output {name!r}")
        terms.append(Term(names.index(name), name, losses[name], float(weights.get(name, 1.0)), targets.get(name)))
    _require_targets(terms)
    described = ", ".join(f"{t.spec} on {t.name}" + ("" if t.weight == 1 else f" × {t.weight:g}") for t in terms)
    return Objective(terms, "compiled", (f"--loss compiled: the model was saved with loss {described}",))


def _require_targets(terms: list[Term]) -> None:
    for term in terms:
        if term.spec in KERAS_LOSSES and term.target is None:
            raise GradientError(
                f"--loss {term.spec} on output {term.name!r} compares it with a target: give --target FILE "
                f"(an .npz keyed by output name for several) or --model-output {term.name}=FILE"
            )
