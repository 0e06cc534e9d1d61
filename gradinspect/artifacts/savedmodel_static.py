"""`layers` for a SavedModel without Keras metadata, read from ``saved_model.pb`` without loading it.

Loading a SavedModel runs its resource creators and initializers; listing it needs neither.
Signatures come from the meta graph's ``signature_def`` map and variables (name, shape, dtype,
trainable) from the object graph, both read from the decoded message (:mod:`gradinspect.artifacts.protos`).
"""

from __future__ import annotations

import math
from typing import Any

from gradinspect.artifacts.formats import Artifact
from gradinspect.report import InputSpec, LayerRow, LayersReport, ModelInfo, Signature, VariableInfo

# tensorflow/core/framework/types.proto
DTYPES = {  # DataType number -> dtype name
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string", 8: "complex64",
    9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128", 19: "float16", 20: "resource",
    21: "variant", 22: "uint32", 23: "uint64",
}  # fmt: skip
_INIT_OP_SIGNATURE = "__saved_model_init_op"


def static_savedmodel_layers(artifact: Artifact) -> LayersReport:
    """Signatures and variables (grouped by name scope) of a metadata-free SavedModel, statically."""
    meta = artifact.saved_model.meta_graphs[0]
    signatures = sorted(_signatures(meta), key=lambda s: s.key)
    variables = _variables(meta.object_graph_def)
    return savedmodel_report(artifact, "static (no TensorFlow)", signatures, variables)


def savedmodel_report(
    artifact: Artifact, loader: str, signatures: list[Signature], variables: list[tuple[str, VariableInfo]]
) -> LayersReport:
    """The listing: one row per name scope of ``variables`` (``(scope, variable)`` pairs), in first-seen order."""
    groups: dict[str, list[VariableInfo]] = {}
    for scope, var in variables:
        groups.setdefault(scope, []).append(var)
    rows = []
    for scope, group in groups.items():
        params = sum(math.prod(v.shape) for v in group)
        trainable = sum(math.prod(v.shape) for v in group if v.trainable)
        rows.append(
            LayerRow(
                scope,
                "(name scope)",
                None,
                params,
                trainable,
                any(v.trainable for v in group),
                0,
                variables=tuple(group),
            )
        )
    default = next((s for s in signatures if s.key == "serving_default"), signatures[0] if signatures else None)
    info = ModelInfo(str(artifact.path), artifact.format.value, None, default.inputs if default else (), loader=loader)
    total = sum(r.params for r in rows)
    return LayersReport(info, tuple(rows), total, sum(r.trainable_params for r in rows), tuple(signatures))


def split_scope(name: str) -> tuple[str, str]:
    """``dense_1/kernel:0`` -> ``("dense_1", "kernel")``; a name without a scope goes to ``(root)``."""
    scope, _, leaf = name.split(":")[0].rpartition("/")
    return scope or "(root)", leaf


def _signatures(meta: Any) -> list[Signature]:
    out = []
    for key, sig in meta.signature_def.items():
        if key == _INIT_OP_SIGNATURE:
            continue
        ins = tuple(sorted((_spec(n, t) for n, t in sig.inputs.items()), key=lambda s: s.name))
        outs = tuple(sorted((_spec(n, t) for n, t in sig.outputs.items()), key=lambda s: s.name))
        out.append(Signature(key, ins, outs))
    return out


def _spec(name: str, info: Any) -> InputSpec:
    return InputSpec(name, _shape(info.tensor_shape), DTYPES.get(info.dtype))


def _shape(proto: Any) -> tuple[Any, ...] | None:
    if proto.unknown_rank:
        return None
    return tuple(None if d.size < 0 else d.size for d in proto.dim)


def _variables(objects: Any) -> list[tuple[str, VariableInfo]]:
    seen: dict[tuple[str, tuple[Any, ...]], tuple[str, VariableInfo]] = {}
    for obj in objects.nodes:
        if not obj.HasField("variable"):
            continue
        var = obj.variable
        shape = tuple(d or 0 for d in (_shape(var.shape) or ()))
        scope, leaf = split_scope(var.name)
        # Keras 3 exports list one variable under two attributes: keep it once (same name and shape).
        seen.setdefault((var.name, shape), (scope, VariableInfo(leaf, shape, DTYPES.get(var.dtype), var.trainable)))
    return list(seen.values())


def object_graph_variables(saved_model: Any) -> dict[str, VariableInfo]:
    """The object graph's variables by full name (``enc/kernel``), read statically."""
    found = _variables(saved_model.meta_graphs[0].object_graph_def)
    return {f"{scope}/{v.name}" if scope != "(root)" else v.name: v for scope, v in found}
