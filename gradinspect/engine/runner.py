"""The gradient pipeline's front: checked options -> one request -> the pass that fits the model
(a Keras model, the layers recovered from a SavedModel's graph, or its signature) -> a GradReport.

Every command that computes gradients (grad, check, flow, verify) builds its request here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gradinspect.artifacts.live import model_inputs, output_names
from gradinspect.artifacts.loading import LoadedModel, as_loaded
from gradinspect.engine.distributed import device_strategy, devices_note
from gradinspect.engine.graph_pass import (
    graph_gradients,
    graph_pairs,
    recovered_graph,
    signature_variables,
    wants_graph,
)
from gradinspect.engine.inputs import RandomDraw, output_targets
from gradinspect.engine.keras_pass import keras_gradients, resolve_pairs
from gradinspect.engine.losses import compiled_losses
from gradinspect.engine.objective import Objective, OutputChoice, build_objective
from gradinspect.engine.options import DataOptions, checked_options
from gradinspect.engine.plans import BatchPlan
from gradinspect.engine.request import GradientRequest, say
from gradinspect.engine.signatures import savedmodel_signature, signature_gradients
from gradinspect.engine.source import prepare_source
from gradinspect.engine.stages import parse_stages
from gradinspect.errors import GradientError
from gradinspect.report import GradReport, InputSpec

# Inputs with more samples than this run in batches of this size unless --batch-size says otherwise.
DEFAULT_BATCH = 32


def run_gradients(
    model_or_path: Any, inputs: Any = None, pairs: list[tuple[str, str]] | None = None, **options: Any
) -> GradReport:
    """The GradReport of one gradient run; the contract is :func:`gradinspect.inspect_gradients`'s
    (``options``: the fields of GradOptions, DataOptions and ModelOptions, checked before loading)."""
    grad_opts, data, model_opts = checked_options(inputs, options)
    strategy = device_strategy(data.devices) if data.devices else None  # before TensorFlow starts
    say(grad_opts.progress, "loading the model")
    loaded = as_loaded(model_or_path, model_opts.custom_objects, model_opts.unsafe)
    say(grad_opts.progress, "reading the inputs")
    signature = savedmodel_signature(loaded, grad_opts.signature) if loaded.loader == "tf.saved_model" else None
    specs = signature.specs if signature else tuple(model_inputs(loaded.model))
    names = signature.output_names if signature else output_names(loaded.model)
    request = replace(
        _request(loaded, specs, names, data), progress=grad_opts.progress, sink=grad_opts.sink, strategy=strategy
    )
    if strategy is not None:
        request = replace(request, notes=(*request.notes, devices_note(strategy)))
    has_target = data.target is not None
    if signature is not None:
        if strategy is not None:
            raise GradientError(
                f"{loaded.artifact.path}: --devices needs a Keras model; a SavedModel signature runs as saved"
            )
        graph = recovered_graph(loaded, signature.key)
        if graph is not None and wants_graph(graph, pairs, grad_opts.all_layers):
            stages = parse_stages(grad_opts.stage1, grad_opts.stage2, grad_opts.through, len(names), has_target)
            chosen = graph_pairs(graph, pairs, grad_opts.all_layers)
            variables = signature_variables(loaded, signature.function, graph)
            return graph_gradients(replace(request, pairs=chosen, stages=stages), graph, variables)
        if grad_opts.stage2 is not None:
            raise GradientError(
                f"{loaded.artifact.path}: --stage2 needs layers (act/out), and none were recovered from the graph "
                "of this SavedModel: name layers with --pair (see 'gradinspect layers')"
            )
        chosen = () if grad_opts.all_layers else tuple(pairs or ())
        return signature_gradients(replace(request, pairs=chosen), signature)
    n_outputs = len(getattr(loaded.model, "outputs", None) or [None])
    stages = parse_stages(grad_opts.stage1, grad_opts.stage2, grad_opts.through, n_outputs, has_target)
    pair_list = tuple(resolve_pairs(loaded.model, pairs, grad_opts.all_layers))
    return keras_gradients(replace(request, pairs=pair_list, stages=stages))


def _request(loaded: LoadedModel, specs: tuple[InputSpec, ...], names: list[str], data: DataOptions) -> GradientRequest:
    """The inputs read and checked against ``specs``, the objective over outputs ``names`` with its targets."""
    inputs, source = prepare_source(list(specs), data.inputs, random_draw(loaded, specs, data), data.samples)
    rows = inputs.n
    plan = BatchPlan(rows, data.batch_size or min(rows, DEFAULT_BATCH), data.max_batches)
    if plan.samples < rows:  # --max-batches stops early: the run is about the samples it read
        inputs.n = plan.samples
        plan = replace(plan, n=plan.samples)
    arrays = inputs.rows(0, min(plan.n, plan.batch_size))  # the first batch, checked before any pass
    notes = [note for note in (loaded.artifact.note, loaded.note) if note]
    # Targets follow the inputs: --samples, then the first plan.n rows (all of them unless --max-batches).
    objective = objective_for(loaded, names, replace(data, batch_size=plan.n), plan.n)
    targets = [t.target for t in objective.terms if t.target is not None]
    return GradientRequest(
        loaded,
        arrays,
        specs,
        (),
        data.loss,
        objective,
        targets[0] if len(targets) == 1 else None,  # stage 2's target (all rows, read a batch at a time)
        data.training,
        source=source,
        notes=tuple(notes),
        plan=plan,
        inputs=inputs,
        compile=data.compile,
    )


def random_draw(loaded: LoadedModel, specs: tuple[InputSpec, ...] | list[InputSpec], data: DataOptions) -> RandomDraw:
    """How --random draws for this model: token ids for inputs that feed an Embedding, and sample
    shapes from the config where the model (a SavedModel signature) leaves dimensions unknown."""
    names = [s.name for s in specs]
    graph = loaded.artifact.graph
    if graph is None:
        return RandomDraw(data.random, data.seed, data.input_shape, {}, {})
    declared = graph.input_shapes
    shapes = (
        {n: tuple(s[1:]) for n, s in zip(names, declared) if s and None not in s[1:]}
        if len(declared) == len(names)
        else {}
    )
    return RandomDraw(data.random, data.seed, data.input_shape, graph.vocabularies_for(names), shapes)


def objective_for(loaded: LoadedModel, names: list[str], data: DataOptions, batch: int) -> Objective:
    """The loss of ``data.loss`` aimed at ``data.outputs`` (default: as the loss allows), targets read and cut."""
    aimed, targets = output_targets(data.target, data.outputs, names, data.samples, data.batch_size, batch)
    compiled = compiled_losses(loaded, names) if data.loss == "compiled" else None
    return build_objective(data.loss, names, OutputChoice(aimed), targets, compiled)
