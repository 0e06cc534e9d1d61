"""The probed signature function in TensorFlow: one call gives the outputs and, through zero probes,
d loss / d each chosen layer output and d loss / d each variable value (see
:mod:`gradinspect.artifacts.graphrewrite`).

The rewritten FunctionDef becomes a GraphDef through TensorFlow's ``function_def_to_graph_def``
(which knows every op's output names) and is imported inside ``tf.compat.v1.wrap_function``, its
arguments mapped onto the placeholders; control-flow bodies come along from the library. A first,
probe-free import gives the chosen tensors' static shapes and dtypes (tracing only, nothing runs).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from gradinspect.artifacts.graphdefs import FlatFunction, SavedGraph
from gradinspect.artifacts.graphloops import RESOURCE, Value
from gradinspect.artifacts.graphrewrite import probed_function
from gradinspect.errors import GradientError
from gradinspect.formatting import first_line


@dataclass(frozen=True)
class ProbedCall:
    """``fn(*data, *values, *probes) -> [outputs..., probed outputs...]``.

    ``shapes``/``dtypes`` are the probed tensors' static ones; ``plain`` is the probe-free function
    (``[outputs..., chosen tensors...]``), run for the shapes when more than the batch is unknown."""

    fn: Any
    plain: Any
    n_outputs: int
    shapes: tuple[tuple[int | None, ...], ...]
    dtypes: tuple[Any, ...]

    def probes(self, data: list[Any], values: list[Any]) -> list[Any]:
        """Zero probes for this batch."""
        import tensorflow as tf

        rows = int(data[0].shape[0]) if data and data[0].shape.rank else None
        shapes = [tuple(rows if d is None and i == 0 else d for i, d in enumerate(s)) for s in self.shapes]
        if any(None in s for s in shapes):
            found = self.plain(*data, *values)[self.n_outputs :]
            shapes = [tuple(int(d) for d in t.shape) for t in found]
        return [tf.zeros(s, dt) for s, dt in zip(shapes, self.dtypes)]


def build_probed(
    flat: FlatFunction, saved: SavedGraph, data_specs: list[Any], values: list[Any], refs: list[str]
) -> ProbedCall:
    """Wrap ``flat`` with probes on ``refs``; ``values`` are the variables' values in resource-argument
    order (a variable's handle for a resource that stays one)."""
    import tensorflow as tf

    resources = [a.name for a in flat.args if a.dtype == RESOURCE]
    as_values = {
        name: Value(v.dtype.as_datatype_enum, tuple(int(d) for d in v.shape))
        for name, v in zip(resources, values)
        if v.dtype != tf.resource
    }
    specs = list(data_specs) + [tf.TensorSpec(v.shape, v.dtype) for v in values]
    plain = _wrap(probed_function(flat, as_values, [], saved.library), specs, refs)
    n = len(flat.outputs)
    chosen = plain.outputs[n:]
    shapes = tuple(tuple(t.shape.as_list()) if t.shape.rank is not None else () for t in chosen)
    for ref, t in zip(refs, chosen):
        if t.shape.rank is None:
            raise GradientError(f"the graph does not say the rank of {ref!r}, so it cannot be probed")
    dtypes = tuple(t.dtype for t in chosen)
    probes = [(ref, dt.as_datatype_enum) for ref, dt in zip(refs, dtypes)]
    probe_specs = [tf.TensorSpec(s, dt) for s, dt in zip(shapes, dtypes)]
    fn = _wrap(probed_function(flat, as_values, probes, saved.library), specs + probe_specs, [])
    return ProbedCall(fn, plain, n, shapes, dtypes)


def _wrap(rewritten: tuple[Any, ...], specs: list[Any], extra: list[str]) -> Any:
    """The rewritten function (FunctionDef bytes, and the library functions it calls, by name) imported
    into a wrapped function of ``specs``, returning its outputs and the ``extra`` refs."""
    import tensorflow as tf
    from tensorflow.core.framework import function_pb2, graph_pb2
    from tensorflow.python.framework.function_def_to_graph import function_def_to_graph_def

    fdef_bytes, raw = rewritten
    fdef = function_pb2.FunctionDef.FromString(fdef_bytes)
    bodies = [function_pb2.FunctionDef.FromString(raw[name]) for name in sorted(raw)]
    _rename_functions([fdef, *bodies], {name: f"{name}_gradinspect_{uuid.uuid4().hex[:12]}" for name in raw})
    try:
        with tf.Graph().as_default():  # control-flow bodies must be known while the ops are resolved
            if bodies:
                library = graph_pb2.GraphDef()
                library.library.function.extend(bodies)
                tf.graph_util.import_graph_def(library, name="")
            graph_def, names = function_def_to_graph_def(fdef)
    except (ValueError, KeyError, TypeError, tf.errors.OpError) as exc:
        raise GradientError(f"the signature's graph could not be rebuilt with probes: {first_line(exc)}") from exc
    graph_def.library.function.extend(
        f for f in bodies if f.signature.name not in {g.signature.name for g in graph_def.library.function}
    )
    args = [a.name for a in fdef.signature.input_arg]

    def tensor(ref: str) -> str:
        return str(names.get(ref, f"{ref}:0" if ref in args else ref))

    wanted = [tensor(fdef.ret[o.name]) for o in fdef.signature.output_arg] + [tensor(r) for r in extra]

    def body(*given: Any) -> Any:
        mapping = {f"{name}:0": t for name, t in zip(args, given)}
        return tf.graph_util.import_graph_def(graph_def, input_map=mapping, return_elements=wanted, name="")

    try:
        return tf.compat.v1.wrap_function(body, specs)
    except (ValueError, KeyError, TypeError, tf.errors.OpError) as exc:
        raise GradientError(f"the signature's graph could not be rebuilt with probes: {first_line(exc)}") from exc


def _rename_functions(functions: list[Any], names: dict[str, str]) -> None:
    """Give the library functions fresh names (and every reference to them), so that importing them
    never collides with a same-named function TensorFlow already holds in this process (one traced
    by ``model.export`` before, or by an earlier run)."""
    for f in functions:
        if f.signature.name in names:
            f.signature.name = names[f.signature.name]
        for node in f.node_def:
            node.op = names.get(node.op, node.op)
            for attr in node.attr.values():
                if attr.HasField("func"):
                    attr.func.name = names.get(attr.func.name, attr.func.name)
                for func in attr.list.func:
                    func.name = names.get(func.name, func.name)
