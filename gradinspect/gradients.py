"""The engine: one forward pass under the tape, every requested gradient from one backward call."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np

from gradinspect.capture import recording
from gradinspect.entries import (
    INTEGER,
    NO_PATH,
    NON_DIFFERENTIABLE,
    NOT_BETWEEN,
    NOT_CALLED,
    flat_outputs,
    grad_report,
    numpy_and_stats,
    output_gradient,
    require_differentiable,
    weight_gradient,
)
from gradinspect.errors import GradientError, LayerNameError
from gradinspect.inputs import check_arrays, random_arrays, read_arrays, select
from gradinspect.listing import live_layers
from gradinspect.loading import LoadedModel, load_model
from gradinspect.losses import make_loss
from gradinspect.report import GradReport, InputSpec, OutputGradient, PairReport, WeightGradient
from gradinspect.signatures import run_savedmodel, savedmodel_signature
from gradinspect.stages import parse_stages


def _all_paths(model: Any) -> list[str]:
    out: list[str] = []

    def walk(layers: list[Any], prefix: str) -> None:
        for layer in layers:
            out.append(prefix + layer.name)
            if isinstance(getattr(layer, "layers", None), list) and hasattr(layer, "inputs") and layer.layers:
                walk(layer.layers, f"{prefix}{layer.name}/")

    walk(list(model.layers), "")
    return out


def find_layer(model: Any, path: str) -> Any:
    """The layer at ``outer/inner``; an unknown name lists the closest names."""
    current = model
    for part in path.split("/"):
        found = next((layer for layer in getattr(current, "layers", []) if layer.name == part), None)
        if found is None:
            close = difflib.get_close_matches(path, _all_paths(model), n=3, cutoff=0.4)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise LayerNameError(f"no layer named {path!r} in the model{hint} (see `gradinspect layers`)")
        current = found
    return current


def _variable_name(var: Any, layer: Any) -> str:
    """The variable's path inside its layer: ``kernel``, ``forward_lstm/lstm_cell/kernel``."""
    path = getattr(var, "path", None) or var.name
    path = path.split(":")[0]
    parts = path.split("/")
    if layer.name in parts:
        rest = parts[len(parts) - 1 - parts[::-1].index(layer.name) + 1 :]
        if rest:
            return "/".join(rest)
    return parts[-1]


def model_inputs(model: Any) -> list[InputSpec]:
    """Input names, shapes and dtypes as the model takes them.

    A subclassed model has no symbolic inputs; its build shape (recorded when it was saved)
    stands in, as one input named ``input``.
    """
    specs = []
    names = getattr(model, "input_names", None)
    try:
        tensors = list(model.inputs or [])
    except AttributeError:
        tensors = []
    for i, t in enumerate(tensors):
        name = names[i] if names and i < len(names) else str(getattr(t, "name", f"input_{i}")).split(":")[0]
        dtype = getattr(t.dtype, "name", None) or str(t.dtype)
        specs.append(InputSpec(name, tuple(None if d is None else int(d) for d in t.shape), dtype))
    if specs:
        return specs
    build = getattr(model, "get_build_config", lambda: None)() or {}
    shape = build.get("input_shape")
    if isinstance(shape, (list, tuple)) and all(d is None or isinstance(d, int) for d in shape):
        return [InputSpec("input", tuple(shape), "float32")]
    return [InputSpec("input", None, "float32")]


def inspect_gradients(
    model_or_path: Any,
    inputs: Any = None,
    pairs: list[tuple[str, str]] | None = None,
    loss: str = "sum",
    *,
    target: Any = None,
    training: bool = False,
    all_layers: bool = False,
    random: int = 4,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
    samples: str | None = None,
    batch_size: int | None = None,
    custom_objects: str | Path | None = None,
    unsafe: bool = False,
    stage1: str | None = None,
    stage2: str | None = None,
    through: bool = False,
) -> GradReport:
    """Gradients of ``loss`` w.r.t. the outputs and trainable variables of each pair's layers.

    ``model_or_path`` is a path, a LoadedModel or a live Keras model; ``inputs`` is a file spec
    (as ``--input``), an array, a dict of arrays keyed by input name, or None for ``random``
    seeded samples. Raises GradinspectError subclasses for every expected failure.
    """
    loaded = _as_loaded(model_or_path, custom_objects, unsafe)
    signature = None
    if loaded.loader == "tf.saved_model":
        signature = savedmodel_signature(loaded)
        specs = list(signature[2])
    else:
        specs = model_inputs(loaded.model)
    arrays, source, notes = prepare_inputs(specs, inputs, random, seed, input_shape, samples, batch_size)
    batch = next(iter(arrays.values())).shape[0]
    loss_spec = loss
    if loss == "compiled":
        loss_spec = compiled_loss(loaded)
        notes.append(f"--loss compiled: the model was saved with loss {loss_spec}")
    loss_fn = make_loss(loss_spec, target is not None)
    target_array = _target(target, samples, batch_size, batch)
    if signature is not None:
        if stage2 is not None:
            raise GradientError(
                f"{loaded.artifact.path}: --stage2 needs layers (act/out); a SavedModel without Keras metadata has none"
            )
        return run_savedmodel(
            loaded, signature, arrays, pairs, all_layers, loss, loss_fn, target_array, source, tuple(notes)
        )
    pair_list = _resolve_pairs(loaded.model, pairs, all_layers)
    n_outputs = len(getattr(loaded.model, "outputs", None) or [None])
    stages = parse_stages(stage1, stage2, through, n_outputs, target is not None)
    return _run(loaded, arrays, specs, pair_list, loss, loss_fn, target_array, training, source, tuple(notes), stages)


def prepare_inputs(
    specs: list[InputSpec],
    inputs: Any,
    random: int = 4,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
    samples: str | None = None,
    batch_size: int | None = None,
) -> tuple[dict[str, np.ndarray], str, list[str]]:
    """The arrays for one pass, checked against ``specs``: (arrays by input name, source, notes)."""
    names = [s.name for s in specs]
    if isinstance(inputs, (str, Path)):
        source = f"--input {inputs}"
        arrays = read_arrays(str(inputs), names)
    elif inputs is None:
        source = f"--random {random} (seed {seed})"
        arrays = random_arrays(specs, random, seed, input_shape)
    elif isinstance(inputs, dict):
        source = "arrays"
        arrays = {k: np.asarray(v) for k, v in inputs.items()}
    else:
        source = "array"
        arrays = {names[0]: np.asarray(inputs)}
    if set(arrays) != set(names):
        arrays = _rekey(arrays, names, source)
    arrays, note_list = check_arrays(arrays, specs, source)
    return select(arrays, samples, batch_size), source, list(note_list)


def _target(target: Any, samples: str | None, batch_size: int | None, batch: int) -> np.ndarray | None:
    """The --target array, cut by the same --samples/--batch-size as the inputs."""
    if target is None:
        return None
    if isinstance(target, (str, Path)):
        array = read_arrays(str(target), ["target"])["target"]
        label = f"--target {target}"
    else:
        array = np.asarray(target)
        label = "target"
    array = select({"target": array}, samples, batch_size)["target"]
    if array.shape[0] != batch:
        from gradinspect.errors import InputDataError

        raise InputDataError(f"{label}: has {array.shape[0]} samples, the input has {batch}; they must match")
    return array


def compiled_loss(loaded: LoadedModel) -> str:
    """The loss the model was saved with, as a Keras loss name, for ``--loss compiled``."""
    from gradinspect.losses import KERAS_LOSSES

    config = loaded.artifact.config or {}
    raw = (config.get("compile_config") or {}).get("loss") if isinstance(config, dict) else None
    if raw is None and loaded.artifact.training_config:
        raw = loaded.artifact.training_config.get("loss")
    if raw is None:
        raise GradientError(f"{loaded.artifact.path}: --loss compiled: the model was saved without a compiled loss")
    if isinstance(raw, dict) and isinstance(raw.get("config"), (dict, str)) and "class_name" in raw:
        name = raw["class_name"]
        inner = raw["config"]
        if name == "function" and isinstance(inner, str):
            raw = inner
        else:
            # SparseCategoricalCrossentropy -> sparse_categorical_crossentropy
            import re

            raw = re.sub("([a-z0-9])([A-Z])", r"\1_\2", name).lower()
            if isinstance(inner, dict) and inner.get("from_logits"):
                raise GradientError(
                    f"--loss compiled: the model was saved with {name}(from_logits=True); gradinspect applies "
                    "Keras losses to probabilities; pass --loss explicitly"
                )
    aliases = {"mean_squared_error": "mse", "mean_absolute_error": "mae"}
    if isinstance(raw, str):
        name = aliases.get(raw, raw)
        if name in KERAS_LOSSES:
            return name
    raise GradientError(
        f"{loaded.artifact.path}: --loss compiled: the saved loss {raw!r} is not one gradinspect can rebuild "
        "(per-output or custom losses); name the loss with --loss"
    )


def _rekey(arrays: dict[str, np.ndarray], names: list[str], source: str) -> dict[str, np.ndarray]:
    from gradinspect.errors import InputDataError

    if len(arrays) == 1 and len(names) == 1:
        return {names[0]: next(iter(arrays.values()))}
    raise InputDataError(f"{source}: inputs {sorted(arrays)} do not match the model's inputs {names}")


def _as_loaded(model_or_path: Any, custom_objects: Any, unsafe: bool) -> LoadedModel:
    if isinstance(model_or_path, LoadedModel):
        return model_or_path
    if isinstance(model_or_path, (str, Path)):
        return load_model(model_or_path, custom_objects=custom_objects, unsafe=unsafe)
    from gradinspect.formats import Artifact, ModelFormat

    artifact = Artifact(Path("<in-memory model>"), ModelFormat.KERAS, None)
    return LoadedModel(model_or_path, artifact, "in-memory")


def _resolve_pairs(model: Any, pairs: list[tuple[str, str]] | None, all_layers: bool) -> list[tuple[str, str]]:
    if all_layers:
        paths = _leaf_paths(model)
        if len(paths) < 2:
            return [(paths[0], paths[0])] if paths else []
        return list(zip(paths[:-1], paths[1:]))
    if not pairs:
        raise LayerNameError("no layers chosen: give --from A --to B, --pair A:B or --all")
    order = {p: i for i, p in enumerate(_all_paths(model))}
    for a, b in pairs:
        find_layer(model, a)
        find_layer(model, b)
        if order[a] > order[b]:
            raise LayerNameError(f"--from {a} comes after --to {b} in the model; swap them")
    return list(pairs)


def _leaf_paths(model: Any) -> list[str]:
    return [
        p
        for p in _all_paths(model)
        if not (isinstance(getattr(find_layer(model, p), "layers", None), list) and find_layer(model, p).layers)
    ]


def between_layers(model: Any, a: str, b: str) -> list[str]:
    """The layers strictly between ``a`` and ``b`` in model order (nested layers included)."""
    paths = _leaf_paths(model)
    if a in paths and b in paths:
        return paths[paths.index(a) + 1 : paths.index(b)]
    return []


def _run(loaded, arrays, specs, pair_list, loss_spec, loss_fn, target, training, source, notes, stages=None):
    import contextlib

    import tensorflow as tf

    from gradinspect import stages as st

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
        p: [(_variable_name(v, layer), v) for v in layer.trainable_weights] for p, layer in layers.items()
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
            outputs = list(flat_outputs(y))
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
        raise GradientError(f"the forward pass failed: {str(exc).strip().splitlines()[0][:300]}") from exc
    from gradinspect.losses import outputs_used
    from gradinspect.structure import layers_feeding_outputs

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

    from gradinspect import stages as st

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
