"""Layer structure of a `.keras` or `.h5` model read from its config and weights file, without TensorFlow.

Parameter counts come from the shapes of the stored weight arrays; output shapes come from
the file where it records them (Keras 3 records the shape of every tensor a layer consumes)
and are otherwise derived by :mod:`gradinspect.artifacts.shapes`, or left empty.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gradinspect.artifacts import shapes
from gradinspect.artifacts.formats import HDF5_ERRORS, Artifact, ModelFormat
from gradinspect.errors import ModelFileError
from gradinspect.report import InputSpec, LayerRow, LayersReport, ModelInfo

MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})
# Variables that Keras creates as non-trainable, by layer class: how many of the layer's own
# variables, counted from the end, are non-trainable (None: all of them).
_NON_TRAINABLE_TAIL: dict[str, int | None] = {
    "BatchNormalization": 2,  # moving_mean, moving_variance
    "SyncBatchNormalization": 2,
    "Normalization": None,  # mean, variance, count
}
_NON_TRAINABLE_NAMES = frozenset({"moving_mean", "moving_variance"})


@dataclass
class _Vars:
    """The weight arrays of one layer: (name, shape) and which are trainable."""

    shapes: list[tuple[str, tuple[int, ...]]]
    trainable: list[bool]

    @property
    def params(self) -> int:
        return sum(math.prod(s) for _, s in self.shapes)

    @property
    def trainable_params(self) -> int:
        return sum(math.prod(s) for (_, s), t in zip(self.shapes, self.trainable) if t)


def has_layer_structure(config: dict[str, Any] | None) -> bool:
    """True when the config lists layers (Sequential/Functional), false for subclassed models."""
    if not config:
        return False
    inner = config.get("config")
    return config.get("class_name") in MODEL_CLASSES and (
        isinstance(inner, list) or isinstance(inner, dict) and "layers" in inner
    )


def static_layers(artifact: Artifact) -> LayersReport:
    """List the layers of a Sequential/Functional `.keras` or `.h5` model without TensorFlow."""
    assert artifact.config is not None and artifact.format in (ModelFormat.KERAS, ModelFormat.H5)
    with _weights(artifact) as weights:
        walker = _Walker(weights, artifact.format)
        try:
            _, inputs = walker.walk_model(artifact.config, prefix="", depth=0, parent_trainable=True, container="")
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            # The config is untrusted JSON: a missing key or a wrong type is a malformed file.
            raise ModelFileError(
                f"{artifact.path}: the model config is malformed ({type(exc).__name__}: {exc}); re-save the model"
            ) from exc
    name = _model_name(artifact.config)
    info = ModelInfo(
        path=str(artifact.path),
        format=artifact.format.value,
        name=name,
        inputs=tuple(inputs),
        loader="static (no TensorFlow)",
        keras_version=artifact.keras_version,
    )
    total = sum(r.params for r in walker.rows if not r.is_container)
    trainable = sum(r.trainable_params for r in walker.rows if not r.is_container)
    return LayersReport(info, tuple(walker.rows), total, trainable)


def _model_name(config: dict[str, Any]) -> str | None:
    inner = config.get("config")
    return inner.get("name") if isinstance(inner, dict) else None


@contextmanager
def _weights(artifact: Artifact) -> Iterator[Any]:
    import h5py

    try:
        if artifact.format is ModelFormat.KERAS:
            with zipfile.ZipFile(artifact.source) as zf:
                if "model.weights.h5" not in zf.namelist():
                    yield None
                    return
                with zf.open("model.weights.h5") as fh, h5py.File(fh, "r") as h5:
                    yield h5
        else:
            with h5py.File(artifact.source, "r") as h5:
                yield h5.get("model_weights", h5)
    except (*HDF5_ERRORS, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(
            f"{artifact.path}: the weights cannot be read ({exc}); the file is truncated or corrupt"
        ) from exc


def _snake(name: str) -> str:
    # keras.src.utils.naming.to_snake_case: how Keras 3 names weight groups in model.weights.h5.
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _batch_shape(cfg: dict[str, Any]) -> tuple | None:
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if isinstance(shape, dict) and "items" in shape:  # tf.keras SavedModel tuple encoding
        shape = shape["items"]
    return tuple(shape) if isinstance(shape, list) else None


def _dtype(cfg: dict[str, Any]) -> str | None:
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name")
    return dtype if isinstance(dtype, str) else None


def _as_shape(value: Any) -> tuple | None:
    if isinstance(value, list) and all(v is None or isinstance(v, int) for v in value):
        return tuple(value)
    return None


class _Walker:
    """Walks a model config the way Keras walks ``model.layers``, emitting rows."""

    def __init__(self, weights: Any, fmt: ModelFormat) -> None:
        self.weights = weights
        self.fmt = fmt
        self.rows: list[LayerRow] = []

    # -- models -----------------------------------------------------------------------------

    def walk_model(
        self,
        cfg: dict[str, Any],
        prefix: str,
        depth: int,
        parent_trainable: bool,
        container: str,
        input_shapes: list[tuple | None] | None = None,
        h5_group: Any = None,
    ) -> tuple[Any, list[InputSpec]]:
        """Emit rows for every layer of ``cfg``; return its output shape and its inputs."""
        inner = cfg["config"]
        layers = inner if isinstance(inner, list) else inner.get("layers", [])
        trainable = parent_trainable and (not isinstance(inner, dict) or inner.get("trainable", True) is not False)
        if cfg.get("class_name") == "Sequential" or isinstance(inner, list):
            return self._walk_sequential(cfg, layers, prefix, depth, trainable, container, input_shapes, h5_group)
        return self._walk_functional(inner, layers, prefix, depth, trainable, container, h5_group)

    def _walk_sequential(self, cfg, layers, prefix, depth, trainable, container, input_shapes, h5_group):
        inner = cfg["config"]
        inputs: list[InputSpec] = []
        shape: tuple | None = None
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
        used: dict[str, int] = {}
        for i, layer in enumerate(body):
            recorded = None
            if i + 1 < len(body):
                recorded = _as_shape((body[i + 1].get("build_config") or {}).get("input_shape"))
            if shape is None:
                shape = _as_shape((layer.get("build_config") or {}).get("input_shape"))
            out = self._layer(layer, prefix, depth, trainable, container, used, [shape], recorded, h5_group)
            shape = out if isinstance(out, tuple) and not (out and isinstance(out[0], tuple)) else None
        return shape, inputs

    def _walk_functional(self, inner, layers, prefix, depth, trainable, container, h5_group):
        recorded: dict[tuple[str, int, int], tuple] = {}
        for layer in layers:
            for node in layer.get("inbound_nodes") or []:
                for name, node_i, tensor_i, shape in _node_inputs(node):
                    if shape is not None:
                        recorded[(name, node_i, tensor_i)] = shape
        computed: dict[tuple[str, int, int], tuple | None] = {}
        inputs: list[InputSpec] = []
        used: dict[str, int] = {}
        for layer in layers:
            lname = layer.get("name") or layer["config"].get("name")
            if layer.get("class_name") == "InputLayer":
                shape = _batch_shape(layer["config"])
                inputs.append(InputSpec(lname, shape, _dtype(layer["config"])))
                computed[(lname, 0, 0)] = shape
            nodes = layer.get("inbound_nodes") or []
            first_out: Any = computed.get((lname, 0, 0)) if layer.get("class_name") == "InputLayer" else None
            for k, node in enumerate(nodes):
                ins = [_lookup(recorded, computed, n, ni, ti) for n, ni, ti, _ in _node_inputs(node)]
                rec = recorded.get((lname, k, 0))
                if k == 0:
                    out = self._layer(layer, prefix, depth, trainable, container, used, ins, rec, h5_group)
                    first_out = out
                else:
                    out = self._derive(layer, ins, rec)
                for t, s in enumerate(_split_outputs(out)):
                    computed[(lname, k, t)] = recorded.get((lname, k, t)) or s
            if not nodes and layer.get("class_name") != "InputLayer":
                self._layer(layer, prefix, depth, trainable, container, used, [], None, h5_group)
            elif layer.get("class_name") == "InputLayer":
                self._layer(layer, prefix, depth, trainable, container, used, [], first_out, h5_group)
        outs = [computed.get(k) for k in _tensor_refs(inner.get("output_layers", []))]
        return (outs[0] if len(outs) == 1 else tuple(outs) if outs and all(outs) else None), inputs

    # -- one layer --------------------------------------------------------------------------

    def _derive(self, layer: dict[str, Any], ins: list[tuple | None], recorded: tuple | None) -> Any:
        if layer.get("class_name") == "InputLayer":
            return _batch_shape(layer["config"])
        derived = shapes.infer(layer["class_name"], layer["config"], ins)
        if recorded is not None and (
            derived is None or isinstance(derived, tuple) and not (derived and isinstance(derived[0], tuple))
        ):
            return recorded
        return derived

    def _layer(self, layer, prefix, depth, parent_trainable, container, used, ins, recorded, h5_group):
        cls = layer.get("class_name", "?")
        cfg = layer.get("config") or {}
        lname = layer.get("name") or cfg.get("name") or _snake(cls)
        path = f"{prefix}{lname}"
        trainable = parent_trainable and cfg.get("trainable", True) is not False
        group = self._keras3_group(container, cls, lname, used) if self.fmt is ModelFormat.KERAS else None
        if has_layer_structure(layer):
            index = len(self.rows)
            self.rows.append(LayerRow(path, cls, None, 0, 0, trainable, depth, is_container=True))
            sub_h5 = self._h5_group(lname) if self.fmt is ModelFormat.H5 and h5_group is None else h5_group
            out, _ = self.walk_model(
                layer, f"{path}/", depth + 1, trainable, f"{group}/layers" if group else "", ins or None, sub_h5
            )
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
        vars_ = self._vars(cls, lname, group, trainable, h5_group)
        self.rows.append(LayerRow(path, cls, _normalize(out), vars_.params, vars_.trainable_params, trainable, depth))
        return out

    # -- weights ----------------------------------------------------------------------------

    def _keras3_group(self, container: str, cls: str, lname: str, used: dict[str, int]) -> str:
        base = _snake(cls)
        if base in used:
            used[base] += 1
            base = f"{base}_{used[base]}"
        else:
            used[base] = 0
        path = f"{container}/{base}" if container else f"layers/{base}"
        if self.weights is not None:
            # Keras >= 3.10 also writes the layer name on each group; trust it when present.
            vars_group = self.weights.get(f"{path}/vars")
            stored = vars_group.attrs.get("name") if vars_group is not None else None
            if stored is not None and stored != lname:
                parent = self.weights.get(container or "layers")
                for key in parent or []:
                    v = parent[key].get("vars")
                    if v is not None and v.attrs.get("name") == lname:
                        return f"{container or 'layers'}/{key}"
        return path

    def _h5_group(self, lname: str) -> Any:
        return self.weights.get(lname) if self.weights is not None else None

    def _vars(self, cls: str, lname: str, group: str | None, trainable: bool, h5_group: Any) -> _Vars:
        import h5py

        found: list[tuple[str, tuple[int, ...]]] = []
        if self.weights is None:
            return _Vars([], [])
        if self.fmt is ModelFormat.KERAS:
            node = self.weights.get(group) if group else None
            own = node.get("vars") if node is not None else None
            own_names = set()
            if own is not None:
                for key in sorted(own.keys(), key=lambda k: int(k) if k.isdigit() else 0):
                    found.append((f"vars/{key}", tuple(own[key].shape)))
                    own_names.add(f"vars/{key}")
            if node is not None:
                extra: list[tuple[str, tuple[int, ...]]] = []
                node.visititems(
                    lambda n, o: (
                        extra.append((n, tuple(o.shape)))
                        if isinstance(o, h5py.Dataset) and n not in own_names
                        else None
                    )
                )
                found.extend(extra)
            flags = _trainable_flags(cls, [n for n, _ in found], trainable, own_count=len(own_names))
            return _Vars(found, flags)
        # legacy .h5: model_weights/<layer>/ with a weight_names attribute; inside a nested
        # model the weights sit in the nested model's group, prefixed by the inner layer name.
        grp = h5_group if h5_group is not None else self._h5_group(lname)
        if grp is None:
            return _Vars([], [])
        for wname in grp.attrs.get("weight_names", []):
            wname = wname.decode("utf-8") if isinstance(wname, bytes) else str(wname)
            if h5_group is not None and lname not in wname.split("/"):
                continue
            ds = grp.get(wname)
            if ds is not None:
                found.append((wname, tuple(ds.shape)))
        flags = [trainable and not _is_stat_name(n) for n, _ in found]
        return _Vars(found, flags)


def _lookup(recorded: dict, computed: dict, name: str, node: int, tensor: int) -> tuple | None:
    """Shape of tensor ``tensor`` of call ``node`` of layer ``name``.

    tf.keras numbers a nested Sequential's calls from 1 (its own build is call 0) while its
    config lists only the one call, so a layer with a single known call answers any index.
    """
    exact = recorded.get((name, node, tensor)) or computed.get((name, node, tensor))
    if exact is not None:
        return exact
    calls = {k[1] for k in computed if k[0] == name and k[2] == tensor}
    if len(calls) == 1:
        return computed[(name, calls.pop(), tensor)]
    return None


def _is_stat_name(name: str) -> bool:
    leaf = name.split("/")[-1].split(":")[0]
    return leaf in _NON_TRAINABLE_NAMES


def _trainable_flags(cls: str, names: list[str], trainable: bool, own_count: int) -> list[bool]:
    if not trainable:
        return [False] * len(names)
    if cls in _NON_TRAINABLE_TAIL:
        tail = _NON_TRAINABLE_TAIL[cls]
        cut = 0 if tail is None else max(own_count - tail, 0)
        return [i < cut for i in range(len(names))]
    return [True] * len(names)


def _normalize(out: Any) -> Any:
    if isinstance(out, list):
        return tuple(tuple(s) if s is not None else None for s in out) if all(s is not None for s in out) else None
    return out


def _split_outputs(out: Any) -> list[tuple | None]:
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


def _node_inputs(node: Any) -> list[tuple[str, int, int, tuple | None]]:
    """The tensors one call consumes: (layer, node, tensor, recorded shape or None)."""
    found: list[tuple[str, int, int, tuple | None]] = []
    if isinstance(node, dict) and "args" in node:  # Keras 3
        _keras3_tensors(node.get("args"), found)
        _keras3_tensors(node.get("kwargs"), found)
    elif isinstance(node, list):  # Keras 2: [[name, node, tensor, kwargs], ...]
        for item in node:
            if isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str):
                found.append((item[0], int(item[1]), int(item[2]), None))
    return found


def _keras3_tensors(obj: Any, out: list[tuple[str, int, int, tuple | None]]) -> None:
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


def layers_feeding_outputs(config: dict[str, Any] | None, outputs: list[int] | None) -> set[str] | None:
    """Names of the top-level layers that lie on a path to the chosen model outputs.

    ``outputs`` are indices into the model's outputs (None: all of them). Returns None when the
    config does not describe the graph (subclassed models); for a Sequential every layer counts.
    """
    if not has_layer_structure(config):
        return None
    assert config is not None
    inner = config["config"]
    layers = inner if isinstance(inner, list) else inner.get("layers", [])
    names = [layer.get("name") or (layer.get("config") or {}).get("name") for layer in layers]
    if config.get("class_name") == "Sequential" or isinstance(inner, list):
        return {n for n in names if n}
    refs = _tensor_refs(inner.get("output_layers", []))
    chosen = [refs[i] for i in (outputs if outputs is not None else range(len(refs))) if i < len(refs)]
    parents: dict[str, set[str]] = {}
    for layer, name in zip(layers, names):
        parents[name] = {n for node in layer.get("inbound_nodes") or [] for n, *_ in _node_inputs(node)}
    seen: set[str] = set()
    stack = [name for name, _, _ in chosen]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(parents.get(name, ()))
    return seen
