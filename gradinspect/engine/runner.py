"""The gradient pipeline's entry: checked options -> one request -> the front that fits the model
(a Keras model, the layers recovered from a SavedModel's graph, or its signature, chosen once by
:func:`gradinspect.engine.pipeline.front_for`) -> :func:`gradinspect.engine.pipeline.run_front` -> a
GradReport.

Every command that computes gradients (grad, check, flow, verify) builds its request here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gradinspect.artifacts.live import model_inputs, output_names
from gradinspect.artifacts.loading import LoadedModel, as_loaded
from gradinspect.engine.distributed import device_strategy, devices_note
from gradinspect.engine.options import DataOptions, checked_options
from gradinspect.engine.pipeline import front_for, run_front
from gradinspect.engine.plans import BatchPlan
from gradinspect.engine.progress import say
from gradinspect.engine.request import GradientRequest
from gradinspect.engine.saliency import SaliencyOptions, saliency_maps
from gradinspect.engine.signatures import savedmodel_signature
from gradinspect.engine.source import prepare_source, random_draw
from gradinspect.engine.targets import objective_for
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
    names = signature.output_names if signature else output_names(loaded.model)
    specs = signature.specs if signature else tuple(model_inputs(loaded.model))
    request = replace(
        _request(loaded, specs, names, data),
        progress=grad_opts.progress,
        sink=grad_opts.sink,
        strategy=strategy,
        activations=grad_opts.activations,
    )
    if strategy is not None:
        request = replace(request, notes=(*request.notes, devices_note(strategy)))
    report = run_front(request, front_for(request, signature, pairs, grad_opts))
    if grad_opts.saliency:
        say(grad_opts.progress, "saliency maps")
        maps = saliency_maps(request, SaliencyOptions(grad_opts.smooth, grad_opts.noise, data.seed))
        report = replace(report, arrays={**(report.arrays or {}), **maps})
    return report


def _request(loaded: LoadedModel, specs: tuple[InputSpec, ...], names: list[str], data: DataOptions) -> GradientRequest:
    """The inputs read and checked against ``specs``, the objective over outputs ``names`` with its targets."""
    inputs, source = prepare_source(list(specs), data.inputs, random_draw(loaded, specs, data), data.samples)
    rows = inputs.n
    batch_size = data.batch_size or min(rows, DEFAULT_BATCH)
    arrays = inputs.rows(0, min(rows, batch_size))  # the first batch, checked before any pass
    plan = BatchPlan(rows, batch_size, data.max_batches)
    if plan.samples < rows:  # --max-batches stops early: the run is about the samples it read
        inputs.n = plan.samples
        plan = replace(plan, n=plan.samples)
    notes = [note for note in (loaded.artifact.note, loaded.note) if note]
    # Targets follow the inputs: --samples, then the first plan.n rows (all of them unless --max-batches).
    objective = objective_for(loaded, names, data, rows, plan.n)
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
