"""Variables carried into a ``While`` loop, turned into values too (see :mod:`graphrewrite`).

TensorFlow passes a variable a loop body reads (a Keras LSTM's kernels) into the loop as a
resource loop variable that the body only reads (``ReadVariableOp``) and hands back unchanged.
Such a loop variable can become the variable's value: the ``While`` node's types and shapes
change at its position, and copies of the body and condition (under new names) take and return
a value, their reads becoming ``Identity`` ops. A loop variable used any other way stays a
resource (and its variable gets no gradient). Messages of :mod:`gradinspect.artifacts.protos`, no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradinspect.artifacts import protos
from gradinspect.artifacts.graphdefs import Function, Node, encode_function, encode_node

RESOURCE = protos.DT_RESOURCE
LOOPS = frozenset({"While", "StatelessWhile"})


@dataclass(frozen=True)
class Value:
    """What a resource becomes: its dtype (DataType number) and shape."""

    dtype: int
    shape: tuple[int, ...]


def convertible(node: Node, arg: str, library: dict[str, Function]) -> bool:
    """Whether ``node`` (a While) only carries resource ``arg`` into bodies that only read it."""
    if node.op not in LOOPS or node.attrs.get("body") is None:
        return False
    position = [i for i, ref in enumerate(node.inputs) if ref == arg]
    names = [_func(node.attrs.get(k)) for k in ("body", "cond")]
    if len(position) != 1 or not all(n in library for n in names):
        return False
    return all(_only_read(library[n], position[0]) for n in names)


def rewrite_loop(
    node: Node, values: dict[str, Value], library: dict[str, Function], suffix: str
) -> tuple[Node, dict[str, Any]]:
    """The While ``node`` with the resource inputs in ``values`` as values, and its new body and
    condition as ``{name: FunctionDef message}``."""
    positions = {i: values[ref] for i, ref in enumerate(node.inputs) if ref in values}
    attrs = {k: v for k, v in node.attrs.items() if k not in ("_read_only_resource_inputs", "_output_shapes")}
    attrs["T"] = _types(node.attrs["T"], positions)
    if "output_shapes" in attrs:
        attrs["output_shapes"] = _shapes(node.attrs["output_shapes"], positions)
    functions = {}
    for key in ("body", "cond"):
        name = _func(node.attrs[key])
        new = f"{name}{suffix}"
        functions[new] = _function(library[name], new, positions, returns=key == "body")
        attrs[key] = protos.new("AttrValue", func=protos.new("NameAttrList", name=new))
    return Node(node.name, node.op, node.inputs, attrs, node.group, node.calls), functions


def read_as_identity(node: Node, dtype: int) -> Node:
    """A ``ReadVariableOp`` of a variable now passed as its value: an ``Identity`` of that value."""
    attrs = {k: v for k, v in node.attrs.items() if k not in ("dtype", "_has_manual_control_dependencies")}
    attrs["T"] = protos.new("AttrValue", type=dtype)
    return Node(node.name, "Identity", node.inputs, attrs, node.group, node.calls)


def _func(attr: Any) -> str:
    return attr.func.name if attr is not None and attr.HasField("func") else ""


def _only_read(fn: Function, position: int) -> bool:
    if position >= len(fn.args) or fn.args[position].dtype != RESOURCE:
        return False
    arg = fn.args[position].name
    return all(n.op == "ReadVariableOp" for n in fn.nodes if arg in n.inputs)


def _types(attr: Any, positions: dict[int, Value]) -> Any:
    types = [positions[i].dtype if i in positions else t for i, t in enumerate(attr.list.type)]
    return protos.new("AttrValue", list=protos.new("AttrValue.ListValue", type=types))


def _shapes(attr: Any, positions: dict[int, Value]) -> Any:
    out = protos.new("AttrValue")
    out.list.shape.extend(attr.list.shape)
    for i, value in positions.items():
        if i < len(out.list.shape):
            out.list.shape[i].Clear()
            out.list.shape[i].dim.extend(protos.new("TensorShapeProto.Dim", size=d) for d in value.shape)
    return out


def _function(fn: Function, name: str, positions: dict[int, Value], returns: bool) -> Any:
    """A copy of ``fn`` named ``name`` whose args (and, for a body, outputs) at ``positions`` are values."""
    args = [(a.name, positions[i].dtype if i in positions else a.dtype) for i, a in enumerate(fn.args)]
    outs = [(o.name, positions[i].dtype if returns and i in positions else o.dtype) for i, o in enumerate(fn.outputs)]
    changed = {fn.args[i].name: v for i, v in positions.items()}
    reads = {n.name for n in fn.nodes if n.op == "ReadVariableOp" and n.inputs and n.inputs[0] in changed}
    nodes = []
    for n in fn.nodes:
        inputs = [f"{r.split(':')[0]}:output:0" if r.split(":")[0] in reads else r for r in n.inputs]
        if n.name in reads:
            n = read_as_identity(n, changed[n.inputs[0]].dtype)
        nodes.append(encode_node(n, inputs))
    ret = {k: (f"{v.split(':')[0]}:output:0" if v.split(":")[0] in reads else v) for k, v in fn.ret.items()}
    return encode_function(name, args, outs, nodes, ret)
