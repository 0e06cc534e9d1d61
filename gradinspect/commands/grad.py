"""`gradinspect grad`: gradients of a loss w.r.t. chosen layers' outputs and weights, as a GradReport."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from gradinspect.artifacts.live import model_inputs
from gradinspect.artifacts.loading import as_loaded
from gradinspect.engine.inputs import prepare_inputs, target_array
from gradinspect.engine.keras_pass import keras_gradients, resolve_pairs
from gradinspect.engine.losses import compiled_loss, make_loss
from gradinspect.engine.request import GradientRequest
from gradinspect.engine.signatures import savedmodel_signature, signature_gradients
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
    signature = savedmodel_signature(loaded) if loaded.loader == "tf.saved_model" else None
    specs = tuple(signature[2]) if signature else tuple(model_inputs(loaded.model))
    arrays, source, notes = prepare_inputs(list(specs), inputs, random, seed, input_shape, samples, batch_size)
    loss_spec = loss
    if loss == "compiled":
        loss_spec = compiled_loss(loaded)
        notes.append(f"--loss compiled: the model was saved with loss {loss_spec}")
    batch = next(iter(arrays.values())).shape[0]
    request = GradientRequest(
        loaded,
        arrays,
        specs,
        (),
        loss,
        make_loss(loss_spec, target is not None),
        target_array(target, samples, batch_size, batch),
        training,
        source=source,
        notes=tuple(notes),
    )
    if signature is not None:
        if stage2 is not None:
            raise GradientError(
                f"{loaded.artifact.path}: --stage2 needs layers (act/out); a SavedModel without Keras metadata has none"
            )
        return signature_gradients(replace(request, pairs=() if all_layers else tuple(pairs or ())), signature)
    n_outputs = len(getattr(loaded.model, "outputs", None) or [None])
    stages = parse_stages(stage1, stage2, through, n_outputs, target is not None)
    pair_list = tuple(resolve_pairs(loaded.model, pairs, all_layers))
    return keras_gradients(replace(request, pairs=pair_list, stages=stages))
