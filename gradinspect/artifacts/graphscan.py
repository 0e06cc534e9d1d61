"""The safety scan of a SavedModel's graph: every op that loading or calling the model could run.

Reads the one decoded ``SavedModel`` message (:mod:`gradinspect.artifacts.protos`, the protobuf
runtime with TensorFlow's schema), so it sees exactly what TensorFlow will. What could run is
the closure, through function-call ops, function-valued attributes and (in the main graph) node
inputs, of:

* in a TF2 SavedModel (one with an object graph): every function the object graph restores
  (signatures, ``tf.function`` attributes, resource creators and initializers, traced Keras
  layer calls), every registered gradient function, and every main-graph node a signature names
  (its inputs, outputs and the init op) with the nodes it depends on. Nothing else in the main
  graph runs: the loader restores variables with its own ops, and gradinspect calls signatures
  only. A node a file marks as checkpoint machinery is scanned like any other once a signature
  names it, so no field of the file can exempt what will run;
* in a TF1 SavedModel: every node of the main graph (the loader runs init and restore ops).

Every op in the closure must be on the allow-list of :func:`gradinspect.artifacts.allowlists.tf_ops`;
the first that is not is named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gradinspect.artifacts import allowlists, limits
from gradinspect.errors import ModelFileError, ResourceLimitError, UnsafeModelError

# DataType enum values (tensorflow/core/framework/types.proto) and their sizes in bytes.
_DTYPE_SIZES = {1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 8: 8, 9: 8, 10: 1, 14: 2, 17: 2, 18: 16, 19: 2, 22: 4, 23: 8}


@dataclass(frozen=True)
class GraphFacts:
    """What the scan learned: the closure's op types, the functions in it, the variables' bytes."""

    ops: frozenset[str]
    functions: frozenset[str]
    variable_bytes: int


def scan_savedmodel(saved_model: Any, shown: Any, unsafe: bool = False) -> GraphFacts:
    """Scan the decoded ``saved_model``; raise UnsafeModelError (unless ``unsafe``) naming the first refused op."""
    try:
        return _scan(saved_model.meta_graphs[0], shown, unsafe)
    except ValueError as exc:
        raise ModelFileError(f"{shown}: saved_model.pb cannot be scanned ({exc}); re-export the model") from exc


def _scan(meta: Any, shown: Any, unsafe: bool) -> GraphFacts:
    library = {f.signature.name: f for f in meta.graph_def.library.function}
    limits.ensure_graph_size(len(library), sum(len(f.node_def) for f in library.values()), shown)
    main = {n.name: n for n in meta.graph_def.node}
    roots, main_roots = _roots(meta, library, main)
    reached_main = _main_closure(main_roots, main)
    functions = _closure(roots | {f for n in reached_main for f in _calls(main[n], library)}, library)
    _ensure_inlined_size(functions, library, shown)
    allowed = allowlists.tf_ops()
    ops: set[str] = set()
    refused = None
    places = [(main[n], "the main graph") for n in sorted(reached_main)]
    places += [(node, f"function {name!r}") for name in functions for node in library[name].node_def]
    for node, where in places:
        ops.add(node.op)
        if node.op not in allowed and node.op not in library and refused is None:
            refused = (node.op, node.name, where)
    if refused and not unsafe:
        op, node_name, where = refused
        raise UnsafeModelError(
            f"{shown}: refused to load: the graph runs op {op!r} (node {node_name!r} in {where}), which is not on "
            "gradinspect's allow-list of in-memory tensor ops (it may read or write files, run Python or "
            "reach the network); pass --unsafe if you trust this file and accept that it may run it"
        )
    return GraphFacts(frozenset(ops), frozenset(functions), _variable_bytes(meta.object_graph_def))


def _roots(meta: Any, library: dict[str, Any], main: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(library functions, main-graph node names) that loading or calling the model starts from."""
    if not meta.HasField("object_graph_def"):
        return set(), set(main)  # TF1: the loader may run any node of the main graph
    objects = meta.object_graph_def
    functions = set(objects.concrete_functions)
    for obj in objects.nodes:
        functions.update(obj.function.concrete_functions)
        if obj.HasField("bare_concrete_function"):
            functions.add(obj.bare_concrete_function.concrete_function_name)
    for grad in meta.graph_def.library.gradient:
        functions.add(grad.gradient_func)
    for grad in meta.graph_def.library.registered_gradients:
        functions.add(grad.gradient_func)
    nodes = set()
    for signature in meta.signature_def.values():
        for info in (*signature.inputs.values(), *signature.outputs.values()):
            nodes.add(_node_name(info.name))
    return functions, {n for n in nodes if n in main}


def _node_name(ref: str) -> str:
    """``StatefulPartitionedCall_6:0`` or ``^init`` -> the node's name."""
    return ref.lstrip("^").split(":")[0]


def _main_closure(roots: set[str], main: dict[str, Any]) -> set[str]:
    """The main-graph nodes that running ``roots`` runs: the roots and, transitively, their inputs."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in main:
            continue
        seen.add(name)
        stack.extend(_node_name(ref) for ref in main[name].input)
    return seen


def _closure(roots: set[str], library: dict[str, Any]) -> list[str]:
    """Every library function reachable from ``roots``."""
    seen: set[str] = set()
    stack = [f for f in roots if f in library]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        fn = library[name]
        stack.extend(f for node in fn.node_def for f in _calls(node, library) if f not in seen)
        stack.extend(f for attr in fn.attr.values() for f in attr_functions(attr) if f in library)
    return sorted(seen)


def _ensure_inlined_size(functions: list[str], library: dict[str, Any], shown: Any) -> None:
    """Refuse a graph whose functions, with every call replaced by its callee's nodes, would pass
    ``limits.MAX_GRAPH_NODES`` nodes or nest calls deeper than ``limits.MAX_CALL_DEPTH``. Each
    function is sized once, so a chain of functions calling the next twice (small on disk,
    2**30 nodes inlined) is measured in linear time, before anything expands it."""
    sizes: dict[str, int] = {}

    def size(name: str, depth: int) -> int:
        if name in sizes:
            return sizes[name]
        if depth > limits.MAX_CALL_DEPTH:
            raise ResourceLimitError(
                f"{shown}: the graph's function calls nest more than {limits.MAX_CALL_DEPTH} deep "
                f"(through {name!r}); gradinspect refuses graphs it cannot bound"
            )
        total = 0
        for node in library[name].node_def:
            total += 1 + sum(size(callee, depth + 1) for callee in _calls(node, library))
            if total > limits.MAX_GRAPH_NODES:
                raise ResourceLimitError(
                    f"{shown}: function {name!r} inlines to more than {limits.MAX_GRAPH_NODES:,} nodes "
                    "(its calls multiply); gradinspect refuses graphs it cannot bound"
                )
        sizes[name] = total
        return total

    for name in functions:
        size(name, 0)


def _calls(node: Any, library: dict[str, Any]) -> list[str]:
    """Library functions ``node`` calls: its op when that names one, and every function attribute."""
    named = [f for attr in node.attr.values() for f in attr_functions(attr)]
    if node.op in library:
        named.append(node.op)
    return [f for f in named if f in library]


def attr_functions(attr: Any, depth: int = 0) -> list[str]:
    """Function names in an AttrValue: ``func`` and ``list.func``, with the functions their own attrs name."""
    if depth > 8:
        raise ValueError("function attributes nested too deeply")
    named = [attr.func] if attr.HasField("func") else []
    named.extend(attr.list.func)
    out = []
    for fn in named:
        out.append(fn.name)
        for inner in fn.attr.values():
            out.extend(attr_functions(inner, depth + 1))
    return out


def _variable_bytes(objects: Any) -> int:
    total = 0
    for obj in objects.nodes:
        if not obj.HasField("variable"):
            continue
        var = obj.variable
        # An unknown (-1) dimension allocates nothing by itself.
        dims = [max(d.size, 0) for d in var.shape.dim]
        total += math.prod(dims) * _DTYPE_SIZES.get(var.dtype, 8)
    return total
