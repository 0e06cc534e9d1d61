"""`gradinspect layers`: one core call that returns a LayersReport for any supported artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradinspect.artifacts.formats import ModelFormat
from gradinspect.artifacts.graphlayers import graph_layers_report
from gradinspect.artifacts.live import live_layers
from gradinspect.artifacts.loading import load_artifact, open_artifact
from gradinspect.artifacts.savedmodel_static import static_savedmodel_layers
from gradinspect.errors import ModelFileError
from gradinspect.report import LayersReport, ModelInfo


def list_layers(
    path: str | Path, custom_objects: str | Path | None = None, unsafe: bool = False, signature: str | None = None
) -> LayersReport:
    """List a model's layers. `.keras`/`.h5` Sequential and Functional models and SavedModels without
    Keras metadata are read without TensorFlow (for the latter, the layers recovered from the graph of
    ``signature``, else its variables by name scope); subclassed models and tf.keras SavedModels are
    loaded (after the safety scans)."""
    artifact, objects = open_artifact(path, custom_objects, unsafe)
    return _static(artifact, signature) or live_layers(load_artifact(artifact, objects, unsafe))


def static_listing(path: str | Path, unsafe: bool = False, signature: str | None = None) -> LayersReport | None:
    """The listing read without TensorFlow (after the safety scans), or None when only a loader can
    list the model (a subclassed model, a tf.keras SavedModel)."""
    artifact, _ = open_artifact(path, None, unsafe)
    return _static(artifact, signature)


def _static(artifact: Any, signature: str | None) -> LayersReport | None:
    if artifact.format in (ModelFormat.KERAS, ModelFormat.H5):
        return _config_listing(artifact)
    if artifact.format is ModelFormat.SAVEDMODEL:
        return graph_layers_report(artifact, signature) or static_savedmodel_layers(artifact)
    return None


def _config_listing(artifact: Any) -> LayersReport | None:
    """The listing of a Sequential/Functional model: its config graph, walked when the file was read."""
    if artifact.graph_error is not None:
        raise ModelFileError(f"{artifact.path}: {artifact.graph_error}; re-save the model")
    graph = artifact.graph
    if graph is None:
        return None
    info = ModelInfo(
        path=str(artifact.path),
        format=artifact.format.value,
        name=graph.name,
        inputs=graph.inputs,
        loader="static (no TensorFlow)",
        keras_version=artifact.keras_version,
    )
    return LayersReport(info, graph.rows, graph.total_params, graph.trainable_params)
