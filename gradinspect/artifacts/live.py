"""The structure of a live (loaded) model: its layers by path, their variables and inputs, and its listing."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gradinspect.artifacts.loading import LoadedModel
from gradinspect.errors import LayerNameError
from gradinspect.formatting import without_output_index
from gradinspect.report import InputSpec, LayerRow, LayersReport, ModelInfo


def _size(shape: Any) -> int:
    return math.prod(int(d) for d in shape)


def shape_of(value: Any) -> tuple[Any, ...] | None:
    try:
        dims = value.as_list() if hasattr(value, "as_list") else list(value)
    except (TypeError, ValueError):
        return None
    return tuple(None if d is None else int(d) for d in dims)


def dtype_name(dtype: Any) -> str | None:
    if dtype is None:
        return None
    return getattr(dtype, "name", None) or str(dtype)


def _output_shape(layer: Any) -> Any:
    try:
        out = layer.output
    except Exception:  # unbuilt, several nodes, or subclassed: Keras raises various errors
        return None
    if isinstance(out, (list, tuple)):
        shapes = tuple(shape_of(t.shape) for t in out)
        return shapes if all(s is not None for s in shapes) else None
    if isinstance(out, dict):
        return None
    return shape_of(out.shape)


def _is_container(layer: Any) -> bool:
    # Nested Sequential/Functional models (and subclassed models) expose their own .layers.
    return (
        isinstance(getattr(layer, "layers", None), list) and hasattr(layer, "count_params") and hasattr(layer, "inputs")
    )


def live_layers(loaded: LoadedModel) -> LayersReport:
    """List a live Keras 3 or tf_keras model (SavedModels with Keras metadata, subclassed models)."""
    model = loaded.model
    rows: list[LayerRow] = []

    def walk(layers: list[Any], prefix: str, depth: int) -> None:
        for layer in layers:
            path = f"{prefix}{layer.name}"
            params = sum(_size(w.shape) for w in layer.weights)
            trainable_params = sum(_size(w.shape) for w in layer.trainable_weights)
            container = _is_container(layer) and bool(layer.layers)
            rows.append(
                LayerRow(
                    path,
                    type(layer).__name__,
                    _output_shape(layer),
                    params,
                    trainable_params,
                    bool(layer.trainable),
                    depth,
                    is_container=container,
                )
            )
            if container:
                walk(layer.layers, f"{path}/", depth + 1)

    walk(list(model.layers), "", 0)
    unique = {id(w): w for w in model.weights}
    trainable_ids = {id(w) for w in model.trainable_weights}
    total = sum(_size(w.shape) for w in unique.values())
    trainable = sum(_size(w.shape) for k, w in unique.items() if k in trainable_ids)
    inputs: list[InputSpec] = []
    for tensor in getattr(model, "inputs", None) or []:
        name = getattr(tensor, "name", "input")
        inputs.append(InputSpec(without_output_index(str(name)), shape_of(tensor.shape), dtype_name(tensor.dtype)))
    info = ModelInfo(
        str(loaded.artifact.path),
        loaded.artifact.format.value,
        getattr(model, "name", None),
        tuple(inputs),
        loader=loaded.loader,
        keras_version=loaded.artifact.keras_version,
    )
    return LayersReport(info, tuple(rows), total, trainable)


def savedmodel_variables(obj: Any) -> list[Any]:
    """Every tf.Variable reachable from a restored SavedModel object, each once.

    A plain tf.Module can have an empty ``trainable_variables`` list while its variables are
    reachable as attributes, so the whole object graph is walked. Keras 3 exports list the same
    variable under two attributes, restored as two objects: those are kept once (same name and shape).
    """
    import tensorflow as tf

    seen: dict[tuple[str, tuple[Any, ...]], Any] = {}
    for node in tf.train.TrackableView(obj).descendants():
        if isinstance(node, tf.Variable):
            seen.setdefault((node.name, tuple(node.shape.as_list())), node)
    return list(seen.values())


def all_paths(model: Any) -> list[str]:
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
            close = difflib.get_close_matches(path, all_paths(model), n=3, cutoff=0.4)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise LayerNameError(f"no layer named {path!r} in the model{hint} (see `gradinspect layers`)")
        current = found
    return current


def named_variables(layers: Mapping[str, Any], paths: tuple[str, ...]) -> tuple[tuple[str, str, Any], ...]:
    """(path, name, variable) for every trainable variable of the layers at ``paths`` (see variable_name)."""
    return tuple((p, variable_name(v, layers[p]), v) for p in paths for v in layers[p].trainable_weights)


def variable_name(var: Any, layer: Any) -> str:
    """The variable's path inside its layer: ``kernel``, ``forward_lstm/lstm_cell/kernel``; the whole
    path when it does not name the layer."""
    path = getattr(var, "path", None) or var.name
    path = without_output_index(path)
    parts = path.split("/")
    if layer.name in parts:
        rest = parts[len(parts) - 1 - parts[::-1].index(layer.name) + 1 :]
        if rest:
            return "/".join(rest)
    # The layer's name is not in the path: a nested model's variables (tf.keras names them
    # `i1/kernel:0`), a Bidirectional's loaded by Keras 3 (`forward_gru/gru_cell/kernel`). Keep the
    # whole path, or every inner Dense (both directions) would report one `kernel`.
    return "/".join(parts)


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
        name = names[i] if names and i < len(names) else without_output_index(str(getattr(t, "name", f"input_{i}")))
        dtype = getattr(t.dtype, "name", None) or str(t.dtype)
        specs.append(InputSpec(name, tuple(None if d is None else int(d) for d in t.shape), dtype))
    if specs:
        return specs
    build = getattr(model, "get_build_config", lambda: None)() or {}
    shape = build.get("input_shape")
    if isinstance(shape, (list, tuple)) and all(d is None or isinstance(d, int) for d in shape):
        return [InputSpec("input", tuple(shape), "float32")]
    return [InputSpec("input", None, "float32")]


def activation_name(layer: Any) -> str:
    """The name of a layer's activation (``relu``, ``sigmoid``, ``softmax``…), "" without one."""
    return str(getattr(getattr(layer, "activation", None), "__name__", "") or "")


def final_softmax(model: Any, index: int) -> Any:
    """The layer whose softmax makes output ``index`` (a layer with ``activation=softmax``, a
    ``Softmax`` layer or an ``Activation("softmax")``), or None when that output has none."""
    outputs = list(getattr(model, "outputs", None) or [])
    if not 0 <= index < len(outputs):
        return None
    history = getattr(outputs[index], "_keras_history", None)
    layer = getattr(history, "operation", None) or getattr(history, "layer", None)
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    return layer if type(layer).__name__ == "Softmax" or activation == "softmax" else None


MODEL_INPUT = "input:"


@dataclass(frozen=True)
class ModelInput:
    """A model input as a pair end, ``input:<name>``: every model has one per input, a Sequential
    too (its layers list no InputLayer). It has no variables; its output is the fed tensor."""

    name: str
    trainable_weights: tuple[Any, ...] = ()


def input_ends(model: Any) -> dict[str, ModelInput]:
    """``input:<name>`` for each of the model's inputs, in order."""
    return {f"{MODEL_INPUT}{spec.name}": ModelInput(spec.name) for spec in model_inputs(model)}


def has_input_layer(model: Any) -> bool:
    """Whether the model's layer list holds its InputLayer (a Functional model's does)."""
    return any(type(layer).__name__ == "InputLayer" for layer in getattr(model, "layers", []))


def leaf_paths(model: Any) -> list[str]:
    return [
        p
        for p in all_paths(model)
        if not (isinstance(getattr(find_layer(model, p), "layers", None), list) and find_layer(model, p).layers)
    ]


def between_layers(model: Any, a: str, b: str) -> list[str]:
    """The layers strictly between ``a`` and ``b`` in model order (nested layers included)."""
    paths = leaf_paths(model)
    if a in paths and b in paths:
        return paths[paths.index(a) + 1 : paths.index(b)]
    return []


def output_names(model: Any) -> list[str]:
    """The names of a Keras model's outputs, in order (a Sequential's is its last layer's name)."""
    try:
        names = list(getattr(model, "output_names", None) or [])
    except (AttributeError, ValueError):
        names = []
    if names:
        return [str(n) for n in names]
    try:
        count = len(model.outputs or [])
    except (AttributeError, ValueError):
        count = 1
    layers = getattr(model, "layers", None) or []
    if count <= 1 and layers:
        return [layers[-1].name]
    return [f"output_{i}" for i in range(max(count, 1))]
