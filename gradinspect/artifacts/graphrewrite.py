"""The flattened signature function rewritten so that a tape can see inside it, as FunctionDef bytes.

Two changes, nothing else (every other node keeps its op and attributes byte for byte):

* each variable the function only reads (``ReadVariableOp``) through a resource argument becomes a
  value argument: its reads turn into ``Identity`` ops. The caller passes the variables' values,
  which a tape can watch, and the function can no longer write them. A resource that a loop
  carries into its body stays a resource (see :func:`kept_resources`);
* each chosen tensor ``t`` is routed through a probe: a new argument ``p`` (zeros, same shape) and
  a node ``t + p`` that every former consumer of ``t`` now reads. d loss / d p is d loss / d t;
  ``t + p`` is returned too, as the layer's output value.

Built as messages of :mod:`gradinspect.artifacts.protos` (no TensorFlow); TensorFlow parses the
serialized result, and the untouched library functions it needs are re-serialized from the
message that was scanned.
"""

from __future__ import annotations

from gradinspect.artifacts import protos
from gradinspect.artifacts.graphdefs import FlatFunction, Function, Node, encode_function, encode_node
from gradinspect.artifacts.graphloops import LOOPS, RESOURCE, Value, convertible, read_as_identity, rewrite_loop

PROBED_NAME = "gradinspect_probed"


def probed_function(
    flat: FlatFunction, values: dict[str, Value], probes: list[tuple[str, int]], library: dict[str, Function]
) -> tuple[bytes, dict[str, bytes]]:
    """FunctionDef bytes: args = data args, then the resource args in order (those in ``values`` as
    values, the others still resources), then one probe per ``probes`` (ref, DataType); outputs =
    the function's, then each probed tensor. Also the loop bodies rewritten for ``values`` and the
    library functions the flat nodes still call, as FunctionDef bytes by name."""
    reads = _variable_reads(flat, values)
    renamed = {ref: f"gradinspect_probe_{i}:z:0" for i, (ref, _) in enumerate(probes)}
    renamed.update({f"{n}:value:0": f"{n}:output:0" for n in reads})
    encoded, functions = [], {}
    for node in flat.nodes:
        if node.name in reads:
            node = read_as_identity(node, values[node.inputs[0]].dtype)
        elif node.op in LOOPS and any(ref in values for ref in node.inputs):
            node, bodies = rewrite_loop(node, values, library, "_gradinspect_values")
            functions.update(bodies)
        encoded.append(encode_node(node, [renamed.get(r, r) for r in node.inputs]))
    for i, (ref, dtype) in enumerate(probes):
        # A layer's output is never a variable read (those are plumbing), so ``ref`` is unchanged.
        add = Node(f"gradinspect_probe_{i}", "AddV2", [ref, f"probe_{i}"], {"T": protos.new("AttrValue", type=dtype)})
        encoded.append(encode_node(add, add.inputs))
    args = [(a.name, a.dtype) for a in flat.args if a.dtype != RESOURCE]
    args += [(a.name, values[a.name].dtype if a.name in values else RESOURCE) for a in flat.args if a.dtype == RESOURCE]
    args += [(f"probe_{i}", dtype) for i, (_, dtype) in enumerate(probes)]
    outputs = [(o.name, o.dtype) for o in flat.outputs] + [(f"probed_{i}", d) for i, (_, d) in enumerate(probes)]
    ret = {k: renamed.get(v, v) for k, v in flat.ret.items()}
    ret.update({f"probed_{i}": f"gradinspect_probe_{i}:z:0" for i in range(len(probes))})
    bodies = {name: library[name].proto for name in flat.untouched} | functions
    fdef = encode_function(PROBED_NAME, args, outputs, encoded, ret)
    return protos.encode(fdef), {name: protos.encode(f) for name, f in bodies.items()}


def kept_resources(flat: FlatFunction, library: dict[str, Function]) -> dict[str, str]:
    """Resource arguments that cannot become values: used by an op other than ``ReadVariableOp``,
    or by a loop whose body does more than read them (see :mod:`graphloops`). They stay
    resources, passed as the variable's handle, and get no gradient. Maps each to the group name
    of the first such op."""
    resources = {a.name for a in flat.args if a.dtype == RESOURCE}
    kept: dict[str, str] = {}
    for node in flat.nodes:
        if node.op == "ReadVariableOp":
            continue
        for ref in node.inputs:
            if ref in resources and not convertible(node, ref, library):
                kept.setdefault(ref, node.group)
    return kept


def _variable_reads(flat: FlatFunction, values: dict[str, Value]) -> set[str]:
    """The ``ReadVariableOp`` nodes of the resource arguments that become values."""
    return {n.name for n in flat.nodes if n.op == "ReadVariableOp" and n.inputs and n.inputs[0] in values}
