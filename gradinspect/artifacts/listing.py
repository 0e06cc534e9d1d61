"""The layer listing a model file gives without TensorFlow, whatever its format."""

from __future__ import annotations

from gradinspect.artifacts.formats import Artifact, ModelFormat
from gradinspect.artifacts.graphlayers import graph_layers_report
from gradinspect.artifacts.savedmodel_static import static_savedmodel_layers
from gradinspect.errors import ModelFileError
from gradinspect.report import LayersReport, ModelInfo


def static_listing(artifact: Artifact, signature: str | None) -> LayersReport | None:
    """The listing of any format read without TensorFlow, or None when only a loader can list the
    model (a subclassed model, a tf.keras SavedModel): a Keras config's graph, else the layers
    recovered from a bare SavedModel's ``signature`` graph, else its variables by name scope."""
    if artifact.format in (ModelFormat.KERAS, ModelFormat.H5):
        return _config_listing(artifact)
    if artifact.format is ModelFormat.SAVEDMODEL:
        return graph_layers_report(artifact, signature) or static_savedmodel_layers(artifact)
    return None


def _config_listing(artifact: Artifact) -> LayersReport | None:
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
