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
from gradinspect.engine.stats import tensor_stats
from gradinspect.errors import GradientError
from gradinspect.report import Stage2Report, Stage2Weight


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


def _shapes(env: dict[str, Any]) -> dict[str, tuple]:
    return {k: tuple(int(d) for d in v.shape) for k, v in env.items()}


def _var_shapes(variables: dict[str, dict[str, Any]]) -> dict[str, dict[str, tuple]]:
    return {side: {k: tuple(int(d) for d in v.shape) for k, v in vs.items()} for side, vs in variables.items()}


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


def report(
    pair: StagedPair,
    from_layer: str,
    stage2_grads: list[tuple[str, str, Any, Any]],
    plain: dict[tuple[str, str], np.ndarray | None],
    arrays: dict[str, np.ndarray],
) -> Stage2Report:
    """Build the stage-2 report; ``stage2_grads`` holds (layer, variable, var, gradient)."""
    g = pair.grad.numpy()
    arrays[f"stage1/grad/{from_layer}"] = g
    weights = []
    for layer, name, var, grad in stage2_grads:
        shape = tuple(int(d) for d in var.shape)
        base = plain.get((layer, name))
        base_norm = float(np.linalg.norm(base.astype(np.float64))) if base is not None else None
        if grad is None:
            weights.append(
                Stage2Weight(
                    layer, name, shape, None, base_norm, None, None, "no gradient: stage 2 does not depend on it"
                )
            )
            continue
        arr = grad.numpy() if hasattr(grad, "numpy") else np.asarray(grad)
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
        stage1_expr=pair.spec.stage1.text,
        stage1_value=float(pair.stage1_value.numpy()),
        grad_shape=tuple(g.shape),
        grad_stats=tensor_stats(g),
        expr=pair.spec.stage2.text,
        through=pair.spec.through,
        value=float(pair.stage2_value.numpy()),
        weights=tuple(weights),
    )
