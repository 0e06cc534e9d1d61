"""`gradinspect layers`: one core call that returns a LayersReport for any supported artifact."""

from __future__ import annotations

from pathlib import Path

from gradinspect.artifacts import listing
from gradinspect.artifacts.live import live_layers
from gradinspect.artifacts.loading import load_artifact, open_artifact
from gradinspect.report import LayersReport


def list_layers(
    path: str | Path, custom_objects: str | Path | None = None, unsafe: bool = False, signature: str | None = None
) -> LayersReport:
    """List a model's layers. `.keras`/`.h5` Sequential and Functional models and SavedModels without
    Keras metadata are read without TensorFlow (for the latter, the layers recovered from the graph of
    ``signature``, else its variables by name scope); subclassed models and tf.keras SavedModels are
    loaded (after the safety scans)."""
    artifact, objects = open_artifact(path, custom_objects, unsafe)
    return listing.static_listing(artifact, signature) or live_layers(load_artifact(artifact, objects, unsafe))


def static_listing(path: str | Path, unsafe: bool = False, signature: str | None = None) -> LayersReport | None:
    """The listing read without TensorFlow (after the safety scans), or None when only a loader can
    list the model (a subclassed model, a tf.keras SavedModel)."""
    artifact, _ = open_artifact(path, None, unsafe)
    return listing.static_listing(artifact, signature)
