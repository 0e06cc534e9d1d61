"""The engine: one forward pass under the tape, every requested gradient from one backward call."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np

from gradinspect.capture import recording
from gradinspect.errors import GradientError, LayerNameError
from gradinspect.inputs import check_arrays, random_arrays, read_arrays, select
from gradinspect.listing import live_layers
from gradinspect.loading import LoadedModel, load_model
from gradinspect.losses import make_loss
from gradinspect.report import GradReport, InputSpec, OutputGradient, PairReport, WeightGradient
from gradinspect.stats import tensor_stats

NO_PATH = (
    "no gradient: the layer is not between the inputs and the loss, or the path to the loss goes "
    "through a non-differentiable op (argmax, round, a cast to integer)"
)
INTEGER = "no gradient: the tensor is integer-typed (e.g. an Embedding's indices); integers have no gradient"
NOT_CALLED = "no gradient: the layer was not called in the forward pass"


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
    """Input names, shapes and dtypes as the model takes them."""
    specs = []
    names = getattr(model, "input_names", None)
    for i, t in enumerate(model.inputs):
        name = names[i] if names and i < len(names) else str(getattr(t, "name", f"input_{i}")).split(":")[0]
        dtype = getattr(t.dtype, "name", None) or str(t.dtype)
        specs.append(InputSpec(name, tuple(None if d is None else int(d) for d in t.shape), dtype))
    return specs


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
) -> GradReport:
    """Gradients of ``loss`` w.r.t. the outputs and trainable variables of each pair's layers.

    ``model_or_path`` is a path, a LoadedModel or a live Keras model; ``inputs`` is a file spec
    (as ``--input``), an array, a dict of arrays keyed by input name, or None for ``random``
    seeded samples. Raises GradinspectError subclasses for every expected failure.
    """
    loaded = _as_loaded(model_or_path, custom_objects, unsafe)
    if loaded.loader == "tf.saved_model":
        raise GradientError(
            f"{loaded.artifact.path}: gradients of SavedModels without Keras metadata are not supported yet; "
            "`gradinspect layers` lists its signatures and variables"
        )
    model = loaded.model
    specs = model_inputs(model)
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
    arrays, notes = check_arrays(arrays, specs, source)
    arrays = select(arrays, samples, batch_size)
    pair_list = _resolve_pairs(model, pairs, all_layers)
    loss_fn = make_loss(loss, target is not None)
    target_array = None
    if target is not None:
        target_array = (
            read_arrays(str(target), ["target"])["target"] if isinstance(target, (str, Path)) else np.asarray(target)
        )
        batch = next(iter(arrays.values())).shape[0]
        if target_array.shape[0] != batch:
            target_array = target_array[:batch] if target_array.shape[0] > batch else target_array
    return _run(loaded, arrays, specs, pair_list, loss, loss_fn, target_array, training, source, tuple(notes))


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
        paths = [
            p
            for p in _all_paths(model)
            if not (isinstance(getattr(find_layer(model, p), "layers", None), list) and find_layer(model, p).layers)
        ]
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


def _run(loaded, arrays, specs, pair_list, loss_spec, loss_fn, target, training, source, notes) -> GradReport:
    import tensorflow as tf

    model = loaded.model
    wanted = list(dict.fromkeys(p for pair in pair_list for p in pair))
    layers = {p: find_layer(model, p) for p in wanted}
    input_layers = {p: layer for p, layer in layers.items() if type(layer).__name__ == "InputLayer"}
    call_layers = {p: layer for p, layer in layers.items() if p not in input_layers}
    feeds = {name: tf.convert_to_tensor(a) for name, a in arrays.items()}
    feed = feeds[specs[0].name] if len(specs) == 1 else feeds
    variables: dict[str, list[tuple[str, Any]]] = {
        p: [(_variable_name(v, layer), v) for v in layer.trainable_weights] for p, layer in layers.items()
    }
    try:
        with tf.GradientTape() as tape:
            for t in feeds.values():
                if t.dtype.is_floating:
                    tape.watch(t)
            with recording(call_layers, tape) as calls:
                y = model(feed, training=training)
            outputs = [t for t in _flat(y)]
            loss_value = loss_fn(outputs, target)
    except GradientError:
        raise
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
        raise GradientError(f"the forward pass failed: {str(exc).strip().splitlines()[0][:300]}") from exc
    for p, layer in input_layers.items():
        name = layer.name if layer.name in feeds else specs[0].name
        calls[p] = [[feeds.get(name, feeds[specs[0].name])]]
    out_targets = [(p, c, j, t) for p in wanted for c, ts in enumerate(calls[p]) for j, t in enumerate(ts)]
    var_targets = [(p, n, v) for p in wanted for n, v in variables[p]]
    sources = [t for *_, t in out_targets] + [v for *_, v in var_targets]
    # One backward call for every target: the cost of a single forward+backward pass.
    grads = tape.gradient(loss_value, sources, unconnected_gradients=tf.UnconnectedGradients.NONE) if sources else []
    arrays_out: dict[str, np.ndarray] = {}
    out_reports: dict[str, list[OutputGradient]] = {p: [] for p in wanted}
    for (p, c, j, t), g in zip(out_targets, grads[: len(out_targets)]):
        shape = tuple(int(d) for d in t.shape)
        if g is None:
            reason = INTEGER if not t.dtype.is_floating else NO_PATH
            out_reports[p].append(OutputGradient(p, c, j, shape, None, reason))
            continue
        arr = tf.convert_to_tensor(g).numpy()
        report = OutputGradient(p, c, j, shape, tensor_stats(arr))
        arrays_out[report.key] = arr
        out_reports[p].append(report)
    for p in wanted:
        if not calls[p]:
            out_reports[p].append(OutputGradient(p, 0, 0, (), None, NOT_CALLED))
    w_reports: dict[str, list[WeightGradient]] = {p: [] for p in wanted}
    for (p, n, v), g in zip(var_targets, grads[len(out_targets) :]):
        w = np.asarray(v.numpy())
        wnorm = float(np.sqrt(np.sum(np.square(w.astype(np.float64)))))
        if g is None:
            w_reports[p].append(WeightGradient(p, n, tuple(w.shape), None, wnorm, NO_PATH))
            continue
        arr = tf.convert_to_tensor(g).numpy()
        report = WeightGradient(p, n, tuple(w.shape), tensor_stats(arr), wnorm)
        arrays_out[report.key] = arr
        w_reports[p].append(report)
    pair_reports = tuple(
        PairReport(
            a,
            b,
            tuple(out_reports[a] + (out_reports[b] if b != a else [])),
            tuple(w_reports[a] + (w_reports[b] if b != a else [])),
        )
        for a, b in pair_list
    )
    info = live_layers(loaded).model if loaded.loader != "in-memory" else _memory_info(model, specs)
    return GradReport(
        model=info,
        loss_spec=loss_spec,
        loss_value=float(loss_value.numpy()),
        input_source=source,
        batch_size=int(next(iter(arrays.values())).shape[0]),
        training=training,
        pairs=pair_reports,
        notes=notes,
        arrays=arrays_out,
    )


def _memory_info(model: Any, specs: list[InputSpec]):
    from gradinspect.report import ModelInfo

    return ModelInfo("<in-memory model>", "in-memory", getattr(model, "name", None), tuple(specs), loader="in-memory")


def _flat(y: Any) -> list[Any]:
    from gradinspect.capture import flatten

    return flatten(y)
