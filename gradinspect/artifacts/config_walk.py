"""One walk of a Sequential/Functional model's config (and its weights file, when open): the ConfigGraph.

Parameter counts come from the shapes of the stored weight arrays; output shapes come from
the file where it records them (Keras 3 records the shape of every tensor a layer consumes)
and are otherwise derived by :mod:`gradinspect.artifacts.shapes`, or left empty. No TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gradinspect.artifacts import shapes
from gradinspect.artifacts.config_graph import ConfigGraph, Shape
from gradinspect.artifacts.weights import WeightShapes, snake_case
from gradinspect.report import InputSpec, LayerRow

MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})
# What a hostile or damaged config can make the walk raise (a missing key, a wrong type, a bad
# number, nesting deeper than Python's stack): the config is then malformed.
MALFORMED = (KeyError, TypeError, AttributeError, IndexError, ValueError, RecursionError)
# Layers that only reshape, mask or drop values: an Embedding behind them still reads token ids.
_SHAPE_ONLY = frozenset(
    "InputLayer Masking Reshape Flatten Permute RepeatVector Dropout SpatialDropout1D GaussianNoise GaussianDropout "
    "ActivityRegularization".split()
)


def has_layer_structure(config: dict[str, Any] | None) -> bool:
    """True when the config lists layers (Sequential/Functional), false for subclassed models."""
    if not config:
        return False
    inner = config.get("config")
    return config.get("class_name") in MODEL_CLASSES and (
        isinstance(inner, list) or isinstance(inner, dict) and "layers" in inner
    )


def walk_config(
    config: dict[str, Any], weights: WeightShapes, metadata_nodes: tuple[dict[str, Any], ...] = ()
) -> ConfigGraph | None:
    """The ConfigGraph of ``config`` (None for a subclassed model). Raises one of MALFORMED when the
    config is not what Keras writes. ``metadata_nodes`` (a tf.keras SavedModel's) give built shapes."""
    if not has_layer_structure(config):
        return None
    walker = _Walker(weights)
    _, inputs = walker.walk_model(config, _Place())
    inner = config["config"]
    layers = inner if isinstance(inner, list) else inner.get("layers", [])
    sequential = config.get("class_name") == "Sequential" or isinstance(inner, list)
    names = [_name_of(layer) for layer in layers]
    if sequential:
        parents = {n: frozenset([p] if p else []) for p, n in zip([None, *names], names) if isinstance(n, str)}
        outputs: tuple[str, ...] = tuple(names[-1:]) if names and isinstance(names[-1], str) else ()
    else:
        parents = {
            n: frozenset(p for node in layer.get("inbound_nodes") or [] for p, *_ in node_inputs(node))
            for layer, n in zip(layers, names)
            if isinstance(n, str)
        }
        outputs = tuple(name for name, _, _ in _tensor_refs(inner.get("output_layers", [])))
    declared = [spec.shape for spec in inputs]
    if not all(s and None not in s[1:] for s in declared):
        declared = _built_input_shapes(layers, metadata_nodes) or declared
    return ConfigGraph(
        name=_model_name(config),
        sequential=sequential,
        rows=tuple(walker.rows),
        inputs=tuple(inputs),
        input_shapes=tuple(declared),
        parents=parents,
        output_layers=outputs,
        vocabularies=_vocabularies(layers, sequential, parents),
    )


def _name_of(layer: Any) -> Any:
    return layer.get("name") or (layer.get("config") or {}).get("name")


def _vocabularies(layers: list[Any], sequential: bool, parents: dict[str, frozenset[str]]) -> dict[str, int]:
    """Inputs that feed an Embedding (directly or through shape-only layers): name -> its ``input_dim``."""
    if sequential:
        first = next((layer for layer in layers if layer.get("class_name") not in _SHAPE_ONLY), None)
        vocabulary = _input_dim(first)
        return {"": vocabulary} if vocabulary else {}
    named = {_name_of(layer): layer for layer in layers}
    found: dict[str, int] = {}
    for name, layer in named.items():
        vocabulary = _input_dim(layer)
        stack, seen = list(parents.get(name, ())), set()
        while vocabulary and stack:
            parent = stack.pop()
            if parent in seen or parent not in named:
                continue
            seen.add(parent)
            if named[parent].get("class_name") == "InputLayer":
                found[parent] = min(found.get(parent, vocabulary), vocabulary)
            elif named[parent].get("class_name") in _SHAPE_ONLY:
                stack.extend(parents.get(parent, ()))
    return found


def _input_dim(layer: dict[str, Any] | None) -> int:
    if not layer or layer.get("class_name") != "Embedding":
        return 0
    value = (layer.get("config") or {}).get("input_dim")
    return int(value) if isinstance(value, int) and value > 0 else 0


def _built_input_shapes(layers: list[Any], metadata_nodes: tuple[dict[str, Any], ...]) -> list[Shape | None]:
    """The shape a tf.keras SavedModel's first layer was built on, for a Sequential saved after being
    called, not declared with an input shape (its input then reads (None, None))."""
    if not metadata_nodes:
        return []
    built: dict[Any, Any] = {}  # by the name the metadata gives (None when it gives none)
    for node in metadata_nodes:
        shape = node.get("build_input_shape")
        shape = shape.get("items") if isinstance(shape, dict) else shape
        if isinstance(shape, list) and shape and all(d is None or isinstance(d, int) for d in shape):
            built.setdefault(_name_of(node), tuple(shape))
    first = next((layer for layer in layers if layer.get("class_name") != "InputLayer"), None)
    if first is None or sum(layer.get("class_name") == "InputLayer" for layer in layers) > 1:
        return []
    return [built.get(_name_of(first))]


def _model_name(config: dict[str, Any]) -> str | None:
    inner = config.get("config")
    return inner.get("name") if isinstance(inner, dict) else None


def _batch_shape(cfg: dict[str, Any]) -> tuple[Any, ...] | None:
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if isinstance(shape, dict) and "items" in shape:  # tf.keras SavedModel tuple encoding
        shape = shape["items"]
    return tuple(shape) if isinstance(shape, list) else None


def _dtype(cfg: dict[str, Any]) -> str | None:
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name")
    return dtype if isinstance(dtype, str) else None


def _as_shape(value: Any) -> tuple[Any, ...] | None:
    if isinstance(value, list) and all(v is None or isinstance(v, int) for v in value):
        return tuple(value)
    return None


@dataclass(frozen=True)
class _Place:
    """Where the walk is: the path prefix and depth of nested models, whether the enclosing model is
    trainable, its Keras 3 weights group, its legacy-.h5 weights group, and the snake_case names
    already used by its layers (Keras 3 numbers repeats: dense, dense_1, ...)."""

    prefix: str = ""
    depth: int = 0
    trainable: bool = True
    container: str = ""
    h5_group: Any = None
    used: dict[str, int] = field(default_factory=dict, compare=False)


class _Walker:
    """Walks a model config the way Keras walks ``model.layers``, emitting rows."""

    def __init__(self, weights: WeightShapes) -> None:
        self.weights = weights
        self.keras3 = weights.keras3
        self.rows: list[LayerRow] = []

    # -- models -----------------------------------------------------------------------------

    def walk_model(
        self, cfg: dict[str, Any], place: _Place, input_shapes: list[tuple[Any, ...] | None] | None = None
    ) -> tuple[Any, list[InputSpec]]:
        """Emit rows for every layer of ``cfg``; return its output shape and its inputs."""
        inner = cfg["config"]
        layers = inner if isinstance(inner, list) else inner.get("layers", [])
        trainable = place.trainable and (not isinstance(inner, dict) or inner.get("trainable", True) is not False)
        place = replace(place, trainable=trainable, used={})
        if cfg.get("class_name") == "Sequential" or isinstance(inner, list):
            return self._walk_sequential(cfg, layers, place, input_shapes)
        return self._walk_functional(inner, layers, place)

    def _walk_sequential(
        self, cfg: dict[str, Any], layers: list[Any], place: _Place, input_shapes: list[tuple[Any, ...] | None] | None
    ) -> tuple[Any, list[InputSpec]]:
        inner = cfg["config"]
        inputs: list[InputSpec] = []
        shape: tuple[Any, ...] | None = None
        body = list(layers)
        if body and body[0].get("class_name") == "InputLayer":
            first = body.pop(0)["config"]
            shape = _batch_shape(first)
            inputs.append(InputSpec(first.get("name", "input"), shape, _dtype(first)))
        elif body:
            first = body[0]["config"]
            shape = _batch_shape(first)
            if shape is None and isinstance(inner, dict):
                shape = _as_shape((cfg.get("build_config") or {}).get("input_shape"))
            if shape is not None:
                inputs.append(InputSpec(f"{first.get('name', 'input')}_input", shape, _dtype(first)))
        if shape is None and input_shapes:
            shape = input_shapes[0]
        for i, layer in enumerate(body):
            recorded = None
            if i + 1 < len(body):
                recorded = _as_shape((body[i + 1].get("build_config") or {}).get("input_shape"))
            if shape is None:
                shape = _as_shape((layer.get("build_config") or {}).get("input_shape"))
            out = self._layer(layer, place, [shape], recorded)
            shape = out if isinstance(out, tuple) and not (out and isinstance(out[0], tuple)) else None
        return shape, inputs

    def _walk_functional(self, inner: dict[str, Any], layers: list[Any], place: _Place) -> tuple[Any, list[InputSpec]]:
        recorded: dict[tuple[str, int, int], tuple[Any, ...]] = {}
        for layer in layers:
            for node in layer.get("inbound_nodes") or []:
                for name, node_i, tensor_i, shape in node_inputs(node):
                    if shape is not None:
                        recorded[(name, node_i, tensor_i)] = shape
        computed: dict[tuple[str, int, int], tuple[Any, ...] | None] = {}
        inputs: list[InputSpec] = []
        for layer in layers:
            lname = layer.get("name") or layer["config"].get("name")
            if layer.get("class_name") == "InputLayer":
                shape = _batch_shape(layer["config"])
                inputs.append(InputSpec(lname, shape, _dtype(layer["config"])))
                computed[(lname, 0, 0)] = shape
            nodes = layer.get("inbound_nodes") or []
            first_out: Any = computed.get((lname, 0, 0)) if layer.get("class_name") == "InputLayer" else None
            for k, node in enumerate(nodes):
                ins = [_lookup(recorded, computed, n, ni, ti) for n, ni, ti, _ in node_inputs(node)]
                rec = recorded.get((lname, k, 0))
                if k == 0:
                    out = self._layer(layer, place, ins, rec)
                    first_out = out
                else:
                    out = self._derive(layer, ins, rec)
                for t, s in enumerate(_split_outputs(out)):
                    computed[(lname, k, t)] = recorded.get((lname, k, t)) or s
            if not nodes and layer.get("class_name") != "InputLayer":
                self._layer(layer, place, [], None)
            elif layer.get("class_name") == "InputLayer":
                self._layer(layer, place, [], first_out)
        outs = [computed.get(k) for k in _tensor_refs(inner.get("output_layers", []))]
        return (outs[0] if len(outs) == 1 else tuple(outs) if outs and all(outs) else None), inputs

    # -- one layer --------------------------------------------------------------------------

    def _derive(
        self, layer: dict[str, Any], ins: list[tuple[Any, ...] | None], recorded: tuple[Any, ...] | None
    ) -> Any:
        if layer.get("class_name") == "InputLayer":
            return _batch_shape(layer["config"])
        derived = shapes.infer(layer["class_name"], layer["config"], ins)
        if recorded is not None and (
            derived is None or isinstance(derived, tuple) and not (derived and isinstance(derived[0], tuple))
        ):
            return recorded
        return derived

    def _layer(
        self, layer: dict[str, Any], place: _Place, ins: list[tuple[Any, ...] | None], recorded: tuple[Any, ...] | None
    ) -> Any:
        cls = layer.get("class_name", "?")
        cfg = layer.get("config") or {}
        lname = layer.get("name") or cfg.get("name") or snake_case(cls)
        path = f"{place.prefix}{lname}"
        depth = place.depth
        trainable = place.trainable and cfg.get("trainable", True) is not False
        keras3 = self.keras3
        group = self.weights.group(place.container, cls, lname, place.used) if keras3 else None
        if has_layer_structure(layer):
            index = len(self.rows)
            self.rows.append(LayerRow(path, cls, None, 0, 0, trainable, depth, is_container=True))
            h5 = place.h5_group
            sub_h5 = self.weights.h5_group(lname) if not keras3 and h5 is None else h5
            inner = _Place(f"{path}/", depth + 1, trainable, f"{group}/layers" if group else "", sub_h5)
            out, _ = self.walk_model(layer, inner, ins or None)
            if out is None and recorded is not None:
                out = recorded
            children = [r for r in self.rows[index + 1 :] if not r.is_container]
            self.rows[index] = LayerRow(
                path,
                cls,
                out,
                sum(r.params for r in children),
                sum(r.trainable_params for r in children),
                trainable,
                depth,
                is_container=True,
            )
            return out
        out = self._derive(layer, ins, recorded)
        vars_ = self.weights.variables(cls, lname, group, trainable, place.h5_group)
        self.rows.append(LayerRow(path, cls, _normalize(out), vars_.params, vars_.trainable_params, trainable, depth))
        return out


def _lookup(
    recorded: dict[tuple[str, int, int], Any],
    computed: dict[tuple[str, int, int], Any],
    name: str,
    node: int,
    tensor: int,
) -> tuple[Any, ...] | None:
    """Shape of tensor ``tensor`` of call ``node`` of layer ``name``.

    tf.keras numbers a nested Sequential's calls from 1 (its own build is call 0) while its
    config lists only the one call, so a layer with a single known call answers any index.
    """
    exact = recorded.get((name, node, tensor)) or computed.get((name, node, tensor))
    if exact is not None:
        return tuple(exact)
    calls = {k[1] for k in computed if k[0] == name and k[2] == tensor}
    if len(calls) == 1:
        found = computed[(name, calls.pop(), tensor)]
        return None if found is None else tuple(found)
    return None


def _normalize(out: Any) -> Any:
    if isinstance(out, list):
        return tuple(tuple(s) if s is not None else None for s in out) if all(s is not None for s in out) else None
    return out


def _split_outputs(out: Any) -> list[tuple[Any, ...] | None]:
    if isinstance(out, list):
        return out
    if isinstance(out, tuple) and out and isinstance(out[0], tuple):
        return list(out)
    return [out]


def _tensor_refs(spec: Any) -> list[tuple[str, int, int]]:
    if isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str):
        return [(spec[0], int(spec[1]), int(spec[2]))]
    refs: list[tuple[str, int, int]] = []
    if isinstance(spec, list):
        for item in spec:
            refs.extend(_tensor_refs(item))
    elif isinstance(spec, dict):
        for item in spec.values():
            refs.extend(_tensor_refs(item))
    return refs


def node_inputs(node: Any) -> list[tuple[str, int, int, tuple[Any, ...] | None]]:
    """The tensors one call consumes: (layer, node, tensor, recorded shape or None)."""
    found: list[tuple[str, int, int, tuple[Any, ...] | None]] = []
    if isinstance(node, dict) and "args" in node:  # Keras 3
        _keras3_tensors(node.get("args"), found)
        _keras3_tensors(node.get("kwargs"), found)
    elif isinstance(node, list):  # Keras 2: [[name, node, tensor, kwargs], ...]
        for item in node:
            if isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str):
                found.append((item[0], int(item[1]), int(item[2]), None))
    return found


def _keras3_tensors(obj: Any, out: list[tuple[str, int, int, tuple[Any, ...] | None]]) -> None:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            cfg = obj.get("config") or {}
            hist = cfg.get("keras_history") or []
            if len(hist) == 3:
                out.append((hist[0], int(hist[1]), int(hist[2]), _as_shape(cfg.get("shape"))))
            return
        for v in obj.values():
            _keras3_tensors(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _keras3_tensors(v, out)
