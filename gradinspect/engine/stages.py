"""Gradient-conditioned second-stage losses: g = d stage1 / d act feeds a stage-2 loss.

The inner gradient is taken inside the outer tape's context, so with ``through`` the outer tape
differentiates through g (double backprop); without it g is wrapped in stop_gradient, which is
what the article's separate tapes compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gradinspect.engine.expressions import (
    BUILTIN_STAGE2,
    DEFAULT_STAGE1,
    Expression,
    check_shapes,
    evaluate,
    parse,
)
from gradinspect.engine.stats import StreamingStats, tensor_stats
from gradinspect.errors import GradientError
from gradinspect.report import Stage2Report, Stage2Weight, TensorStats


@dataclass(frozen=True)
class StageSpec:
    """Parsed ``--stage1``/``--stage2`` and ``--through``."""

    stage1: Expression
    stage2: Expression
    through: bool


def output_names(n_outputs: int) -> set[str]:
    """``y`` for one output; ``y0``, ``y1``, … (and ``y`` for the first) for several."""
    return {"y"} | ({f"y{i}" for i in range(n_outputs)} if n_outputs > 1 else set())


def parse_stages(
    stage1: str | None, stage2: str | None, through: bool, n_outputs: int, has_target: bool
) -> StageSpec | None:
    """Parse and whitelist both expressions before anything runs; None when no stage 2 was asked."""
    if stage2 is None:
        if stage1 is not None:
            raise GradientError("--stage1 needs --stage2 (the second-stage loss that uses its gradient)")
        return None
    base = {"act", "out"} | output_names(n_outputs) | ({"target"} if has_target else set())
    s1 = parse(stage1 or DEFAULT_STAGE1, "--stage1", base)
    s2 = parse(BUILTIN_STAGE2.get(stage2, stage2), "--stage2", base | {"grad"})
    return StageSpec(s1, s2, through)


def side_variables(named: list[tuple[str, Any]]) -> dict[str, Any]:
    """Variables of one layer as the expressions name them: the path inside the layer, and its
    last part (``kernel``) when that is unambiguous."""
    found: dict[str, Any] = {}
    leaves: dict[str, list[Any]] = {}
    for name, var in named:
        found[name] = var
        leaves.setdefault(name.split("/")[-1], []).append(var)
    for leaf, vs in leaves.items():
        if len(vs) == 1:
            found.setdefault(leaf, vs[0])
    return found


@dataclass
class StagedPair:
    """The live tensors of one pair's stage computation (inside the tapes)."""

    spec: StageSpec
    act: Any
    env: dict[str, Any]
    variables: dict[str, dict[str, Any]]
    inner: Any
    stage1_value: Any = None
    grad: Any = None
    stage2_value: Any = None


def _shapes(env: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {k: tuple(int(d) for d in v.shape) for k, v in env.items()}


def _var_shapes(variables: dict[str, dict[str, Any]]) -> dict[str, dict[str, tuple[Any, ...]]]:
    return {side: {k: tuple(int(d) for d in v.shape) for k, v in vs.items()} for side, vs in variables.items()}


def begin(
    spec: StageSpec, act_out: tuple[Any, Any], outputs: list[Any], target: Any, sides: dict[str, Any], inner: Any
) -> Any:
    """One pair's stage computation, started inside the tapes: the expressions' names bound
    (``act``, ``out``, ``y``/``y0``…, ``target`` for this batch's rows), checked and stage 1 evaluated.
    ``sides`` maps ``from``/``to`` to (name, variable) pairs."""
    import tensorflow as tf

    act, out = act_out
    env: dict[str, Any] = {"act": act, "out": out, "y": outputs[0]}
    if len(outputs) > 1:
        env.update({f"y{i}": o for i, o in enumerate(outputs)})
    if target is not None:
        env["target"] = tf.constant(target, tf.float32)
    variables = {side: side_variables(named) for side, named in sides.items()}
    pair = StagedPair(spec, act, env, variables, inner)
    check_and_start(pair)
    return pair


def check_and_start(pair: StagedPair) -> None:
    """Check both expressions' shapes on the real operand shapes, then evaluate stage 1 (inside the
    inner tape). Runs before any gradient is taken."""
    shapes = _shapes(pair.env)
    var_shapes = _var_shapes(pair.variables)
    s1_shape = check_shapes(pair.spec.stage1, shapes, var_shapes)
    if s1_shape != ():
        raise GradientError(
            f"--stage1 {pair.spec.stage1.text!r} has shape {s1_shape}; it must be a scalar (wrap it in sum(...))"
        )
    s2_shape = check_shapes(pair.spec.stage2, {**shapes, "grad": shapes["act"]}, var_shapes)
    if s2_shape != ():
        raise GradientError(
            f"--stage2 {pair.spec.stage2.text!r} has shape {s2_shape}; it must be a scalar (wrap it in sum(...))"
        )
    pair.stage1_value = evaluate(pair.spec.stage1, pair.env, pair.variables)


def finish(pair: StagedPair) -> None:
    """Take g = d stage1 / d act (inside the outer tape's context) and evaluate stage 2."""
    import tensorflow as tf

    grad = pair.inner.gradient(pair.stage1_value, pair.act)
    if grad is None:
        raise GradientError(
            f"--stage1 {pair.spec.stage1.text!r} does not depend on act, so its gradient g is undefined"
        )
    pair.grad = grad
    used = grad if pair.spec.through else tf.stop_gradient(grad)
    pair.stage2_value = evaluate(pair.spec.stage2, {**pair.env, "grad": used}, pair.variables)


@dataclass(frozen=True)
class StageOutcome:
    """One pair's stage 1 and 2 as numbers, after the pass: the values, g (per sample; kept for one
    batch only), its statistics and shape, and (layer, variable, var, gradient or None) per variable."""

    spec: StageSpec
    stage1_value: float
    stage2_value: float
    grad: np.ndarray | None
    grad_stats: TensorStats
    grad_shape: tuple[int, ...]
    weights: tuple[tuple[str, str, Any, np.ndarray | None], ...]
    batches: int | None = None


def outcome(pair: StagedPair, stage2_grads: tuple[tuple[str, str, Any, Any], ...]) -> StageOutcome:
    """The numbers of a finished pair (see :func:`finish`); ``stage2_grads`` from the outer tape."""
    g = np.asarray(pair.grad.numpy())
    weights = tuple(
        (layer, name, var, None if grad is None else np.asarray(grad.numpy() if hasattr(grad, "numpy") else grad))
        for layer, name, var, grad in stage2_grads
    )
    return StageOutcome(
        pair.spec,
        float(pair.stage1_value.numpy()),
        float(pair.stage2_value.numpy()),
        g,
        tensor_stats(g),
        tuple(g.shape),
        weights,
    )


class StageSums:
    """Stage 1 and 2 over several batches: the sum of the per-batch losses and of their gradients.

    That is the whole data's value whenever both expressions sum over samples (the default stage 1
    and ``seed`` do); an expression that averages or takes a norm over the batch (``grad-penalty``)
    is a per-batch quantity, and its sum depends on the batch size."""

    def __init__(self, first: StageOutcome) -> None:
        self.first = first
        self.stage1 = self.stage2 = 0.0
        self.rows = self.batches = 0
        self.grad = StreamingStats()
        self.weights: list[np.ndarray | None] = [None for _ in first.weights]

    def add(self, batch: StageOutcome) -> None:
        self.batches += 1
        self.stage1 += batch.stage1_value
        self.stage2 += batch.stage2_value
        self.rows += batch.grad_shape[0] if batch.grad_shape else 0
        if batch.grad is not None:
            self.grad.update(batch.grad)
        for i, (*_, g) in enumerate(batch.weights):
            if g is not None:
                g = g.astype(np.float64)
                self.weights[i] = g if self.weights[i] is None else self.weights[i] + g

    def result(self) -> StageOutcome:
        weights = tuple(
            (layer, name, var, None if g is None else g.astype(np.float32))
            for (layer, name, var, _), g in zip(self.first.weights, self.weights)
        )
        shape = (self.rows, *self.first.grad_shape[1:])
        stats = self.grad.result()
        return StageOutcome(self.first.spec, self.stage1, self.stage2, None, stats, shape, weights, self.batches)


def report(
    out: StageOutcome,
    from_layer: str,
    plain: dict[tuple[str, str], np.ndarray | None],
    arrays: dict[str, np.ndarray],
) -> Stage2Report:
    """Build the stage-2 report, comparing each stage-2 gradient with the plain one (``plain``)."""
    if out.grad is not None:
        arrays[f"stage1/grad/{from_layer}"] = out.grad
    weights = []
    for layer, name, var, arr in out.weights:
        shape = tuple(int(d) for d in var.shape)
        base = plain.get((layer, name))
        base_norm = float(np.linalg.norm(base.astype(np.float64))) if base is not None else None
        if arr is None:
            weights.append(
                Stage2Weight(
                    layer, name, shape, None, base_norm, None, None, "no gradient: stage 2 does not depend on it"
                )
            )
            continue
        stats = tensor_stats(arr)
        cosine = ratio = None
        if base is not None and stats.norm and base_norm:
            a, b = arr.astype(np.float64).ravel(), base.astype(np.float64).ravel()
            cosine = float(np.dot(a, b) / (stats.norm * base_norm))
            ratio = stats.norm / base_norm
        entry = Stage2Weight(layer, name, shape, stats, base_norm, cosine, ratio)
        arrays[entry.key] = arr
        weights.append(entry)
    return Stage2Report(
        stage1_expr=out.spec.stage1.text,
        stage1_value=out.stage1_value,
        grad_shape=out.grad_shape,
        grad_stats=out.grad_stats,
        expr=out.spec.stage2.text,
        through=out.spec.through,
        value=out.stage2_value,
        weights=tuple(weights),
        batches=out.batches,
    )
