"""A SavedModel signature's function, flattened: every nested function call inlined into one body.

Read from the decoded ``SavedModel`` message (:mod:`gradinspect.artifacts.protos`), without
TensorFlow. A signature's output names a call node in the main graph; its function (Keras 3 exports wrap
the model's ``__call__`` in a signature wrapper) calls others through ``StatefulPartitionedCall``
/ ``PartitionedCall`` nodes or by naming a library function as the op. Inlining renames each
callee node after its call node (unique) and keeps, for grouping, the name it would have had
in the caller (``enc/StatefulPartitionedCall`` + ``MatMul`` -> ``enc/MatMul``). Input refs keep
the FunctionDef form ``node:output_arg:index``; a function argument is referred to by name.
Control-flow ops (``While``, ``If``, …) stay as they are, with their bodies in the library.
The scan (:mod:`gradinspect.artifacts.graphscan`) has bounded the inlined size and call depth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradinspect.artifacts import limits, protos

CALL_OPS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})
CONTROL_FLOW = frozenset({"While", "StatelessWhile", "If", "StatelessIf", "Case", "StatelessCase"})
_MAX_DEPTH = limits.MAX_CALL_DEPTH


@dataclass(frozen=True)
class Arg:
    """A function argument or output: its name and DataType number (20: a resource)."""

    name: str
    dtype: int


@dataclass
class Node:
    """A node: ``name`` (unique in its function), ``group`` (the name used for scopes), op, inputs,
    attributes by name (``AttrValue`` messages), and the function attributes it calls."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any]
    group: str = ""
    calls: tuple[str, ...] = ()


@dataclass
class Function:
    name: str
    args: list[Arg]
    outputs: list[Arg]
    ret: dict[str, str]
    nodes: list[Node]
    proto: Any = None  # the FunctionDef message


@dataclass
class SavedGraph:
    """The parts of ``saved_model.pb`` the flattening needs: library, main-graph nodes, signatures."""

    library: dict[str, Function]
    main: dict[str, Node]
    signatures: dict[str, tuple[dict[str, str], dict[str, str]]]  # key -> (inputs, outputs): name -> tensor
    variable_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # VarHandleOp node -> shape


def read_saved_graph(saved_model: Any) -> SavedGraph:
    """The parts of the decoded ``saved_model``'s one meta graph that the flattening needs."""
    meta = saved_model.meta_graphs[0]
    graph = meta.graph_def
    library = {f.name: f for f in (_function(fdef) for fdef in graph.library.function)}
    main = {n.name: n for n in (_node(ndef) for ndef in graph.node)}
    signatures = {}
    for key, sig in meta.signature_def.items():
        ins = {name: info.name for name, info in sig.inputs.items()}
        outs = {name: info.name for name, info in sig.outputs.items()}
        signatures[key] = (ins, outs)
    shapes = {n.name: attr_shape(n.attrs.get("shape")) or () for n in main.values() if n.op == "VarHandleOp"}
    return SavedGraph(library, main, signatures, {k: tuple(d or 0 for d in v) for k, v in shapes.items()})


def _node(ndef: Any) -> Node:
    attrs = dict(ndef.attr.items())
    calls = tuple(a.func.name for a in attrs.values() if a.HasField("func"))
    return Node(ndef.name, ndef.op, list(ndef.input), attrs, calls=calls)


def _function(fdef: Any) -> Function:
    sig = fdef.signature
    args = [Arg(a.name, a.type) for a in sig.input_arg]
    outs = [Arg(a.name, a.type) for a in sig.output_arg]
    nodes = [_node(n) for n in fdef.node_def]
    return Function(sig.name, args, outs, dict(fdef.ret.items()), nodes, fdef)


def _dims(shape: Any) -> tuple[int | None, ...] | None:
    """A TensorShapeProto as a tuple (None: unknown rank; a None entry: unknown dimension)."""
    if shape.unknown_rank:
        return None
    return tuple(None if d.size < 0 else d.size for d in shape.dim)


def attr_shape(attr: Any) -> tuple[int | None, ...] | None:
    """A ``shape`` AttrValue as a tuple (None: absent, or unknown rank)."""
    if attr is None or not attr.HasField("shape"):
        return None
    return _dims(attr.shape)


def attr_output_shapes(attr: Any) -> list[tuple[int | None, ...] | None]:
    """The ``_output_shapes`` list AttrValue."""
    return [] if attr is None else [_dims(shape) for shape in attr.list.shape]


def attr_type(attr: Any) -> int | None:
    return attr.type if attr is not None and attr.HasField("type") else None


@dataclass
class FlatFunction:
    """A signature's function with every call inlined: the wrapper's args and outputs, flat nodes."""

    name: str
    args: list[Arg]
    outputs: list[Arg]
    ret: dict[str, str]
    nodes: list[Node]
    arg_sources: dict[str, str]  # arg -> the main-graph node it is fed from (placeholder or VarHandleOp)
    untouched: set[str]  # library functions the flat nodes still call (control-flow bodies)


def flatten_signature(saved: SavedGraph, key: str) -> FlatFunction:
    """The function behind signature ``key`` (KeyError: no such signature; ValueError: not a call)."""
    _, outputs = saved.signatures[key]
    call_names = {ref.split(":")[0] for ref in outputs.values()}
    if len(call_names) != 1:
        raise ValueError(f"signature {key!r} is not one function call")
    call = saved.main[call_names.pop()]
    fn_name = _callee(call, saved.library)
    if fn_name is None:
        raise ValueError(f"signature {key!r} does not call a library function")
    fn = saved.library[fn_name]
    sources = {a.name: inp.split(":")[0] for a, inp in zip(fn.args, [i for i in call.inputs if not i.startswith("^")])}
    nodes: list[Node] = []
    ret = _inline(saved.library, fn, {a.name: a.name for a in fn.args}, ("", ""), nodes, 0)
    untouched = _bodies(nodes, saved.library)
    return FlatFunction(fn.name, list(fn.args), list(fn.outputs), ret, nodes, sources, untouched)


def _callee(node: Node, library: dict[str, Function]) -> str | None:
    if node.op in library:
        return node.op
    if node.op in CALL_OPS and node.calls and node.calls[0] in library:
        return node.calls[0]
    return None


def _inline(
    library: dict[str, Function],
    fn: Function,
    arg_refs: dict[str, str],
    prefix: tuple[str, str],
    out: list[Node],
    depth: int,
) -> dict[str, str]:
    """Append ``fn``'s nodes to ``out`` (calls inlined); return its outputs' refs by output name."""
    if depth > _MAX_DEPTH:
        raise ValueError("function calls nested too deeply")
    name_prefix, group_prefix = prefix
    call_outputs: dict[str, tuple[Function, dict[str, str]]] = {}

    def resolve(ref: str) -> str | None:
        if ref.startswith("^"):
            target = ref[1:]
            return None if target in call_outputs else "^" + name_prefix + target
        if ref in arg_refs:
            return arg_refs[ref]
        node, _, rest = ref.partition(":")
        if node in call_outputs:
            callee, rets = call_outputs[node]
            arg, _, index = rest.partition(":")
            names = [o.name for o in callee.outputs]
            i = int(index or 0) if arg not in names or arg == "output" else names.index(arg)
            return rets[names[i]]
        return name_prefix + ref

    for node in _topological(fn.nodes):
        inputs = [r for r in (resolve(i) for i in node.inputs) if r is not None]
        callee_name = _callee(node, library)
        if callee_name is not None:
            callee = library[callee_name]
            data = [i for i in inputs if not i.startswith("^")]
            refs = {a.name: ref for a, ref in zip(callee.args, data)}
            scope = (group_prefix + node.name).rpartition("/")[0]
            inner = (f"{name_prefix}{node.name}/", f"{scope}/" if scope else "")
            call_outputs[node.name] = (callee, _inline(library, callee, refs, inner, out, depth + 1))
            continue
        out.append(Node(name_prefix + node.name, node.op, inputs, node.attrs, group_prefix + node.name, node.calls))
    return {k: resolve(v) or v for k, v in fn.ret.items()}


def _topological(nodes: list[Node]) -> list[Node]:
    """Nodes ordered so that every input's producer comes first (the file's order when it already is)."""
    by_name = {n.name: n for n in nodes}
    done: set[str] = set()
    visiting: set[str] = set()
    order: list[Node] = []
    for start in nodes:
        stack = [(start, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                done.add(node.name)
                order.append(node)
                continue
            if node.name in done or node.name in visiting:
                continue  # done, or on the current path (a cycle: left in file order)
            visiting.add(node.name)
            stack.append((node, True))
            for ref in node.inputs:
                producer = by_name.get(ref.lstrip("^").split(":")[0])
                if producer is not None and producer.name not in done:
                    stack.append((producer, False))
    return order


def _bodies(nodes: list[Node], library: dict[str, Function]) -> set[str]:
    """Library functions still called by the flat nodes, and those they call."""
    seen: set[str] = set()
    stack = [f for n in nodes for f in n.calls]
    while stack:
        name = stack.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        stack.extend(f for n in library[name].nodes for f in (*n.calls, n.op) if f in library)
    return seen


def encode_node(node: Node, inputs: list[str]) -> Any:
    """A NodeDef message: name, op, ``inputs``, and the node's attributes as they were."""
    ndef = protos.new("NodeDef", name=node.name, op=node.op, input=inputs)
    for key, value in node.attrs.items():
        ndef.attr[key].CopyFrom(value)
    return ndef


def encode_function(
    name: str, args: list[tuple[str, int]], outs: list[tuple[str, int]], nodes: list[Any], ret: dict[str, str]
) -> Any:
    """A FunctionDef message from a name, (arg, DataType) inputs and outputs, NodeDef messages and the ret map."""
    arg_def = protos.message_class("tensorflow.OpDef.ArgDef")
    signature = protos.new(
        "OpDef",
        name=name,
        input_arg=[arg_def(name=n, type=t) for n, t in args],
        output_arg=[arg_def(name=n, type=t) for n, t in outs],
    )
    return protos.new("FunctionDef", signature=signature, node_def=nodes, ret=ret)
