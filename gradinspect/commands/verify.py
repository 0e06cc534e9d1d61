"""`gradinspect verify`: tape gradients of one layer against central finite differences, in float64.

float32 finite differences are good to ~1e-4 at best, too coarse to tell a subtly wrong
gradient from rounding; so the model is rebuilt from its config with every dtype set to float64
and the weights cast, and both the tape gradient and the differences are computed on that copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gradinspect.artifacts.live import find_layer, live_layers, model_inputs, output_names
from gradinspect.artifacts.loading import LoadedModel, as_loaded
from gradinspect.engine.differences import LayerDifferences, Settings
from gradinspect.engine.entries import loss_name
from gradinspect.engine.losses import check_loss_spec
from gradinspect.engine.options import DataOptions, InputShape, ModelOptions, check_data_options, split_options
from gradinspect.engine.source import prepare_source, random_draw
from gradinspect.engine.targets import objective_for
from gradinspect.errors import GradientError, UsageProblem
from gradinspect.formatting import first_line
from gradinspect.report import VerifyEntry, VerifyReport


def _to_float64(config: Any) -> Any:
    """The same config with every float dtype (plain or a DTypePolicy) set to float64."""
    if isinstance(config, list):
        return [_to_float64(c) for c in config]
    if not isinstance(config, dict):
        return config
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "dtype" and isinstance(value, str) and ("float" in value or value.startswith("mixed")):
            out[key] = "float64"
        elif key == "dtype" and isinstance(value, dict) and value.get("class_name") in ("DTypePolicy", "Policy"):
            out[key] = {**value, "config": {**(value.get("config") or {}), "name": "float64"}}
        else:
            out[key] = _to_float64(value)
    return out


def float64_copy(loaded: LoadedModel) -> Any:
    """Rebuild ``loaded.model`` from its config in float64 and give it the saved weights, cast."""
    model, objects = loaded.model, loaded.objects
    try:
        if loaded.loader == "tf_keras":
            import tf_keras

            config = _to_float64(tf_keras.utils.serialize_keras_object(model))
            with tf_keras.utils.custom_object_scope(objects):
                copy = tf_keras.utils.deserialize_keras_object(config)
        else:
            import keras

            config = _to_float64(keras.saving.serialize_keras_object(model))
            with keras.saving.custom_object_scope(objects):
                copy = keras.saving.deserialize_keras_object(config, safe_mode=not loaded.unsafe)
        copy.set_weights(
            [np.asarray(w, dtype=np.float64) if np.asarray(w).dtype.kind == "f" else w for w in model.get_weights()]
        )
    except Exception as exc:
        raise GradientError(
            f"{loaded.artifact.path}: could not rebuild the model in float64 for finite differences: {first_line(exc)}"
        ) from exc
    return copy


@dataclass(frozen=True)
class VerifyOptions:
    """``entries`` checked per variable (seeded; all when fewer), step ``eps``, tolerance ``tol`` on
    max |tape - fd| / max(1, |fd|); ``progress(done, total)`` is called after each pair of passes."""

    entries: int = 10
    eps: float = 1e-6
    tol: float = 1e-6
    progress: Callable[[int, int], None] | None = None


def verify(
    model_or_path: Any,
    inputs: Any = None,
    *,
    layer: str,
    entries: int = 10,
    eps: float = 1e-6,
    tol: float = 1e-6,
    loss: str = "auto",
    target: Any = None,
    regularizers: bool = True,
    outputs: Sequence[str] = (),
    random: int = 4,
    seed: int = 0,
    input_shape: InputShape = None,
    samples: str | None = None,
    batch_size: int | None = None,
    custom_objects: str | Path | None = None,
    unsafe: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Compare the tape gradient of ``layer``'s output and variables with central differences, in float64.

    ``entries`` are checked per variable (seeded by ``seed``; all when fewer), with step ``eps``; a
    gradient fails when max |tape - fd| / max(1, |fd|) exceeds ``tol``. ``progress(done, total)``
    is called after each pair of passes. The data and model parameters are those of
    :func:`gradinspect.inspect_gradients` (verify always runs in inference mode). Every option is
    checked before the model is loaded.
    """
    options = {name: value for name, value in locals().items() if name not in ("model_or_path", "layer", "inputs")}
    options["outputs"] = tuple(outputs)
    opts, data, model_opts = split_options(options, VerifyOptions, DataOptions, ModelOptions)
    data = replace(data, inputs=inputs)
    if opts.entries < 1 or opts.eps <= 0 or opts.tol < 0:
        raise UsageProblem("--entries must be >= 1, --eps > 0 and --tol >= 0")
    if data.training:
        raise UsageProblem("verify runs in inference mode: dropout and batch statistics break finite differences")
    check_data_options(data)
    check_loss_spec(data.loss, data.target is not None or any("=" in o for o in data.outputs))
    loaded = as_loaded(model_or_path, model_opts.custom_objects, model_opts.unsafe)
    if loaded.loader == "tf.saved_model":
        raise GradientError(
            f"{loaded.artifact.path}: verify needs a Keras model to rebuild in float64; "
            "a SavedModel without Keras metadata cannot be copied"
        )
    find_layer(loaded.model, layer)  # an unknown name fails before any work
    specs = model_inputs(loaded.model)
    inputs, source = prepare_source(specs, data.inputs, random_draw(loaded, specs, data), data.samples)
    batch = min(inputs.n, data.batch_size or inputs.n)  # the first --batch-size samples
    arrays = inputs.rows(0, batch)
    objective = objective_for(loaded, output_names(loaded.model), data, inputs.n, batch)
    copy = float64_copy(loaded)
    feeds = {k: _as_float64(v) for k, v in arrays.items()}
    settings = Settings(opts.entries, opts.eps, opts.tol, np.random.default_rng(data.seed), opts.progress)
    differences = LayerDifferences(copy, [s.name for s in specs], feeds, objective, settings)
    checked = tuple(differences.check(layer, find_layer(copy, layer)))
    loss = loss_name(objective.terms, objective.ran)  # what ran, ``auto`` resolved
    info = live_layers(loaded).model
    return VerifyReport(info, layer, loss, source, int(batch), opts.eps, opts.tol, checked, verdict(layer, checked))


def verdict(layer: str, entries: tuple[VerifyEntry, ...]) -> str | None:
    """Which layer a disagreement points at: this one when d loss / d its output agrees but d loss / d
    its input or weights does not (its own backward function is wrong); a later one when d loss / d
    its output already disagrees."""
    failed = {e.target.split("/", 1)[0] for e in entries if not e.passed}
    if not failed:
        return None
    if "output" in failed:
        return (
            f"d loss / d the output of {layer!r} already disagrees with finite differences: the wrong gradient "
            "comes from a layer after it; verify those"
        )
    what = " and ".join(k for k in ("input", "weight") if k in failed)
    return (
        f"layer {layer!r}'s own backward function is wrong: d loss / d its {what} disagrees with finite "
        "differences while d loss / d its output agrees"
    )


def _as_float64(a: np.ndarray | None) -> np.ndarray | None:
    return a.astype(np.float64) if a is not None and a.dtype.kind == "f" else a
