"""The flattened signature function rewritten so that a tape can see inside it, as FunctionDef bytes.

Two changes, nothing else (every other node keeps its op and attributes byte for byte):

* each variable the function only reads (``ReadVariableOp``) through a resource argument becomes a
  value argument: its reads turn into ``Identity`` ops. The caller passes the variables' values,
  which a tape can watch, and the function can no longer write them. A resource that a loop
  carries into its body stays a resource (see :func:`kept_resources`);
* each chosen tensor ``t`` is routed through a probe: a new argument ``p`` (zeros, same shape) and
  a node ``t + p`` that every former consumer of ``t`` now reads. d loss / d p is d loss / d t;
  ``t + p`` is returned too, as the layer's output value.

Pure bytes (see :mod:`gradinspect.artifacts.protowire`); TensorFlow parses the result.
"""

from __future__ import annotations

from gradinspect.artifacts import protowire
from gradinspect.artifacts.graphdefs import FlatFunction, Node

RESOURCE = 20
PROBED_NAME = "gradinspect_probed"


def probed_function(flat: FlatFunction, value_types: dict[str, int], probes: list[tuple[str, int]]) -> bytes:
    """FunctionDef bytes: args = data args, then the resource args in order (those in ``value_types``,
    resource arg -> dtype, as values; the others still resources), then one probe per ``probes``
    (ref, dtype); outputs = the function's, then each probed tensor."""
    reads = _variable_reads(flat, value_types)
    nodes = [_read_as_identity(n, value_types) if n.name in reads else n for n in flat.nodes]
    renamed = {ref: f"gradinspect_probe_{i}:z:0" for i, (ref, _) in enumerate(probes)}
    renamed.update({f"{n}:value:0": f"{n}:output:0" for n in reads})
    encoded = [_encode_node(n, [renamed.get(r, r) for r in n.inputs]) for n in nodes]
    for i, (ref, dtype) in enumerate(probes):
        # A layer's output is never a variable read (those are plumbing), so ``ref`` is unchanged.
        add = Node(f"gradinspect_probe_{i}", "AddV2", [ref, f"probe_{i}"], {"T": protowire.encode([(6, dtype)])})
        encoded.append(_encode_node(add, add.inputs))
    data = [a for a in flat.args if a.dtype != RESOURCE]
    args = [(a.name, a.dtype) for a in data]
    args += [(a.name, value_types.get(a.name, RESOURCE)) for a in flat.args if a.dtype == RESOURCE]
    args += [(f"probe_{i}", dtype) for i, (_, dtype) in enumerate(probes)]
    outputs = [(o.name, o.dtype) for o in flat.outputs] + [(f"probed_{i}", d) for i, (_, d) in enumerate(probes)]
    ret = {k: renamed.get(v, v) for k, v in flat.ret.items()}
    ret.update({f"probed_{i}": f"gradinspect_probe_{i}:z:0" for i in range(len(probes))})
    signature = protowire.encode(
        [(1, PROBED_NAME)]
        + [(2, protowire.encode([(1, n), (3, t)])) for n, t in args]
        + [(3, protowire.encode([(1, n), (3, t)])) for n, t in outputs]
    )
    entries = [(4, protowire.encode([(1, k), (2, v)])) for k, v in ret.items()]
    return protowire.encode([(1, signature), *[(3, n) for n in encoded], *entries])


def kept_resources(flat: FlatFunction) -> dict[str, str]:
    """Resource arguments some op other than ``ReadVariableOp`` uses (a ``While`` loop carrying the
    variable into its body): they stay resources, passed as the variable's handle, and get no
    gradient. Maps each to the group name of the first such op."""
    resources = {a.name for a in flat.args if a.dtype == RESOURCE}
    kept: dict[str, str] = {}
    for node in flat.nodes:
        if node.op != "ReadVariableOp":
            for ref in node.inputs:
                if ref in resources:
                    kept.setdefault(ref, node.group)
    return kept


def _variable_reads(flat: FlatFunction, value_types: dict[str, int]) -> set[str]:
    """The ``ReadVariableOp`` nodes of the resource arguments that become values."""
    return {n.name for n in flat.nodes if n.op == "ReadVariableOp" and n.inputs and n.inputs[0] in value_types}


def _read_as_identity(node: Node, value_types: dict[str, int]) -> Node:
    dtype = value_types[node.inputs[0]]
    attrs = {k: v for k, v in node.attrs.items() if k not in ("dtype", "_has_manual_control_dependencies")}
    attrs["T"] = protowire.encode([(6, dtype)])
    return Node(node.name, "Identity", node.inputs, attrs, node.group, node.calls)


def _encode_node(node: Node, inputs: list[str]) -> bytes:
    attrs = [(5, protowire.encode([(1, k), (2, v)])) for k, v in node.attrs.items()]
    return protowire.encode([(1, node.name), (2, node.op), *[(3, r) for r in inputs], *attrs])
