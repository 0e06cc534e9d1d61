"""The engine: one forward pass under the tape, every requested gradient from one backward call."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradinspect.artifacts.live import all_paths, between_layers, find_layer, leaf_paths, live_layers, variable_name
from gradinspect.engine.capture import flatten, recording
from gradinspect.engine.entries import (
    INTEGER,
    NO_PATH,
    NON_DIFFERENTIABLE,
    NOT_BETWEEN,
    NOT_CALLED,
    grad_report,
    numpy_and_stats,
    output_gradient,
    require_differentiable,
    weight_gradient,
)
from gradinspect.errors import GradientError, LayerNameError
from gradinspect.formatting import first_line
from gradinspect.report import InputSpec, OutputGradient, PairReport, WeightGradient


def resolve_pairs(model: Any, pairs: list[tuple[str, str]] | None, all_layers: bool) -> list[tuple[str, str]]:
    if all_layers:
        paths = leaf_paths(model)
        if len(paths) < 2:
            return [(paths[0], paths[0])] if paths else []
        return list(zip(paths[:-1], paths[1:]))
    if not pairs:
        raise LayerNameError("no layers chosen: give --from A --to B, --pair A:B or --all")
    order = {p: i for i, p in enumerate(all_paths(model))}
    for a, b in pairs:
        find_layer(model, a)
        find_layer(model, b)
        if order[a] > order[b]:
            raise LayerNameError(f"--from {a} comes after --to {b} in the model; swap them")
    return list(pairs)


def run_keras_pass(loaded, arrays, specs, pair_list, loss_spec, loss_fn, target, training, source, notes, stages=None):
    import contextlib

    import tensorflow as tf

    from gradinspect.engine import stages as st

    model = loaded.model
    wanted = list(dict.fromkeys(p for pair in pair_list for p in pair))
    between = {pair: between_layers(model, *pair) for pair in pair_list} if stages else {}
    var_layers = list(dict.fromkeys(wanted + [p for ps in between.values() for p in ps]))
    layers = {p: find_layer(model, p) for p in var_layers}
    input_layers = {p: layers[p] for p in wanted if type(layers[p]).__name__ == "InputLayer"}
    call_layers = {p: layers[p] for p in wanted if p not in input_layers}
    feeds = {name: tf.convert_to_tensor(a) for name, a in arrays.items()}
    feed = feeds[specs[0].name] if len(specs) == 1 else feeds
    variables: dict[str, list[tuple[str, Any]]] = {
        p: [(variable_name(v, layer), v) for v in layer.trainable_weights] for p, layer in layers.items()
    }
    staged: list[Any] = []
    try:
        with contextlib.ExitStack() as stack:
            # With a second stage, the outer tape serves two gradient calls (the plain loss and
            # stage 2), so it is persistent; each pair's inner tape gives g = d stage1 / d act.
            tape = stack.enter_context(tf.GradientTape(persistent=stages is not None))
            inner_stack = stack.enter_context(contextlib.ExitStack())
            inner = [inner_stack.enter_context(tf.GradientTape()) for _ in pair_list] if stages else []
            for t in feeds.values():
                if t.dtype.is_floating:
                    for each in (tape, *inner):
                        each.watch(t)
            with recording(call_layers, [tape, *inner]) as calls:
                y = model(feed, training=training)
            outputs = list(flatten(y))
            require_differentiable(outputs, loss_spec)
            loss_value = loss_fn(outputs, target)
            for p, layer in input_layers.items():
                calls[p] = [[feeds.get(layer.name, feeds[specs[0].name])]]
            if stages:
                for (a, b), inner_tape in zip(pair_list, inner):
                    staged.append(_start_stage(stages, a, b, calls, outputs, target, variables, inner_tape))
                inner_stack.close()
                for pair in staged:
                    st.finish(pair)
    except GradientError:
        raise
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
        raise GradientError(f"the forward pass failed: {first_line(exc)}") from exc
    from gradinspect.artifacts.structure import layers_feeding_outputs
    from gradinspect.engine.losses import outputs_used

    on_path = layers_feeding_outputs(loaded.artifact.config, outputs_used(loss_spec, len(outputs)))

    def no_grad(p: str) -> str:
        if on_path is None:
            return NO_PATH
        return NON_DIFFERENTIABLE if p.split("/")[0] in on_path else NOT_BETWEEN

    out_targets = [(p, c, j, t) for p in wanted for c, ts in enumerate(calls[p]) for j, t in enumerate(ts)]
    var_targets = [(p, n, v) for p in var_layers for n, v in variables[p]]
    sources = [t for *_, t in out_targets] + [v for *_, v in var_targets]
    # One backward call for every target: the cost of a single forward+backward pass.
    grads = tape.gradient(loss_value, sources, unconnected_gradients=tf.UnconnectedGradients.NONE) if sources else []
    arrays_out: dict[str, np.ndarray] = {}
    out_reports: dict[str, list[OutputGradient]] = {p: [] for p in wanted}
    np_grads, stats = numpy_and_stats(list(grads))
    for (p, c, j, t), arr, st_ in zip(out_targets, np_grads, stats):
        reason = INTEGER if not t.dtype.is_floating else no_grad(p)
        out_reports[p].append(output_gradient(p, c, j, t, arr, st_, reason, arrays_out))
    for p in wanted:
        if not calls[p]:
            out_reports[p].append(OutputGradient(p, 0, 0, (), None, NOT_CALLED))
    w_reports: dict[str, list[WeightGradient]] = {p: [] for p in wanted}
    plain: dict[tuple[str, str], np.ndarray | None] = {}
    n_out = len(out_targets)
    for (p, n, v), arr, st_ in zip(var_targets, np_grads[n_out:], stats[n_out:]):
        plain[(p, n)] = arr
        if p in w_reports:
            w_reports[p].append(weight_gradient(p, n, v, arr, st_, no_grad(p), arrays_out))
    stage_reports: list[Any] = [None] * len(pair_list)
    for i, pair in enumerate(staged):
        a, b = pair_list[i]
        chain = [a, *between[(a, b)], b] if b != a else [a]
        targets = [(p, n, v) for p in chain for n, v in variables[p]]
        g2 = tape.gradient(
            pair.stage2_value, [v for *_, v in targets], unconnected_gradients=tf.UnconnectedGradients.NONE
        )
        stage_reports[i] = st.report(pair, a, [(p, n, v, g) for (p, n, v), g in zip(targets, g2)], plain, arrays_out)
    del tape
    pair_reports = tuple(
        PairReport(
            a,
            b,
            tuple(out_reports[a] + (out_reports[b] if b != a else [])),
            tuple(w_reports[a] + (w_reports[b] if b != a else [])),
            stage_reports[i],
        )
        for i, (a, b) in enumerate(pair_list)
    )
    info = live_layers(loaded).model if loaded.loader != "in-memory" else _memory_info(model, specs)
    return grad_report(info, loss_spec, loss_value, source, arrays, training, pair_reports, notes, arrays_out)


def _start_stage(stages, a, b, calls, outputs, target, variables, inner_tape):
    import tensorflow as tf

    from gradinspect.engine import stages as st

    if not calls[a] or not calls[b]:
        missing = a if not calls[a] else b
        raise GradientError(f"layer {missing!r} was not called in the forward pass, so stage 2 has no act/out")
    env: dict[str, Any] = {"act": calls[a][0][0], "out": calls[b][0][0], "y": outputs[0]}
    if len(outputs) > 1:
        env.update({f"y{i}": o for i, o in enumerate(outputs)})
    if target is not None:
        env["target"] = tf.constant(target, tf.float32)
    sides = {"from": st.side_variables(variables[a]), "to": st.side_variables(variables[b])}
    pair = st.StagedPair(stages, env["act"], env, sides, inner_tape)
    st.check_and_start(pair)
    return pair


def _memory_info(model: Any, specs: list[InputSpec]):
    from gradinspect.report import ModelInfo

    return ModelInfo("<in-memory model>", "in-memory", getattr(model, "name", None), tuple(specs), loader="in-memory")
