"""`gradinspect verify`: tape gradients of one layer against central finite differences, in float64.

float32 finite differences are good to ~1e-4 at best, too coarse to tell a subtly wrong
gradient from rounding; so the model is rebuilt from its config with every dtype set to float64
and the weights cast, and both the tape gradient and the differences are computed on that copy.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from gradinspect.errors import GradientError
from gradinspect.formatting import first_line
from gradinspect.report import VerifyEntry, VerifyReport


def _to_float64(config: Any) -> Any:
    """The same config with every float dtype (plain or a DTypePolicy) set to float64."""
    if isinstance(config, list):
        return [_to_float64(c) for c in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key == "dtype" and isinstance(value, str) and ("float" in value or value.startswith("mixed")):
            out[key] = "float64"
        elif key == "dtype" and isinstance(value, dict) and value.get("class_name") in ("DTypePolicy", "Policy"):
            out[key] = {**value, "config": {**(value.get("config") or {}), "name": "float64"}}
        else:
            out[key] = _to_float64(value)
    return out


def float64_copy(loaded: Any, objects: dict[str, Any], unsafe: bool) -> Any:
    """Rebuild ``loaded.model`` from its config in float64 and give it the saved weights, cast."""
    model = loaded.model
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
                copy = keras.saving.deserialize_keras_object(config, safe_mode=not unsafe)
        copy.set_weights(
            [np.asarray(w, dtype=np.float64) if np.asarray(w).dtype.kind == "f" else w for w in model.get_weights()]
        )
    except Exception as exc:
        raise GradientError(
            f"{loaded.artifact.path}: could not rebuild the model in float64 for finite differences: {first_line(exc)}"
        ) from exc
    return copy


def verify(
    model_or_path: Any,
    layer: str,
    inputs: Any = None,
    *,
    samples: int = 10,
    eps: float = 1e-6,
    tol: float = 1e-6,
    seed: int = 0,
    loss: str = "sum",
    target: Any = None,
    custom_objects: Any = None,
    unsafe: bool = False,
    progress: Any = None,
    **data: Any,
) -> VerifyReport:
    """Compare the tape gradient of ``layer``'s variables and output with central differences.

    ``samples`` entries per variable (seeded; all when there are fewer), step ``eps``, tolerance
    ``tol`` on max |tape - fd| / max(1, |fd|). ``data`` takes the input options of
    ``inspect_gradients`` (random, input_shape, samples_range, batch_size). ``progress``, if
    given, is called as ``progress(done, total)`` after each pair of forward passes.
    """
    from gradinspect.artifacts.loading import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    from gradinspect.artifacts.custom_objects import load_custom_objects
    from gradinspect.artifacts.live import find_layer, live_layers, model_inputs, variable_name
    from gradinspect.artifacts.loading import as_loaded
    from gradinspect.engine.capture import flatten, recording
    from gradinspect.engine.inputs import prepare_inputs, target_array
    from gradinspect.engine.losses import make_loss

    if samples < 1 or eps <= 0 or tol < 0:
        from gradinspect.errors import UsageProblem

        raise UsageProblem("--samples must be >= 1, --eps > 0 and --tol >= 0")
    loaded = as_loaded(model_or_path, custom_objects, unsafe)
    if loaded.loader == "tf.saved_model":
        raise GradientError(
            f"{loaded.artifact.path}: verify needs a Keras model to rebuild in float64; "
            "a SavedModel without Keras metadata cannot be copied"
        )
    find_layer(loaded.model, layer)  # an unknown name fails before any work
    specs = model_inputs(loaded.model)
    arrays, source, _ = prepare_inputs(
        specs,
        inputs,
        data.get("random", 4),
        seed,
        data.get("input_shape"),
        data.get("samples_range"),
        data.get("batch_size"),
    )
    objects = load_custom_objects(custom_objects) if custom_objects else {}
    copy = float64_copy(loaded, objects, unsafe)
    target_layer = find_layer(copy, layer)
    loss_fn = make_loss(loss, target is not None)
    batch = next(iter(arrays.values())).shape[0]
    target_array = target_array(target, data.get("samples_range"), data.get("batch_size"), batch)
    if target_array is not None:
        target_array = target_array.astype(np.float64) if target_array.dtype.kind == "f" else target_array
    feeds = {k: tf.constant(v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in arrays.items()}
    feed = feeds[specs[0].name] if len(specs) == 1 else feeds
    variables = [(variable_name(v, target_layer), v) for v in target_layer.trainable_weights]

    delta: dict[str, Any] = {"value": None}

    def perturbed_call(original: Any) -> Any:
        # Adds delta["value"] to the layer's first output tensor: finite differences w.r.t. the output.
        def call(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if delta["value"] is None:
                return out
            if isinstance(out, (list, tuple)):
                return type(out)([out[0] + delta["value"], *out[1:]])
            return out + delta["value"]

        return call

    def loss_value() -> float:
        y = copy(feed, training=False)
        return float(loss_fn(flatten(y), target_array).numpy())

    # Tape gradients (float64), one forward and one backward.
    with tf.GradientTape() as tape:
        with recording({layer: target_layer}, tape) as calls:
            y = copy(feed, training=False)
        value = loss_fn(flatten(y), target_array)
    if not calls[layer]:
        raise GradientError(f"layer {layer!r} was not called in the forward pass")
    out_tensor = calls[layer][0][0]
    grads = tape.gradient(value, [out_tensor] + [v for _, v in variables])
    rng = np.random.default_rng(seed)
    entries = []
    plan = [_indices(tuple(out_tensor.shape), samples, rng)]
    plan += [_indices(tuple(var.shape), samples, rng) for _, var in variables]
    total = sum(len(p) for p in plan)
    done = 0

    def step_done() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    # d loss / d output, by perturbing the output through a shadowed call.
    out_grad = np.zeros(tuple(out_tensor.shape)) if grads[0] is None else tf.convert_to_tensor(grads[0]).numpy()
    original = target_layer.call
    object.__setattr__(target_layer, "call", perturbed_call(original))
    try:
        fd = {}
        for idx in plan[0]:
            step = np.zeros(out_grad.shape, dtype=np.float64)
            step[idx] = eps
            delta["value"] = tf.constant(step)
            plus = loss_value()
            delta["value"] = tf.constant(-step)
            minus = loss_value()
            fd[idx] = (plus - minus) / (2 * eps)
            step_done()
    finally:
        delta["value"] = None
        with contextlib.suppress(AttributeError):
            object.__delattr__(target_layer, "call")
    entries.append(_entry(f"output/{layer}", out_grad, fd, tol))

    for (name, var), g, indices in zip(variables, grads[1:], plan[1:]):
        tape_grad = np.zeros(tuple(var.shape)) if g is None else tf.convert_to_tensor(g).numpy()
        base = var.numpy().copy()
        fd = {}
        for idx in indices:
            changed = base.copy()
            changed[idx] += eps
            var.assign(changed)
            plus = loss_value()
            changed[idx] = base[idx] - eps
            var.assign(changed)
            minus = loss_value()
            fd[idx] = (plus - minus) / (2 * eps)
            step_done()
        var.assign(base)
        entries.append(_entry(f"weight/{layer}/{name}", tape_grad, fd, tol))
    info = live_layers(loaded).model
    return VerifyReport(info, layer, loss, source, int(batch), eps, tol, tuple(entries))


def _indices(shape: tuple, k: int, rng: np.random.Generator) -> list[tuple]:
    size = int(np.prod(shape)) if shape else 1
    flat = np.arange(size) if size <= k else np.sort(rng.choice(size, size=k, replace=False))
    return [tuple(int(i) for i in np.unravel_index(f, shape)) for f in flat]


def _entry(target: str, tape_grad: np.ndarray, fd: dict[tuple, float], tol: float) -> VerifyEntry:
    abs_errors, rel_errors, mixed = [], [], []
    for idx, value in fd.items():
        t = float(tape_grad[idx])
        err = abs(t - value)
        abs_errors.append(err)
        rel_errors.append(err / max(abs(value), abs(t), 1e-300) if err else 0.0)
        mixed.append(err / max(1.0, abs(value)))
    worst = max(mixed) if mixed else 0.0
    return VerifyEntry(
        target,
        tuple(tape_grad.shape),
        len(fd),
        max(abs_errors) if abs_errors else 0.0,
        max(rel_errors) if rel_errors else 0.0,
        worst,
        worst <= tol,
    )
