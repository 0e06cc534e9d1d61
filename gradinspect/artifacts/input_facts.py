"""What a model file says about its inputs beyond their shapes: token vocabularies, and the shapes its
layers were built on (for a tf.keras SavedModel whose input says (None, None))."""

from __future__ import annotations

from typing import Any

from gradinspect.artifacts.formats import Artifact
from gradinspect.artifacts.structure import has_layer_structure, node_inputs

# Layers that only reshape, mask or drop values: an Embedding behind them still reads token ids.
_SHAPE_ONLY = frozenset(
    "InputLayer Masking Reshape Flatten Permute RepeatVector Dropout SpatialDropout1D GaussianNoise GaussianDropout "
    "ActivityRegularization".split()
)


def embedding_vocabularies(config: dict[str, Any] | None, input_names: list[str]) -> dict[str, int]:
    """Inputs that feed an Embedding (directly or through shape-only layers): name -> its ``input_dim``."""
    if not has_layer_structure(config):
        return {}
    assert config is not None
    inner = config["config"]
    layers = inner if isinstance(inner, list) else inner.get("layers", [])
    if config.get("class_name") == "Sequential" or isinstance(inner, list):
        first = next((layer for layer in layers if layer.get("class_name") not in _SHAPE_ONLY), None)
        vocabulary = _input_dim(first)
        return {input_names[0]: vocabulary} if vocabulary and len(input_names) == 1 else {}
    named = {layer.get("name") or (layer.get("config") or {}).get("name"): layer for layer in layers}
    parents = {
        n: [p for node in layer.get("inbound_nodes") or [] for p, *_ in node_inputs(node)] for n, layer in named.items()
    }
    found: dict[str, int] = {}
    for name, layer in named.items():
        vocabulary = _input_dim(layer)
        stack, seen = list(parents.get(name, ())), set()
        while vocabulary and stack:
            parent = stack.pop()
            if parent in seen or parent not in named:
                continue
            seen.add(parent)
            if named[parent].get("class_name") == "InputLayer" and parent in input_names:
                found[parent] = min(found.get(parent, vocabulary), vocabulary)
            elif named[parent].get("class_name") in _SHAPE_ONLY:
                stack.extend(parents.get(parent, ()))
    return found


def _input_dim(layer: dict[str, Any] | None) -> int:
    if not layer or layer.get("class_name") != "Embedding":
        return 0
    value = (layer.get("config") or {}).get("input_dim")
    return int(value) if isinstance(value, int) and value > 0 else 0


def built_input_shapes(artifact: Artifact) -> list[tuple[Any, ...] | None]:
    """Input shapes a tf.keras SavedModel's metadata recorded when its layers were built.

    A Sequential saved after being called, not declared with an input shape, lists its input as
    (None, None); the first layer's ``build_input_shape`` (say (None, 9)) is what it really takes.
    """
    if not artifact.metadata_nodes or not has_layer_structure(artifact.config):
        return []
    built: dict[Any, Any] = {}  # by the name the metadata gives (None when it gives none)
    for node in artifact.metadata_nodes:
        shape = node.get("build_input_shape")
        shape = shape.get("items") if isinstance(shape, dict) else shape
        name = node.get("name") or (node.get("config") or {}).get("name")
        if isinstance(shape, list) and shape and all(d is None or isinstance(d, int) for d in shape):
            built.setdefault(name, tuple(shape))
    assert artifact.config is not None
    inner = artifact.config["config"]
    layers = inner if isinstance(inner, list) else inner.get("layers", [])
    first = next((layer for layer in layers if layer.get("class_name") != "InputLayer"), None)
    if first is None or sum(layer.get("class_name") == "InputLayer" for layer in layers) > 1:
        return []
    return [built.get(first.get("name") or (first.get("config") or {}).get("name"))]
