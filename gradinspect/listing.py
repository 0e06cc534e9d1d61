"""`gradinspect layers`: one core call that returns a LayersReport for any supported artifact."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gradinspect.formats import ModelFormat
from gradinspect.loading import LoadedModel, load_artifact, open_artifact
from gradinspect.report import InputSpec, LayerRow, LayersReport, ModelInfo
from gradinspect.savedmodel_static import static_savedmodel_layers
from gradinspect.structure import has_layer_structure, static_layers


def list_layers(path: str | Path, custom_objects: str | Path | None = None, unsafe: bool = False) -> LayersReport:
    """List a model's layers. `.keras`/`.h5` Sequential and Functional models and SavedModels without
    Keras metadata are read without TensorFlow; subclassed models and tf.keras SavedModels are loaded
    (after the safety scans)."""
    artifact, objects = open_artifact(path, custom_objects, unsafe)
    if artifact.format in (ModelFormat.KERAS, ModelFormat.H5) and has_layer_structure(artifact.config):
        return static_layers(artifact)
    if artifact.format is ModelFormat.SAVEDMODEL:
        return static_savedmodel_layers(artifact)
    return live_layers(load_artifact(artifact, objects, unsafe))


def _size(shape: Any) -> int:
    return math.prod(int(d) for d in shape)


def _shape(value: Any) -> tuple | None:
    try:
        dims = value.as_list() if hasattr(value, "as_list") else list(value)
    except (TypeError, ValueError):
        return None
    return tuple(None if d is None else int(d) for d in dims)


def _dtype_name(dtype: Any) -> str | None:
    if dtype is None:
        return None
    return getattr(dtype, "name", None) or str(dtype)


def _output_shape(layer: Any) -> Any:
    try:
        out = layer.output
    except Exception:  # unbuilt, several nodes, or subclassed: Keras raises various errors
        return None
    if isinstance(out, (list, tuple)):
        shapes = tuple(_shape(t.shape) for t in out)
        return shapes if all(s is not None for s in shapes) else None
    if isinstance(out, dict):
        return None
    return _shape(out.shape)


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
        inputs.append(InputSpec(str(name).split(":")[0], _shape(tensor.shape), _dtype_name(tensor.dtype)))
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

    seen: dict[tuple[str, tuple], Any] = {}
    for node in tf.train.TrackableView(obj).descendants():
        if isinstance(node, tf.Variable):
            seen.setdefault((node.name, tuple(node.shape.as_list())), node)
    return list(seen.values())
