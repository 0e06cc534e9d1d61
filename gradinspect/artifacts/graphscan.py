"""The safety scan of a SavedModel's graphs: every op that loading or calling the model could run.

Read from ``saved_model.pb`` with :mod:`gradinspect.artifacts.protowire`, without TensorFlow. What could
run is the closure, through function-call ops and function-valued attributes, of:

* every function the object graph restores (signatures, ``tf.function`` attributes, resource
  creators and initializers, traced Keras layer calls) and every registered gradient function;
* every node of the main graph, which a TF1 loader runs (init and restore ops).

In a TF2 SavedModel (one with an object graph) the checkpoint machinery that ``saver_def``
names (the save and restore call nodes and the ``SaveV2``/``RestoreV2`` functions only they
call) is not run by the loader, which restores variables with its own ops; it is left out of
the roots, so it is scanned only if something else calls it. Every op in the closure must be
on the allow-list of :func:`gradinspect.artifacts.allowlists.tf_ops`; the first that is not is named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from gradinspect.artifacts import allowlists, protowire
from gradinspect.errors import ModelFileError, UnsafeModelError

# DataType enum values (tensorflow/core/framework/types.proto) and their sizes in bytes.
_DTYPE_SIZES = {1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 8: 8, 9: 8, 10: 1, 14: 2, 17: 2, 18: 16, 19: 2, 22: 4, 23: 8}


@dataclass(frozen=True)
class _Node:
    name: str
    op: str
    funcs: tuple[str, ...]
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class GraphFacts:
    """What the scan learned: the closure's op types, the functions in it, the variables' bytes."""

    ops: frozenset[str]
    functions: frozenset[str]
    variable_bytes: int


def scan_savedmodel(root: Path, shown: Path, unsafe: bool = False) -> GraphFacts:
    """Scan ``root/saved_model.pb``; raise UnsafeModelError (unless ``unsafe``) naming the first refused op."""
    try:
        facts, refused = _scan((root / "saved_model.pb").read_bytes())
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{shown}: saved_model.pb is corrupt ({exc}); re-export the model") from exc
    if refused and not unsafe:
        op, node, where = refused
        raise UnsafeModelError(
            f"{shown}: refused to load: the graph runs op {op!r} (node {node!r} in {where}), which is not on "
            "gradinspect's allow-list of in-memory tensor ops (it may read or write files, run Python or "
            "reach the network); pass --unsafe if you trust this file and accept that it may run it"
        )
    return facts


def _scan(buf: bytes) -> tuple[GraphFacts, tuple[str, str, str] | None]:
    meta_graphs = list(protowire.messages(buf, 2))
    if not meta_graphs:
        raise ValueError("no meta graph")
    ops: set[str] = set()
    reached: set[str] = set()
    variable_bytes = 0
    refused = None
    allowed = allowlists.tf_ops()
    for meta in meta_graphs:
        graph = protowire.first(meta, 2)
        library = _library(protowire.first(graph, 2))
        objects = protowire.first(meta, 7)
        variable_bytes += _variable_bytes(objects)
        roots = _root_functions(objects, protowire.first(graph, 2))
        main = [_node(n) for n in protowire.messages(graph, 1)]
        skipped = _saver_nodes(protowire.first(meta, 3)) if list(protowire.messages(objects, 1)) else set()
        pending: list[tuple[_Node, str]] = [(n, "the main graph") for n in main if n.name not in skipped]
        pending.extend((n, f"function {f!r}") for f in _closure(roots, library, pending) for n in library[f])
        for node, where in pending:
            ops.add(node.op)
            if node.op not in allowed and node.op not in library and refused is None:
                refused = (node.op, node.name, where)
        reached.update(f for f in roots if f in library)
    return GraphFacts(frozenset(ops), frozenset(reached), variable_bytes), refused


def _node(buf: bytes) -> _Node:
    funcs: list[str] = []
    for _key, attr in protowire.map_entries(buf, 5):
        _attr_funcs(attr, funcs)
    inputs = tuple(m.decode("utf-8", "replace") for m in protowire.messages(buf, 3))
    return _Node(protowire.text(buf, 1), protowire.text(buf, 2), tuple(funcs), inputs)


def _attr_funcs(attr: bytes, out: list[str], depth: int = 0) -> None:
    """Function names in an AttrValue: ``func`` (10) and ``list.func`` (1 -> 9), with their own attrs."""
    if depth > 8:
        raise ValueError("function attributes nested too deeply")
    named = [protowire.first(attr, 10)] if protowire.first(attr, 10) else []
    named.extend(protowire.messages(protowire.first(attr, 1), 9))
    for fn in named:
        out.append(protowire.text(fn, 1))
        for _key, inner in protowire.map_entries(fn, 2):
            _attr_funcs(inner, out, depth + 1)


def _library(buf: bytes) -> dict[str, list[_Node]]:
    """Each library function's name and its nodes."""
    out: dict[str, list[_Node]] = {}
    for fn in protowire.messages(buf, 1):
        name = protowire.text(protowire.first(fn, 1), 1)
        nodes = [_node(n) for n in protowire.messages(fn, 3)]
        # Function-valued attributes of the function itself (rare) call too.
        funcs: list[str] = []
        for _key, attr in protowire.map_entries(fn, 5):
            _attr_funcs(attr, funcs)
        if funcs:
            nodes.append(_Node(f"{name}/attr", "NoOp", tuple(funcs)))
        out[name] = nodes
    return out


def _root_functions(objects: bytes, library: bytes) -> set[str]:
    roots = {key for key, _ in protowire.map_entries(objects, 2)}
    for obj in protowire.messages(objects, 1):
        roots.update(m.decode("utf-8", "replace") for m in protowire.messages(protowire.first(obj, 6), 1))
        bare = protowire.first(obj, 8)
        if bare:
            roots.add(protowire.text(bare, 1))
    for grad in protowire.messages(library, 2):
        roots.add(protowire.text(grad, 2))
    for grad in protowire.messages(library, 3):
        roots.add(protowire.text(grad, 1))
    return roots


def _saver_nodes(saver: bytes) -> set[str]:
    """The save and restore call nodes that ``saver_def`` names (``StatefulPartitionedCall_6:0`` -> node)."""
    names = {protowire.text(saver, 2), protowire.text(saver, 3)}
    return {n.split(":")[0].lstrip("^") for n in names if n}


def _closure(roots: set[str], library: dict[str, list[_Node]], main: list[tuple[_Node, str]]) -> list[str]:
    """Every library function reachable from ``roots`` and from the nodes of ``main``."""
    seen: set[str] = set()
    stack = [f for f in roots if f in library]
    for node, _ in main:
        stack.extend(_calls(node, library))
    while stack:
        name = stack.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        for node in library[name]:
            stack.extend(_calls(node, library))
    return sorted(seen)


def _calls(node: _Node, library: dict[str, list[_Node]]) -> list[str]:
    # A node whose op names a library function calls it directly.
    return [*node.funcs, node.op] if node.op in library else list(node.funcs)


def _variable_bytes(objects: bytes) -> int:
    total = 0
    for obj in protowire.messages(objects, 1):
        var = protowire.first(obj, 7)
        if not var:
            continue
        dtype = (protowire.varints(var, 1) or [1])[-1]
        shape = protowire.first(var, 2)
        dims = [(protowire.varints(d, 1) or [0])[-1] for d in protowire.messages(shape, 2)]
        # Sizes are int64; a negative (unknown) dimension is encoded as a huge varint.
        dims = [d if d < 2**62 else 0 for d in dims]
        total += math.prod(dims) * _DTYPE_SIZES.get(dtype, 8)
    return total
