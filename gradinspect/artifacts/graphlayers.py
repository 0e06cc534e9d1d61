"""Layers recovered from a SavedModel's graph: the name scopes of its flattened signature function.

A layer is a name scope (``functional_1/enc_1`` in a Keras 3 export, ``enc`` in a ``tf.Module``
that uses ``tf.name_scope``): the scope level is the first one under which the ops split into
several scopes (a common root such as ``functional_1`` is skipped). Its output is the scope's
last tensor (in topological order) used outside the scope or returned; it is named after the
variables it reads (``enc``) where it reads any, else after the scope's last part without the
tracing suffix (``relu_1`` -> ``relu``) where that is unambiguous. Scopes whose ops exist only
inside a control-flow body (``While``, ``If``) or whose tensors are used nowhere outside are
listed as not recoverable, with the reason. No TensorFlow: see :mod:`gradinspect.artifacts.graphdefs`.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, replace
from typing import Any

from gradinspect.artifacts.formats import Artifact
from gradinspect.artifacts.graphdefs import (
    CONTROL_FLOW,
    FlatFunction,
    Node,
    SavedGraph,
    attr_output_shapes,
    attr_type,
    flatten_signature,
    read_saved_graph,
)
from gradinspect.artifacts.savedmodel_static import (
    DTYPES,
    object_graph_variables,
    split_scope,
    static_savedmodel_layers,
)
from gradinspect.errors import LayerNameError
from gradinspect.report import LayerRow, LayersReport, VariableInfo

# Ops that hold or move parameters and plumbing, left out of a layer's "main ops" and outputs.
_PLUMBING = frozenset({"ReadVariableOp", "Const", "Identity", "NoOp", "IdentityN", "ResourceGather"})
_VARIABLE_READS = frozenset({"ReadVariableOp", "ResourceGather"})
_SUFFIX = re.compile(r"_\d+$")


@dataclass(frozen=True)
class GraphLayer:
    """A recovered layer. ``output`` is a FunctionDef tensor ref (None: not recoverable, see ``reason``);
    ``variables`` are (flat function arg, variable node name, shape)."""

    name: str
    scope: str
    ops: tuple[str, ...]
    output: str | None
    shape: tuple[int | None, ...] | None
    dtype: str | None
    variables: tuple[tuple[str, str, tuple[int, ...]], ...]
    reason: str | None = None
    calls: tuple[str, ...] = ()  # a shared layer's further calls: their output refs, in order

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every call's output ref (the first is ``output``)."""
        return (self.output, *self.calls) if self.output else ()


@dataclass(frozen=True)
class RecoveredGraph:
    """A signature's flattened function, its recovered layers, and how its args meet the signature."""

    key: str
    saved: SavedGraph
    flat: FlatFunction
    layers: tuple[GraphLayer, ...]
    data_names: tuple[str, ...]  # the signature input feeding each data argument, in order
    output_order: tuple[int, ...]  # the function output behind each signature output, by sorted key

    def find(self, name: str) -> GraphLayer:
        for g in self.layers:
            if g.name == name:
                if g.reason:
                    raise LayerNameError(f"layer {name!r} of the graph is not recoverable: {g.reason}")
                return g
        known = [g.name for g in self.layers if not g.reason] + list(self.data_names)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f"closest: {', '.join(close)}" if close else f"layers: {', '.join(known)}"
        raise LayerNameError(f"no layer {name!r} recovered from the graph of signature {self.key!r}; {hint}")


def recover_graph(saved_model: Any, key: str | None) -> RecoveredGraph:
    """The layers of signature ``key`` (None: ``serving_default``, else the first) of the decoded SavedModel.

    Raises KeyError for an unknown signature, ValueError/IndexError for a graph that cannot be read."""
    saved = read_saved_graph(saved_model)
    keys = sorted(k for k in saved.signatures if not k.startswith("__"))
    if key is None:
        key = "serving_default" if "serving_default" in keys else (keys[0] if keys else "serving_default")
    flat = flatten_signature(saved, key)
    ins, outs = saved.signatures[key]
    node_of = {name: ref.split(":")[0] for name, ref in ins.items()}
    data = [a.name for a in flat.args if a.dtype != 20]
    by_source = {node: name for name, node in node_of.items()}
    data_names = tuple(by_source.get(flat.arg_sources.get(arg, ""), arg) for arg in data)
    order = tuple(int(ref.rsplit(":", 1)[-1]) if ":" in ref else 0 for _, ref in sorted(outs.items()))
    return RecoveredGraph(key, saved, flat, tuple(recover_layers(flat, saved)), data_names, order)


def recover_layers(flat: FlatFunction, saved: SavedGraph) -> list[GraphLayer]:
    """The recovered layers of ``flat``, in topological order of their outputs, then the unrecoverable ones."""
    depth = _root_depth([n.group for n in flat.nodes if "/" in n.group])
    members: dict[str, list[Node]] = {}
    for node in flat.nodes:
        parts = node.group.split("/")
        if len(parts) > depth + 1:
            members.setdefault("/".join(parts[: depth + 1]), []).append(node)
    # A scope named like a node is that op's own helpers (``Mul/ReadVariableOp``), and a scope of
    # plumbing alone computes nothing: neither is a layer.
    groups = {n.group for n in flat.nodes}
    members = {s: ns for s, ns in members.items() if s not in groups and any(n.op not in _PLUMBING for n in ns)}
    members = _nested(members)
    order = {n.name: i for i, n in enumerate(flat.nodes)}
    by_name = {n.name: n for n in flat.nodes}
    outputs = _scope_outputs(flat, members)
    found = []
    for scope, nodes in members.items():
        variables = _variables(nodes, flat, saved)
        ref = outputs.get(scope)
        ops = tuple(dict.fromkeys(n.op for n in nodes if n.op not in _PLUMBING))
        if ref is None:
            found.append(_layer(scope, ops, None, variables, "no tensor of the scope is used outside it"))
            continue
        producer = next(n for n in nodes if n.name == ref.split(":")[0])
        found.append(_layer(scope, ops, (ref, producer), variables, lookup=by_name))
    found.sort(key=lambda g: order[g.output.split(":")[0]] if g.output else len(order))
    found += _inside_bodies(flat, saved, depth, set(members))
    return _named(found)


def _root_depth(groups: list[str]) -> int:
    """How many leading scope levels to skip: a level every scoped op shares (``functional_1``) is
    skipped when at least two scopes below it hold ops; ops directly in it (a mask's ``NotEqual``)
    then belong to no layer."""
    split = [g.split("/") for g in groups]
    depth = 0
    while split and len({p[depth] for p in split if len(p) > depth}) == 1:
        if len({p[depth + 1] for p in split if len(p) >= depth + 3}) < 2:
            break
        depth += 1
    return depth


def _nested(members: dict[str, list[Node]], depth: int = 0) -> dict[str, list[Node]]:
    """A nested model's scope (``inner_1``) computes nothing itself: its ops sit in sub-scopes, some
    of which compute and read variables (``inner_1/i1_1``). Such a scope is replaced by its computing
    sub-scopes, recursively, so its layers are recovered one by one (``inner/i1``), as Keras lists them.
    A layer's own helper scopes (BatchNormalization's ``batchnorm`` computes but reads nothing,
    its ``Cast`` reads but computes nothing) do not make it a model."""
    out: dict[str, list[Node]] = {}
    for scope, nodes in members.items():
        level = scope.count("/") + 1
        children: dict[str, list[Node]] = {}
        direct = False
        for n in nodes:
            parts = n.group.split("/")
            if len(parts) > level + 1:
                children.setdefault("/".join(parts[: level + 1]), []).append(n)
            elif n.op not in _PLUMBING:
                direct = True
        computing = {c: ns for c, ns in children.items() if any(n.op not in _PLUMBING for n in ns)}
        layers = [ns for ns in computing.values() if any(n.op in _VARIABLE_READS for n in ns)]
        if direct or not layers or depth >= 8:
            out[scope] = nodes
        else:
            out.update(_nested(computing, depth + 1))
    return out


def _scope_outputs(flat: FlatFunction, members: dict[str, list[Node]]) -> dict[str, str]:
    """Each scope's last tensor (topologically) that a node outside it, or the function's result, uses."""
    scope_of = {n.name: scope for scope, nodes in members.items() for n in nodes}
    plumbing = {n.name for n in flat.nodes if n.op in _PLUMBING}
    position = {n.name: i for i, n in enumerate(flat.nodes)}
    best: dict[str, tuple[int, str]] = {}
    uses = [(n.name, ref) for n in flat.nodes for ref in n.inputs] + [("", ref) for ref in flat.ret.values()]
    for user, ref in uses:
        producer = ref.split(":")[0]
        scope = scope_of.get(producer)
        if ref.startswith("^") or scope is None or producer in plumbing or scope_of.get(user) == scope:
            continue
        if scope not in best or position[producer] > best[scope][0]:
            best[scope] = (position[producer], ref)
    return {scope: ref for scope, (_, ref) in best.items()}


def _variables(nodes: list[Node], flat: FlatFunction, saved: SavedGraph) -> tuple[Any, ...]:
    found = []
    for node in nodes:
        if node.op in _VARIABLE_READS and node.inputs and node.inputs[0] in flat.arg_sources:
            arg = node.inputs[0]
            source = flat.arg_sources[arg]
            found.append((arg, source, saved.variable_shapes.get(source, ())))
    return tuple(dict.fromkeys(found))


def _layer(
    scope: str,
    ops: tuple[str, ...],
    output: tuple[str, Node] | None,
    variables: tuple[Any, ...],
    reason: str | None = None,
    lookup: dict[str, Node] | None = None,
) -> GraphLayer:
    ref, producer = output if output else (None, None)
    shape = dtype = None
    if producer is not None:
        shapes = attr_output_shapes(producer.attrs.get("_output_shapes"))
        shape = shapes[0] if len(shapes) == 1 else None  # which of several outputs: only TensorFlow's op registry knows
        dtype = _dtype(producer, lookup or {})
    return GraphLayer(scope, scope, ops, ref, shape, dtype, variables, reason)


def _dtype(node: Node, lookup: dict[str, Node]) -> str | None:
    """The node's type attribute; a saved graph drops attributes left at their default (MaxPool's
    ``T``), and such an op keeps its input's dtype, so follow the first input a few steps back."""
    for _ in range(8):
        for key in ("T", "dtype", "out_type", "DstT", "Tout"):
            found = attr_type(node.attrs[key]) if key in node.attrs else None
            if found is not None:
                return DTYPES.get(found)
        inputs = [r for r in node.inputs if not r.startswith("^")]
        if not inputs or inputs[0].split(":")[0] not in lookup:
            return None
        node = lookup[inputs[0].split(":")[0]]
    return None


def _inside_bodies(flat: FlatFunction, saved: SavedGraph, depth: int, known: set[str]) -> list[GraphLayer]:
    """Scopes that exist only inside a control-flow body: not recoverable from the outer graph."""
    found = []
    for node in (n for n in flat.nodes if n.op in CONTROL_FLOW):
        outer, _, own = node.group.rpartition("/")
        members: dict[str, list[Node]] = {}
        names = set()
        for body in node.calls:
            for inner in saved.library[body].nodes if body in saved.library else ():
                # Body ops are named under the loop's own name (while/step/Tanh): drop it.
                name = inner.name[len(own) + 1 :] if inner.name.startswith(own + "/") else inner.name
                path = f"{outer}/{name}" if outer else name
                names.add(path)
                parts = path.split("/")
                if len(parts) > depth + 1:
                    members.setdefault("/".join(parts[: depth + 1]), []).append(inner)
        why = f"its ops run inside the {node.op} loop or branch {node.group!r}, not in the outer graph"
        for scope, nodes in members.items():
            if scope in known or scope in names or all(n.op in _PLUMBING for n in nodes):
                continue  # seen, an op's own helpers (while/add/y), or plumbing
            known.add(scope)
            ops = tuple(dict.fromkeys(n.op for n in nodes if n.op not in _PLUMBING))
            found.append(GraphLayer(scope, scope, ops, None, None, None, (), why))
    return found


def _named(layers: list[GraphLayer]) -> list[GraphLayer]:
    """Names: the scope of the variables read, else the scope's last part without ``_N`` where unambiguous."""
    wanted = []
    for g in layers:
        var_scopes = list(dict.fromkeys(split_scope(source)[0] for _, source, _ in g.variables))
        last = g.scope.rsplit("/", 1)[-1]
        base = _SUFFIX.sub("", last) or last
        if var_scopes and base in var_scopes[0].split("/"):  # lstm/lstm_cell/kernel read in scope lstm_1: lstm
            parts = var_scopes[0].split("/")
            var_scopes[0] = "/".join(parts[: parts.index(base) + 1])
        wanted.append(var_scopes[0] if var_scopes else base)
    firsts = {n.split("/")[0] for n, g in zip(wanted, layers) if g.variables}
    if len(firsts) == 1 and all("/" in n for n, g in zip(wanted, layers) if g.variables):
        # Keras 3 names a Sequential's variables after the model too (sequential/d1/kernel): drop it.
        wanted = [n.split("/", 1)[1] if g.variables else n for n, g in zip(wanted, layers)]
    layers, wanted = _shared_calls(layers, wanted)
    counts = {n: wanted.count(n) for n in wanted}
    out = []
    for g, name in zip(layers, wanted):
        if counts[name] > 1:
            name = g.scope.rsplit("/", 1)[-1] if wanted.count(g.scope.rsplit("/", 1)[-1]) == 0 else g.scope
        out.append(replace(g, name=name))
    return out


def _shared_calls(layers: list[GraphLayer], wanted: list[str]) -> tuple[list[GraphLayer], list[str]]:
    """Scopes that read the same variables under the same name are the calls of one shared layer
    (``shared_1``, ``shared_3``): one layer whose further calls are ``calls``, as Keras reports it."""
    first: dict[tuple[str, frozenset[Any]], int] = {}
    merged: list[GraphLayer] = []
    names: list[str] = []
    for g, name in zip(layers, wanted):
        key = (name, frozenset(source for _, source, _ in g.variables))
        if g.variables and not g.reason and g.output and key in first:
            i = first[key]
            merged[i] = replace(merged[i], calls=(*merged[i].calls, g.output))
            continue
        if g.variables and not g.reason:
            first[key] = len(merged)
        merged.append(g)
        names.append(name)
    return merged, names


def graph_layers_report(artifact: Artifact, key: str | None) -> LayersReport | None:
    """``layers`` for a SavedModel without Keras metadata: the layers recovered from signature ``key``'s
    graph, with the signatures; None when the graph yields none (the caller lists name scopes)."""
    try:
        graph = recover_graph(artifact.saved_model, key)
        known = object_graph_variables(artifact.saved_model)
    except KeyError as exc:
        if key is not None:
            raise LayerNameError(f"{artifact.path}: no signature {key!r} (see the Signatures table)") from exc
        return None
    except (ValueError, IndexError):
        return None
    if not graph.layers:
        return None
    rows = tuple(_row(g, known) for g in graph.layers)
    base = static_savedmodel_layers(artifact)
    total = sum(r.params for r in rows)
    trainable = sum(r.trainable_params for r in rows)
    return replace(
        base, layers=rows, total_params=total, trainable_params=trainable, source="graph", graph_signature=graph.key
    )


def _row(g: GraphLayer, known: dict[str, VariableInfo]) -> LayerRow:
    variables = []
    for _, source, shape in g.variables:
        info = known.get(source) or known.get(_SUFFIX.sub("", source))
        leaf = split_scope(source)[1]
        dtype = info.dtype if info else None
        trainable = info.trainable if info else True
        variables.append(VariableInfo(_SUFFIX.sub("", leaf) if info else leaf, shape, dtype, trainable))
    params = sum(math.prod(v.shape) for v in variables)
    trainable_params = sum(math.prod(v.shape) for v in variables if v.trainable)
    ops = ", ".join(g.ops[:3]) + (", …" if len(g.ops) > 3 else "")
    usable = trainable_params > 0 or not variables
    return LayerRow(
        g.name, ops, g.shape, params, trainable_params, usable, variables=tuple(variables), dtype=g.dtype, note=g.reason
    )
