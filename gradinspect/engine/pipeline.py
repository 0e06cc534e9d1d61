"""The one gradient pipeline: a request and a front -> one pass (or every batch, merged) -> the report.

A :class:`~gradinspect.engine.passes.Front` is what a kind of model contributes: a Keras model
(:func:`gradinspect.engine.keras_pass.keras_front`), the layers recovered from a SavedModel's graph
(:func:`gradinspect.engine.graph_pass.graph_front`) or a signature's inputs and variables
(:func:`gradinspect.engine.signatures.signature_front`). :func:`front_for` picks it once;
:func:`run_front` is the only place a pass is executed and a GradReport assembled.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np

from gradinspect.engine.entries import grad_report
from gradinspect.engine.graph_pass import graph_front, graph_pairs, recovered_graph, signature_variables, wants_graph
from gradinspect.engine.keras_pass import keras_front
from gradinspect.engine.options import GradOptions
from gradinspect.engine.passes import Front
from gradinspect.engine.progress import say
from gradinspect.engine.request import GradientRequest
from gradinspect.engine.signatures import LiveSignature, signature_front
from gradinspect.engine.stages import parse_stages
from gradinspect.engine.streaming import execute
from gradinspect.errors import GradientError
from gradinspect.report import GradReport


def front_for(
    request: GradientRequest, signature: LiveSignature | None, pairs: list[tuple[str, str]] | None, opts: GradOptions
) -> Front:
    """The one decision of a run: a Keras model, the layers recovered from a SavedModel signature's
    graph (when the pairs name them), or the signature's inputs and variables; pairs and stages
    are resolved against what was chosen."""
    loaded, has_target = request.loaded, request.target is not None
    n_outputs = len(signature.output_names if signature else getattr(loaded.model, "outputs", None) or [None])
    if signature is None:
        stages = parse_stages(opts.stage1, opts.stage2, opts.through, n_outputs, has_target)
        return keras_front(replace(request, stages=stages), pairs, opts.all_layers)
    if any(t.spec.startswith("logit:") for t in request.loss.terms):
        raise GradientError(
            f"{loaded.artifact.path}: --loss logit:K needs a Keras model (it runs the final softmax as linear); "
            "a SavedModel signature runs as saved: use unit:K"
        )
    if request.strategy is not None:
        raise GradientError(
            f"{loaded.artifact.path}: --devices needs a Keras model; a SavedModel signature runs as saved"
        )
    graph = recovered_graph(loaded, signature.key)
    if graph is not None and wants_graph(graph, pairs, opts.all_layers):
        stages = parse_stages(opts.stage1, opts.stage2, opts.through, n_outputs, has_target)
        chosen = graph_pairs(graph, pairs, opts.all_layers)
        variables = signature_variables(loaded, signature.function, graph)
        return graph_front(replace(request, pairs=chosen, stages=stages), graph, variables)
    if opts.stage2 is not None:
        raise GradientError(
            f"{loaded.artifact.path}: --stage2 needs layers (act/out), and none were recovered from the graph "
            "of this SavedModel: name layers with --pair (see 'gradinspect layers')"
        )
    return signature_front(replace(request, pairs=() if opts.all_layers else tuple(pairs or ())), signature)


def run_front(request: GradientRequest, front: Front) -> GradReport:
    """One forward and one backward pass per batch serve every pair; then the statistics and the report."""
    make = functools.partial(request.pass_request, front)
    result, batches, noise = execute(
        make, request.inputs.n, request.plan, request.progress, request.sink, front.compile, front.strategy
    )
    say(request.progress, "statistics")
    arrays: dict[str, np.ndarray] = {}
    pairs = front.reports(result, arrays)
    if front.notes:
        request = replace(request, notes=(*request.notes, *front.notes))
    return grad_report(request, front.info, result, pairs, arrays, batches, noise)
