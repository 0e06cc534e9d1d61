"""Gradients of a Keras model for chosen layer pairs: the pass request, and the report from its result."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from gradinspect.artifacts.live import (
    ModelInput,
    activation_name,
    all_paths,
    between_layers,
    final_softmax,
    find_layer,
    has_input_layer,
    input_ends,
    leaf_paths,
    live_layers,
    named_variables,
)
from gradinspect.engine import stages as st
from gradinspect.engine.entries import (
    INTEGER,
    NO_PATH,
    NON_DIFFERENTIABLE,
    NOT_BETWEEN,
    NOT_CALLED,
    output_entry,
    pair_reports,
    weight_entry,
)
from gradinspect.engine.passes import Front, PassResult
from gradinspect.engine.request import GradientRequest
from gradinspect.engine.subjects import KerasSubject
from gradinspect.errors import GradientError, LayerNameError
from gradinspect.report import InputSpec, ModelInfo, OutputGradient, PairReport, WeightGradient


def resolve_pairs(
    model: Any, pairs: list[tuple[str, str]] | None, all_layers: bool, ends: dict[str, ModelInput]
) -> list[tuple[str, str]]:
    """The (from, to) layer paths to report: consecutive leaf layers for ``all_layers`` (after the
    model's inputs, ``ends``, when its layers list no InputLayer), else ``pairs`` checked against
    the model (unknown names suggest the closest; from must come before to)."""
    if all_layers:
        paths = leaf_paths(model) if has_input_layer(model) else [*ends, *leaf_paths(model)]
        if len(paths) < 2:
            return [(paths[0], paths[0])] if paths else []
        return list(zip(paths[:-1], paths[1:]))
    if not pairs:
        raise LayerNameError("no layers chosen: give --from A --to B, --pair A:B or --all")
    order = {**{p: -1 for p in ends}, **{p: i for i, p in enumerate(all_paths(model))}}
    for a, b in pairs:
        for end in (a, b):
            if end not in ends:
                find_layer(model, end)
        if order[a] > order[b]:
            raise LayerNameError(f"--from {a} comes after --to {b} in the model; swap them")
    return list(pairs)


def keras_front(request: GradientRequest, pairs: list[tuple[str, str]] | None, all_layers: bool) -> Front:
    """What a Keras model contributes to the pipeline: the chosen pairs (checked, see resolve_pairs)
    and their layers as the subject, stage 2's layers between each pair, and the pair reports with
    the reasons a layer has no gradient (read from the config graph: is it on a path to the loss?)."""
    loaded, model = request.loaded, request.loaded.model
    ends = input_ends(model)
    chosen = resolve_pairs(model, pairs, all_layers, ends)
    request = replace(request, pairs=tuple(chosen))
    wanted = tuple(dict.fromkeys(p for pair in chosen for p in pair))
    between = {pair: between_layers(model, *pair) for pair in chosen} if request.stages else {}
    var_layers = tuple(dict.fromkeys([*wanted, *(p for ps in between.values() for p in ps)]))
    layers = {p: ends[p] if p in ends else find_layer(model, p) for p in var_layers}
    # A nested model's input is recorded where that model is called (see KerasSubject.forward).
    layers.update({m: find_layer(model, m) for p in wanted if "/" in p for m in [p.rpartition("/")[0]]})
    names = tuple(s.name for s in request.specs)
    named = named_variables(layers, var_layers)
    subject = KerasSubject(
        model, layers, wanted, var_layers, names, request.training, named, linear=_softmax_layers(model, request)
    )
    info = live_layers(loaded).model if loaded.loader != "in-memory" else _memory_info(model, request.specs)
    kinds = {p: activation_name(layers[p]) for p in wanted} if request.activations else None
    graph = loaded.artifact.graph
    on_path = graph.feeding(request.loss.output_indices) if graph is not None else None

    def no_grad(path: str) -> str:  # from the saved graph: on a path to the outputs the loss reads?
        if on_path is None:
            return NO_PATH
        feeds = path in ends or path.split("/")[0] in on_path  # an input feeds every output
        return NON_DIFFERENTIABLE if feeds else NOT_BETWEEN

    def reports(result: PassResult, arrays: dict[str, np.ndarray]) -> tuple[PairReport, ...]:
        return _pair_reports(request, result, wanted, arrays, (no_grad, kinds))

    front = Front(subject, reports, info, compile=request.compile, strategy=request.strategy, activations=kinds)
    return _with_stages(front, request, between, var_layers) if request.stages else front


def _softmax_layers(model: Any, request: GradientRequest) -> tuple[Any, ...]:
    """The layers whose final softmax runs as linear for the ``logit:K`` terms of the loss."""
    layers = []
    for term in (t for t in request.loss.terms if t.spec.startswith("logit:")):
        layer = final_softmax(model, term.index)
        if layer is None:
            raise GradientError(
                f"--loss {term.spec}: output {term.name!r} does not end in a softmax (a Softmax layer or a layer "
                "with activation='softmax'), so it has no logits to read; use unit:K on it"
            )
        layers.append(layer)
    return tuple(layers)


def _with_stages(
    front: Front, request: GradientRequest, between: dict[tuple[str, str], list[str]], var_layers: tuple[str, ...]
) -> Front:
    """Stage 2 on ``front``: each pair's chain of layers (from, those between, to) and their variables."""
    by_layer: dict[str, list[tuple[str, Any]]] = {p: [] for p in var_layers}
    for group, name, var in front.subject.variables():
        by_layer[group].append((name, var))
    pairs = list(request.pairs)
    chains = {(a, b): ([a, *between[(a, b)], b] if b != a else [a]) for a, b in between}
    stage2_variables = tuple(tuple((p, n, v) for p in chains[pair] for n, v in by_layer[p]) for pair in pairs)
    starter = functools.partial(_stage_starter, request, pairs, by_layer)
    return replace(front, stage_pairs=len(pairs), starter=starter, stage2_variables=stage2_variables)


def _pair_reports(
    request: GradientRequest,
    result: PassResult,
    wanted: tuple[str, ...],
    arrays: dict[str, Any],
    reasons: tuple[Callable[[str], str], Mapping[str, str] | None],
) -> tuple[PairReport, ...]:
    """Entries for each pair's outputs and weights (and stage 2), with reasons for missing gradients
    (``reasons``: the no-gradient reason of a layer, and the --activations kinds or None)."""
    no_grad, kinds = reasons
    outs: dict[str, list[OutputGradient]] = {p: [] for p in wanted}
    for tg in result.tensors:
        reason = INTEGER if not tg.tensor.dtype.is_floating else no_grad(tg.name)
        outs[tg.name].append(output_entry(tg, reason, arrays, len(result.recorded[tg.name][tg.call]), kinds))
    for p in wanted:
        if not result.recorded[p]:
            outs[p].append(OutputGradient(p, 0, 0, (), None, NOT_CALLED))
    weights: dict[str, list[WeightGradient]] = {p: [] for p in wanted}
    for vg in result.variables:
        if vg.group in weights:
            weights[vg.group].append(weight_entry(vg, no_grad(vg.group), arrays))
    return pair_reports(request.pairs, outs, weights, result, arrays)


def _stage_starter(
    request: GradientRequest, pairs: list[tuple[str, str]], by_layer: dict[str, Any], rows: tuple[int, int]
) -> Callable[..., Any]:
    """The hook run_pass calls inside the outer tape: one StagedPair per pair, stage 1 evaluated
    (``target`` is the target's ``rows``)."""
    target = None if request.target is None else np.asarray(request.target[rows[0] : rows[1]], np.float32)

    def start(recorded: Any, outputs: list[Any], inner: list[Any]) -> list[Any]:
        return [
            _start_stage(request, (a, b), (recorded, outputs, target), by_layer, tape)
            for (a, b), tape in zip(pairs, inner)
        ]

    return start


def _start_stage(
    request: GradientRequest,
    pair: tuple[str, str],
    live: tuple[Any, Any, Any],
    by_layer: dict[str, Any],
    inner_tape: Any,
) -> Any:
    calls, outputs, target = live
    a, b = pair
    if not calls[a] or not calls[b]:
        missing = a if not calls[a] else b
        raise GradientError(f"layer {missing!r} was not called in the forward pass, so stage 2 has no act/out")
    sides = {"from": by_layer[a], "to": by_layer[b]}
    if request.stages is None:
        raise RuntimeError("stage 2 was started for a request without stages")
    return st.begin(request.stages, (calls[a][0][0], calls[b][0][0]), outputs, target, sides, inner_tape)


def _memory_info(model: Any, specs: tuple[InputSpec, ...]) -> ModelInfo:
    return ModelInfo("<in-memory model>", "in-memory", getattr(model, "name", None), tuple(specs), loader="in-memory")
