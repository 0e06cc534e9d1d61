"""`gradinspect grad`: gradients of a loss w.r.t. chosen layers' outputs and weights, as a GradReport."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gradinspect.engine.options import InputShape
from gradinspect.engine.runner import run_gradients
from gradinspect.report import GradReport


def inspect_gradients(
    model_or_path: Any,
    inputs: Any = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    all_layers: bool = False,
    activations: bool = False,
    saliency: bool = False,
    smooth: int = 0,
    noise: float = 0.2,
    loss: str = "auto",
    target: Any = None,
    regularizers: bool = True,
    outputs: Sequence[str] = (),
    training: bool = False,
    random: int = 4,
    seed: int = 0,
    input_shape: InputShape = None,
    samples: str | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    compile: str = "auto",
    devices: int | None = None,
    stage1: str | None = None,
    stage2: str | None = None,
    through: bool = False,
    signature: str | None = None,
    custom_objects: str | Path | None = None,
    unsafe: bool = False,
    progress: Callable[..., None] | None = None,
    sink: Callable[[dict[str, Any], int, int], None] | None = None,
) -> GradReport:
    """Gradients of the loss w.r.t. the outputs and trainable variables of each pair's layers.

    Args:
        model_or_path: a model path (``.keras``, ``.h5``, a SavedModel directory), the result of
            :func:`gradinspect.load_model`, or a live Keras model.
        inputs: a file spec as ``--input`` (``x.npy``, ``data.h5:dataset``, …), an array, a dict
            of arrays by input name, or None for ``random`` seeded samples.
        pairs: ``(from_layer, to_layer)`` names (``outer/inner`` inside nested models).
        all_layers: every layer, as consecutive pairs (``--all``).
        activations: also each recorded output's own values' statistics (``--activations``).
        saliency, smooth, noise: per-sample saliency maps of the inputs (``saliency/<input>`` arrays,
            with ``input/<input>``), SmoothGrad over ``smooth`` noisy copies at ``noise`` × the range.
        loss, target: ``auto``, ``sum``, ``mean``, ``sumsq``, ``unit:K``, ``logprob:pred``, ``logprob:K``,
            ``compiled``, or a Keras loss name with its targets (a file spec, an array, a dict by output).
        regularizers: with ``compiled``, add the model's regularization losses, as Keras trains.
        outputs: model outputs to aim the loss at, ``NAME`` or ``NAME=TARGETFILE``.
        training: run layers in training mode (dropout, batch statistics).
        random, seed: how many seeded random samples to draw without ``inputs``, and the seed.
        input_shape: one sample's shape for inputs with unknown dimensions, or shapes by input name.
        samples: ``START:STOP``, the samples of ``inputs`` to use.
        batch_size, max_batches: samples per batch (every batch runs, merged as one), and a cap.
        compile: ``auto``, ``always`` or ``never``: the batches after the first as one tf.function.
        devices: run the compiled step across this many devices.
        stage1, stage2, through: the gradient-conditioned second-stage loss (see ``grad --help``).
        signature: the SavedModel signature to use (default ``serving_default``, else the first).
        custom_objects: a trusted Python file that registers custom layers (it is imported).
        unsafe: load a model whose config or graph the safety scan refuses.
        progress: ``progress(batches_done, batches, samples_done)``, called per batch.
        sink: ``sink(arrays_by_key, first_row, total_rows)``, per batch (``--save-h5``).

    Options that need no model are checked before loading; expected failures raise GradinspectError.
    """
    # Every parameter after ``pairs`` is an option of the engine's GradOptions/DataOptions/ModelOptions.
    options = {name: value for name, value in locals().items() if name not in ("model_or_path", "inputs", "pairs")}
    options["outputs"] = tuple(outputs)
    return run_gradients(model_or_path, inputs, list(pairs) if pairs is not None else None, **options)
