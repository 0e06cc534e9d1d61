"""`gradinspect grad`: gradients of a loss w.r.t. chosen layers' outputs and weights, as a GradReport."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradinspect.artifacts.live import model_inputs
from gradinspect.artifacts.loading import as_loaded
from gradinspect.engine.inputs import prepare_inputs, target_array
from gradinspect.engine.keras_pass import resolve_pairs, run_keras_pass
from gradinspect.engine.losses import compiled_loss, make_loss
from gradinspect.engine.signatures import run_savedmodel, savedmodel_signature
from gradinspect.engine.stages import parse_stages
from gradinspect.errors import GradientError
from gradinspect.report import GradReport


def inspect_gradients(
    model_or_path: Any,
    inputs: Any = None,
    pairs: list[tuple[str, str]] | None = None,
    loss: str = "sum",
    *,
    target: Any = None,
    training: bool = False,
    all_layers: bool = False,
    random: int = 4,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
    samples: str | None = None,
    batch_size: int | None = None,
    custom_objects: str | Path | None = None,
    unsafe: bool = False,
    stage1: str | None = None,
    stage2: str | None = None,
    through: bool = False,
) -> GradReport:
    """Gradients of ``loss`` w.r.t. the outputs and trainable variables of each pair's layers.

    ``model_or_path`` is a path, a LoadedModel or a live Keras model; ``inputs`` is a file spec
    (as ``--input``), an array, a dict of arrays keyed by input name, or None for ``random``
    seeded samples. Raises GradinspectError subclasses for every expected failure.
    """
    loaded = as_loaded(model_or_path, custom_objects, unsafe)
    signature = None
    if loaded.loader == "tf.saved_model":
        signature = savedmodel_signature(loaded)
        specs = list(signature[2])
    else:
        specs = model_inputs(loaded.model)
    arrays, source, notes = prepare_inputs(specs, inputs, random, seed, input_shape, samples, batch_size)
    batch = next(iter(arrays.values())).shape[0]
    loss_spec = loss
    if loss == "compiled":
        loss_spec = compiled_loss(loaded)
        notes.append(f"--loss compiled: the model was saved with loss {loss_spec}")
    loss_fn = make_loss(loss_spec, target is not None)
    target_values = target_array(target, samples, batch_size, batch)
    if signature is not None:
        if stage2 is not None:
            raise GradientError(
                f"{loaded.artifact.path}: --stage2 needs layers (act/out); a SavedModel without Keras metadata has none"
            )
        return run_savedmodel(
            loaded, signature, arrays, pairs, all_layers, loss, loss_fn, target_values, source, tuple(notes)
        )
    pair_list = resolve_pairs(loaded.model, pairs, all_layers)
    n_outputs = len(getattr(loaded.model, "outputs", None) or [None])
    stages = parse_stages(stage1, stage2, through, n_outputs, target is not None)
    return run_keras_pass(
        loaded, arrays, specs, pair_list, loss, loss_fn, target_values, training, source, tuple(notes), stages
    )
