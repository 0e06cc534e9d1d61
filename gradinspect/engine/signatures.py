"""Gradients of a SavedModel without Keras structure, through one of its signatures."""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from gradinspect.artifacts.loading import LoadedModel
from gradinspect.engine.capture import flatten
from gradinspect.engine.entries import (
    INTEGER,
    NO_PATH,
    NON_DIFFERENTIABLE,
    UNUSED_VARIABLE,
    grad_report,
    numpy_and_stats,
    output_gradient,
    require_differentiable,
    weight_gradient,
)
from gradinspect.errors import GradientError, LayerNameError
from gradinspect.formatting import first_line
from gradinspect.report import InputSpec, PairReport


def savedmodel_signature(loaded: LoadedModel) -> tuple[str, Any, tuple[InputSpec, ...]]:
    """The signature gradients flow through: ``serving_default``, else the only/first one."""
    from gradinspect.artifacts.live import dtype_name, shape_of

    sigs = dict(getattr(loaded.model, "signatures", {}) or {})
    if not sigs:
        raise GradientError(f"{loaded.artifact.path}: the SavedModel has no signatures to run")
    key = "serving_default" if "serving_default" in sigs else sorted(sigs)[0]
    fn = sigs[key]
    _, kwargs = fn.structured_input_signature
    specs = tuple(InputSpec(n, shape_of(spec.shape), dtype_name(spec.dtype)) for n, spec in sorted(kwargs.items()))
    return key, fn, specs


def run_savedmodel(loaded, signature, arrays, pairs, all_layers, loss_spec, loss_fn, target, source, notes):
    """A SavedModel without Keras structure: d loss / d each input and d loss / d each variable.

    Layers do not exist here; name scopes stand in for them (`gradinspect layers` lists them), and
    a pair selects the variables of its two scopes. Output gradients are those of the inputs.
    """
    import tensorflow as tf

    from gradinspect.artifacts.live import savedmodel_variables
    from gradinspect.report import ModelInfo

    key, fn, specs = signature
    variables = []
    for v in savedmodel_variables(loaded.model):
        scope, _, leaf = v.name.split(":")[0].rpartition("/")
        variables.append((scope or "(root)", leaf, v))
    scopes = list(dict.fromkeys(s for s, _, _ in variables))
    known = scopes + [s.name for s in specs]
    if all_layers or not pairs:
        pair_list = [("(inputs)", "(variables)")]
    else:
        pair_list = list(pairs)
        for name in (n for pair in pair_list for n in pair):
            if name not in known:
                close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
                hint = f"; closest: {', '.join(close)}" if close else f"; name scopes: {', '.join(scopes)}"
                raise LayerNameError(f"no name scope or input {name!r} in the SavedModel{hint}")
    feeds = {name: tf.convert_to_tensor(a) for name, a in arrays.items()}
    try:
        with tf.GradientTape() as tape:
            for t in feeds.values():
                if t.dtype.is_floating:
                    tape.watch(t)
            for _, _, v in variables:
                tape.watch(v)
            result = fn(**feeds)
            outputs = [result[k] for k in sorted(result)] if isinstance(result, dict) else flatten(result)
            require_differentiable(outputs, loss_spec)
            loss_value = loss_fn(outputs, target)
    except GradientError:
        raise
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
        raise GradientError(f"the signature {key!r} failed: {first_line(exc)}") from exc
    sources = list(feeds.values()) + [v for _, _, v in variables]
    grads = tape.gradient(loss_value, sources, unconnected_gradients=tf.UnconnectedGradients.NONE)
    captured = {id(t) for t in getattr(fn, "captured_inputs", ())}
    arrays_out: dict[str, np.ndarray] = {}
    outs = []
    np_grads, stats = numpy_and_stats(grads)
    for (name, t), arr, st_ in zip(feeds.items(), np_grads, stats):
        reason = INTEGER if not t.dtype.is_floating else NO_PATH
        outs.append(output_gradient(name, 0, 0, t, arr, st_, reason, arrays_out))
    weights = []
    for (scope, leaf, v), arr, st_ in zip(variables, np_grads[len(feeds) :], stats[len(feeds) :]):
        unused = captured and id(getattr(v, "handle", None)) not in captured
        weights.append(
            weight_gradient(scope, leaf, v, arr, st_, UNUSED_VARIABLE if unused else NON_DIFFERENTIABLE, arrays_out)
        )
    pair_reports = []
    for a, b in pair_list:
        chosen = weights if (a, b) == ("(inputs)", "(variables)") else [w for w in weights if w.layer in (a, b)]
        pair_reports.append(PairReport(a, b, tuple(outs), tuple(chosen)))
    info = ModelInfo(str(loaded.artifact.path), loaded.artifact.format.value, None, specs, loader=loaded.loader)
    notes = (*notes, f"SavedModel without Keras layers: gradients through signature {key!r}")
    return grad_report(info, loss_spec, loss_value, source, arrays, False, tuple(pair_reports), notes, arrays_out)
