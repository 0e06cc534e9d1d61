"""`layers` for a SavedModel without Keras metadata, read from ``saved_model.pb`` without loading it.

Loading a SavedModel runs its resource creators and initializers; listing it needs neither.
Signatures come from the meta graph's ``signature_def`` map and variables (name, shape, dtype,
trainable) from the object graph, both read with :mod:`gradinspect.artifacts.protowire`.
"""

from __future__ import annotations

import math
from typing import Any

from gradinspect.artifacts import protowire
from gradinspect.artifacts.formats import Artifact
from gradinspect.errors import ModelFileError
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
    try:
        meta = protowire.first((artifact.source / "saved_model.pb").read_bytes(), 2)
        signatures = sorted(_signatures(meta), key=lambda s: s.key)
        variables = _variables(protowire.first(meta, 7))
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{artifact.path}: saved_model.pb is corrupt ({exc}); re-export the model") from exc
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


def _signatures(meta: bytes) -> list[Signature]:
    out = []
    for key, sig in protowire.map_entries(meta, 5):
        if key == _INIT_OP_SIGNATURE:
            continue
        ins = tuple(sorted((_spec(n, t) for n, t in protowire.map_entries(sig, 1)), key=lambda s: s.name))
        outs = tuple(sorted((_spec(n, t) for n, t in protowire.map_entries(sig, 2)), key=lambda s: s.name))
        out.append(Signature(key, ins, outs))
    return out


def _spec(name: str, info: bytes) -> InputSpec:
    dtype = (protowire.varints(info, 2) or [0])[-1]
    return InputSpec(name, _shape(protowire.first(info, 3)), DTYPES.get(dtype))


def _shape(proto: bytes) -> tuple[Any, ...] | None:
    if (protowire.varints(proto, 3) or [0])[-1]:
        return None  # unknown rank
    dims = []
    for dim in protowire.messages(proto, 2):
        size = (protowire.varints(dim, 1) or [0])[-1]
        dims.append(None if size >= 2**63 else size)  # -1 (unknown) is a 64-bit two's complement varint
    return tuple(dims)


def _variables(objects: bytes) -> list[tuple[str, VariableInfo]]:
    seen: dict[tuple[str, tuple], tuple[str, VariableInfo]] = {}
    for obj in protowire.messages(objects, 1):
        var = protowire.first(obj, 7)
        if not var:
            continue
        shape = tuple(d or 0 for d in (_shape(protowire.first(var, 2)) or ()))
        name = protowire.text(var, 6)
        scope, leaf = split_scope(name)
        dtype = DTYPES.get((protowire.varints(var, 1) or [1])[-1])
        trainable = bool((protowire.varints(var, 3) or [0])[-1])
        # Keras 3 exports list one variable under two attributes: keep it once (same name and shape).
        seen.setdefault((name, shape), (scope, VariableInfo(leaf, shape, dtype, trainable)))
    return list(seen.values())


def object_graph_variables(pb: bytes) -> dict[str, VariableInfo]:
    """The object graph's variables by full name (``enc/kernel``), read statically."""
    meta = protowire.first(pb, 2)
    found = _variables(protowire.first(meta, 7))
    return {f"{scope}/{v.name}" if scope != "(root)" else v.name: v for scope, v in found}
