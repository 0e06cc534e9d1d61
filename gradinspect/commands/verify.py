"""`gradinspect verify`: tape gradients of one layer against central finite differences, in float64.

float32 finite differences are good to ~1e-4 at best, too coarse to tell a subtly wrong
gradient from rounding; so the model is rebuilt from its config with every dtype set to float64
and the weights cast, and both the tape gradient and the differences are computed on that copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gradinspect.artifacts.live import find_layer, live_layers, model_inputs, output_names, variable_name
from gradinspect.artifacts.loading import LoadedModel, as_loaded
from gradinspect.commands.grad import objective_for
from gradinspect.commands.options import DataOptions, ModelOptions, check_data_options, split_options
from gradinspect.engine.capture import flatten
from gradinspect.engine.inputs import prepare_inputs
from gradinspect.engine.losses import check_loss_spec
from gradinspect.engine.objective import Objective
from gradinspect.engine.passes import KerasSubject, PassRequest, run_pass
from gradinspect.errors import GradientError, UsageProblem
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


def verify(model_or_path: Any, layer: str, inputs: Any = None, **options: Any) -> VerifyReport:
    """Compare the tape gradient of ``layer``'s output and variables with central differences, in float64.

    ``options``: those of :class:`VerifyOptions`, :class:`DataOptions` (``random``, ``seed``,
    ``input_shape``, ``samples``, ``batch_size``, ``loss``, ``target``) and :class:`ModelOptions`.
    Every option is checked before the model is loaded.
    """
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
    arrays, source, _ = prepare_inputs(
        specs, data.inputs, data.random, data.seed, data.input_shape, data.samples, data.batch_size
    )
    batch = next(iter(arrays.values())).shape[0]
    objective = objective_for(loaded, output_names(loaded.model), data, batch)
    copy = float64_copy(loaded)
    feeds = {k: _as_float64(v) for k, v in arrays.items()}
    diffs = _Differences(copy, [s.name for s in specs], feeds, objective, opts)
    entries = diffs.check(layer, find_layer(copy, layer), np.random.default_rng(data.seed))
    info = live_layers(loaded).model
    return VerifyReport(info, layer, objective.description, source, int(batch), opts.eps, opts.tol, tuple(entries))


def _as_float64(a: np.ndarray | None) -> np.ndarray | None:
    return a.astype(np.float64) if a is not None and a.dtype.kind == "f" else a


class _Differences:
    """The float64 copy, its inputs and loss: tape gradients from one pass, and central differences."""

    def __init__(self, copy: Any, names: list[str], feeds: dict, objective: Objective, opts: VerifyOptions):
        self.copy, self.names, self.feeds, self.loss, self.opts = copy, names, feeds, objective, opts
        self.done = 0
        self.total = 0

    def check(self, path: str, layer: Any, rng: np.random.Generator) -> list[VerifyEntry]:
        subject = KerasSubject(self.copy, {path: layer}, (path,), (path,), tuple(self.names), False, variable_name)
        result = run_pass(PassRequest(subject, self.feeds, self.loss))
        if not result.recorded[path]:
            raise GradientError(f"layer {path!r} was not called in the forward pass")
        out = result.tensors[0]
        out_grad = np.zeros(tuple(out.tensor.shape)) if out.grad is None else out.grad
        plan = [_indices(out_grad.shape, self.opts.entries, rng)]
        plan += [_indices(tuple(vg.variable.shape), self.opts.entries, rng) for vg in result.variables]
        self.total = sum(len(p) for p in plan)
        tol = self.opts.tol
        entries = [_entry(f"output/{path}", out_grad, self._output_differences(layer, out_grad.shape, plan[0]), tol)]
        for vg, indices in zip(result.variables, plan[1:]):
            tape = np.zeros(tuple(vg.variable.shape)) if vg.grad is None else vg.grad
            differences = self._variable_differences(vg.variable, indices)
            entries.append(_entry(f"weight/{path}/{vg.name}", tape, differences, tol))
        return entries

    def _loss(self) -> float:
        feed = self.feeds[self.names[0]] if len(self.names) == 1 else self.feeds
        y = self.copy(feed, training=False)
        return float(self.loss(flatten(y)).numpy())

    def _central(self, apply: Callable[[float], None]) -> float:
        """(f(+eps) - f(-eps)) / 2eps, with ``apply(step)`` moving the perturbed value by ``step``."""
        apply(self.opts.eps)
        plus = self._loss()
        apply(-self.opts.eps)
        minus = self._loss()
        self.done += 1
        if self.opts.progress is not None:
            self.opts.progress(self.done, self.total)
        return (plus - minus) / (2 * self.opts.eps)

    def _output_differences(self, layer: Any, shape: tuple, indices: list[tuple]) -> dict[tuple, float]:
        """d loss / d the layer's first output, by adding a step to it through a shadowed ``call``."""
        import tensorflow as tf

        delta: dict[str, Any] = {"value": None}
        original = layer.call

        def call(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if delta["value"] is None:
                return out
            if isinstance(out, (list, tuple)):
                return type(out)([out[0] + delta["value"], *out[1:]])
            return out + delta["value"]

        def step_at(idx: tuple) -> Callable[[float], None]:
            def apply(step: float) -> None:
                change = np.zeros(shape, dtype=np.float64)
                change[idx] = step
                delta["value"] = tf.constant(change)

            return apply

        object.__setattr__(layer, "call", call)
        try:
            return {idx: self._central(step_at(idx)) for idx in indices}
        finally:
            with contextlib.suppress(AttributeError):
                object.__delattr__(layer, "call")

    def _variable_differences(self, var: Any, indices: list[tuple]) -> dict[tuple, float]:
        base = var.numpy().copy()

        def step_at(idx: tuple) -> Callable[[float], None]:
            def apply(step: float) -> None:
                changed = base.copy()
                changed[idx] += step
                var.assign(changed)

            return apply

        try:
            return {idx: self._central(step_at(idx)) for idx in indices}
        finally:
            var.assign(base)


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
