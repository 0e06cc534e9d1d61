"""Per-layer gradients of a SavedModel without Keras metadata, from layers recovered from its graph.

The signature's function is flattened and its layers recovered statically
(:mod:`gradinspect.artifacts.graphlayers`); the function is rebuilt with a zero probe on each
chosen layer's output and the variables passed in as values (:mod:`gradinspect.engine.graph_probe`),
so that one forward and one backward pass give d loss / d each chosen output and d loss / d each
variable. Stage-2 expressions read the recovered outputs as ``act``/``out``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gradinspect.artifacts.graphlayers import GraphLayer, RecoveredGraph, recover_graph
from gradinspect.artifacts.graphloops import RESOURCE
from gradinspect.artifacts.graphrewrite import kept_resources
from gradinspect.artifacts.live import savedmodel_variables
from gradinspect.engine import stages as st
from gradinspect.engine.entries import INTEGER, NO_PATH, output_entry, pair_reports, weight_entry
from gradinspect.engine.graph_probe import ProbedCall, build_probed
from gradinspect.engine.passes import Front, PassResult
from gradinspect.engine.request import GradientRequest
from gradinspect.errors import GradientError, LayerNameError
from gradinspect.formatting import without_output_index
from gradinspect.report import ModelInfo, PairReport


@dataclass
class GraphSubject:
    """The probed function called on a batch; ``recorded`` holds the probes (and chosen inputs), one
    per call of each layer (``probed`` names each probe's layer), and ``live`` the first call's
    output value for stage 2."""

    call: ProbedCall
    graph: RecoveredGraph
    values: tuple[Any, ...]
    scoped: tuple[tuple[str, str, Any], ...]
    probed: tuple[str, ...]
    inputs: tuple[str, ...]
    label: str = "the signature's graph"
    watch_variables: bool = True
    live: dict[str, Any] = field(default_factory=dict)

    def variables(self) -> list[tuple[str, str, Any]]:
        return list(self.scoped)

    def regularization(self) -> tuple[Any, int]:
        return None, 0  # recovered layers carry no Keras regularizers

    def forward(self, feeds: dict[str, Any], tapes: list[Any]) -> tuple[list[Any], dict[str, Any]]:
        data = [feeds[name] for name in self.graph.data_names]
        probes = self.call.probes(data, list(self.values))
        for tape in tapes:
            for p in probes:
                tape.watch(p)
        result = self.call.fn(*data, *self.values, *probes)
        n = self.call.n_outputs
        self.live = {}
        recorded: dict[str, list[list[Any]]] = {}
        for name, p, value in zip(self.probed, probes, result[n:]):  # a shared layer: one entry per call
            self.live.setdefault(name, value)
            recorded.setdefault(name, []).append([p])
        self.live.update({name: feeds[name] for name in self.inputs})
        recorded.update({name: [[feeds[name]]] for name in self.inputs})
        return [result[i] for i in self.graph.output_order], recorded


def graph_front(request: GradientRequest, graph: RecoveredGraph, variables: list[Any]) -> Front:
    """What the recovered layers of ``request.pairs`` contribute to the pipeline (``variables``: the
    restored variables in resource-argument order): the signature's function with probes on them."""
    import tensorflow as tf

    pairs = list(request.pairs)
    names = list(dict.fromkeys(n for pair in pairs for n in pair))
    chosen = [n for n in names if n not in graph.data_names]
    layers = {n: graph.find(n) for n in chosen}
    kept = kept_resources(graph.flat, graph.saved.library)
    resources = [a.name for a in graph.flat.args if a.dtype == RESOURCE]
    values = tuple(v.handle if arg in kept else tf.convert_to_tensor(v) for arg, v in zip(resources, variables))
    by_layer = _layer_variables(graph, layers, variables, values, set(kept))
    specs = [tf.TensorSpec([None, *request.arrays[n].shape[1:]], request.arrays[n].dtype) for n in graph.data_names]
    refs = [ref for n in chosen for ref in layers[n].outputs]  # every call of a shared layer
    call = build_probed(graph.flat, graph.saved, specs, list(values), refs)
    scoped = tuple((n, leaf, value) for n in chosen for leaf, value in by_layer[n])
    inputs = tuple(n for n in names if n in graph.data_names)
    probed = tuple(n for n in chosen for _ in layers[n].outputs)
    subject = GraphSubject(call, graph, values, scoped, probed, inputs)

    def reports(result: PassResult, arrays: dict[str, np.ndarray]) -> tuple[PairReport, ...]:
        return _pair_reports(request, result, arrays)

    loaded = request.loaded
    info = ModelInfo(str(loaded.artifact.path), loaded.artifact.format.value, None, request.specs, loader=loaded.loader)
    notes = [f"layers recovered from the graph of signature {graph.key!r} (no Keras metadata)"]
    front = Front(subject, reports, info, tuple(notes + _kept_notes(layers, kept)))
    if not request.stages:
        return front
    stage2 = tuple(tuple((p, leaf, v) for p in pair for leaf, v in by_layer.get(p, ())) for pair in pairs)
    starter = functools.partial(_stage_starter, request, subject, by_layer)
    return replace(front, stage_pairs=len(pairs), starter=starter, stage2_variables=stage2)


def _kept_notes(layers: dict[str, GraphLayer], kept: dict[str, str]) -> list[str]:
    """What the report says of chosen layers whose variables stay resources (see ``kept_resources``)."""
    named = sorted(
        {f"{g.name} (by {kept[arg]!r})" for g in layers.values() for arg, _, _ in g.variables if arg in kept}
    )
    if not named:
        return []
    return [
        f"variables of {', '.join(named)} are used by an op that needs the variable itself, not only its value "
        "(a loop that writes it): their gradients are not reported (the layers' output gradients are)"
    ]


def _layer_variables(
    graph: RecoveredGraph, layers: dict[str, Any], variables: list[Any], values: tuple[Any, ...], kept: set[Any]
) -> dict[str, Any]:
    """Each chosen layer's trainable variables as (leaf name, value tensor); those a loop carries
    (``kept``, still resources) have no value to differentiate and are left out."""
    resources = [a.name for a in graph.flat.args if a.dtype == RESOURCE]
    index = {arg: i for i, arg in enumerate(resources)}
    out: dict[str, list[tuple[str, Any]]] = {}
    for name, layer in layers.items():
        found = []
        for arg, _, _ in layer.variables:
            var = variables[index[arg]]
            if getattr(var, "trainable", True) and arg not in kept:
                found.append((_inside(without_output_index(var.name), name), values[index[arg]]))
        out[name] = list(dict(found).items())
    return out


def _inside(path: str, layer: str) -> str:
    """A variable's name inside its layer, as Keras names it: ``lstm/lstm_cell/kernel`` in layer
    ``lstm`` is ``lstm_cell/kernel``; ``sequential/d1/kernel`` in ``d1`` is ``kernel``; a path
    that does not name the layer is kept whole (as :func:`variable_name` does)."""
    parts = path.split("/")
    last = layer.split("/")[-1]
    # The layer's name not in the path (a Bidirectional's forward_gru/gru_cell/kernel): all of it.
    return "/".join(parts[parts.index(last) + 1 :]) if last in parts[:-1] else path


def _stage_starter(
    request: GradientRequest, subject: GraphSubject, by_layer: dict[str, Any], rows: tuple[int, int]
) -> Any:
    target = None if request.target is None else np.asarray(request.target[rows[0] : rows[1]], np.float32)
    stages = request.stages
    if stages is None:
        raise RuntimeError("stage 2 was started for a request without stages")

    def start(recorded: Any, outputs: list[Any], inner: list[Any]) -> list[Any]:
        return [
            st.begin(
                stages,
                (subject.live[a], subject.live[b]),
                outputs,
                target,
                {"from": by_layer.get(a, []), "to": by_layer.get(b, [])},
                tape,
            )
            for (a, b), tape in zip(request.pairs, inner)
        ]

    return start


def _pair_reports(request: GradientRequest, result: PassResult, arrays: dict[str, Any]) -> tuple[PairReport, ...]:
    outs: dict[str, list[Any]] = {}
    for tg in result.tensors:
        reason = INTEGER if not tg.tensor.dtype.is_floating else NO_PATH
        outs.setdefault(tg.name, []).append(output_entry(tg, reason, arrays))
    weights: dict[str, list[Any]] = {}
    for vg in result.variables:
        weights.setdefault(vg.group, []).append(weight_entry(vg, NO_PATH, arrays))
    return pair_reports(request.pairs, outs, weights, result, arrays)


def recovered_graph(loaded: Any, key: str) -> RecoveredGraph | None:
    """The recovered layers of signature ``key``, read from the decoded ``saved_model.pb`` that was scanned;
    None when the graph cannot be flattened (the signature gradients are then reported as before)."""
    try:
        return recover_graph(loaded.artifact.saved_model, key)
    except (KeyError, ValueError, IndexError):
        return None


def wants_graph(graph: RecoveredGraph, pairs: list[tuple[str, str]] | None, all_layers: bool) -> bool:
    """Whether the run is about recovered layers: ``--all`` with any, or pairs naming at least one."""
    names = {g.name for g in graph.layers}
    if all_layers:
        return any(not g.reason for g in graph.layers)
    return any(n in names for pair in pairs or () for n in pair)


def graph_pairs(graph: RecoveredGraph, pairs: list[tuple[str, str]] | None, all_layers: bool) -> tuple[Any, ...]:
    """``--all``: consecutive pairs of the inputs and recoverable layers (as for a Keras model, whose
    input layers come first); else ``pairs``, checked (from must come before to)."""
    usable = [g.name for g in graph.layers if not g.reason]
    if all_layers:
        every = [*graph.data_names, *usable]
        return tuple(zip(every[:-1], every[1:]))
    order = {name: i for i, name in enumerate([*graph.data_names, *usable])}
    for a, b in pairs or ():
        for name in (a, b):
            if name not in graph.data_names:
                graph.find(name)
        if order[a] > order[b]:
            raise LayerNameError(f"--from {a} comes after --to {b} in the graph; swap them")
    return tuple(pairs or ())


def signature_variables(loaded: Any, fn: Any, graph: RecoveredGraph) -> list[Any]:
    """The restored variables behind the function's resource arguments, in order (its captures)."""
    by_handle = {id(v.handle): v for v in savedmodel_variables(loaded.model)}
    captured = [by_handle.get(id(t)) for t in fn.captured_inputs]
    resources = [a for a in graph.flat.args if a.dtype == RESOURCE]
    if len(captured) != len(resources) or any(v is None for v in captured):
        raise GradientError(
            f"{loaded.artifact.path}: the signature's captured inputs do not match its graph's variables; "
            "per-layer gradients need a SavedModel whose signature reads plain variables"
        )
    return captured
