"""Loss specs for ``--loss``: built-in reductions of the model output, unit:K, and Keras loss names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradinspect.artifacts.loading import LoadedModel
from gradinspect.errors import GradientError

BUILTIN = ("sum", "mean", "sumsq")
KERAS_LOSSES = (
    "mse",
    "mae",
    "mean_squared_error",
    "mean_absolute_error",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "binary_crossentropy",
    "huber",
    "kl_divergence",
    "log_cosh",
    "hinge",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
    "poisson",
)


def _float(y: Any) -> Any:
    """Integer outputs become float32; float outputs keep their precision (float64 for verify)."""
    import tensorflow as tf

    return y if y.dtype.is_floating else tf.cast(y, tf.float32)


def outputs_used(spec: str, n_outputs: int) -> list[int]:
    """Which model outputs a loss reads: all of them for the reductions, the first otherwise."""
    if spec in BUILTIN:
        return list(range(n_outputs))
    return [0]


def check_loss_spec(spec: str, has_target: bool) -> None:
    """Raise GradientError for a ``--loss`` that cannot work, before anything is loaded (no TensorFlow)."""
    if spec in BUILTIN or spec == "compiled":
        return
    if spec.startswith("unit:"):
        try:
            int(spec[5:])
        except ValueError as exc:
            raise GradientError(f"--loss {spec}: expected unit:K with K an integer, e.g. unit:0") from exc
        return
    if spec in KERAS_LOSSES:
        if not has_target:
            raise GradientError(f"--loss {spec} compares the output with a target: give --target FILE")
        return
    raise GradientError(
        f"--loss {spec}: unknown loss; use one of {', '.join(BUILTIN)}, unit:K, compiled, or a Keras loss "
        f"({', '.join(KERAS_LOSSES[:7])}, ...)"
    )


def make_loss(spec: str, has_target: bool) -> Callable[[list[Any], Any], Any]:
    """A function ``(outputs, target) -> scalar tensor`` for ``--loss spec`` (``compiled`` resolved first)."""
    check_loss_spec(spec, has_target)
    if spec == "compiled":
        raise GradientError("--loss compiled: resolve it with compiled_loss() before making the loss")
    import tensorflow as tf

    if spec == "sum":  # the article's reduce_sum; with several outputs, the sum over all of them
        return lambda ys, t: tf.add_n([tf.reduce_sum(_float(y)) for y in ys])
    if spec == "mean":
        return lambda ys, t: tf.add_n([tf.reduce_mean(_float(y)) for y in ys])
    if spec == "sumsq":
        return lambda ys, t: tf.add_n([tf.reduce_sum(tf.square(_float(y))) for y in ys])
    if spec.startswith("unit:"):
        return _unit_loss(spec, int(spec[5:]))
    return _keras_loss(spec)


def _unit_loss(spec: str, k: int) -> Callable[[list[Any], Any], Any]:
    import tensorflow as tf

    def unit(ys: list[Any], t: Any) -> Any:
        y = ys[0]
        n = int(y.shape[-1])
        if not -n <= k < n:
            raise GradientError(f"--loss {spec}: the output has {n} units (0..{n - 1})")
        return tf.reduce_sum(_float(y[..., k]))

    return unit


def _keras_loss(spec: str) -> Callable[[list[Any], Any], Any]:
    import keras
    import tensorflow as tf

    fn = keras.losses.get(spec)

    def keras_loss(ys: list[Any], t: Any) -> Any:
        if len(ys) != 1:
            raise GradientError(f"--loss {spec}: the model has {len(ys)} outputs; only single-output models")
        y = ys[0]
        return tf.reduce_mean(fn(tf.cast(tf.convert_to_tensor(t), y.dtype) if y.dtype.is_floating else t, y))

    return keras_loss


def compiled_loss(loaded: LoadedModel) -> str:
    """The loss the model was saved with, as a Keras loss name, for ``--loss compiled``."""
    from gradinspect.engine.losses import KERAS_LOSSES

    config = loaded.artifact.config or {}
    raw = (config.get("compile_config") or {}).get("loss") if isinstance(config, dict) else None
    if raw is None and loaded.artifact.training_config:
        raw = loaded.artifact.training_config.get("loss")
    if raw is None:
        raise GradientError(f"{loaded.artifact.path}: --loss compiled: the model was saved without a compiled loss")
    if isinstance(raw, dict) and isinstance(raw.get("config"), (dict, str)) and "class_name" in raw:
        name = raw["class_name"]
        inner = raw["config"]
        if name == "function" and isinstance(inner, str):
            raw = inner
        else:
            # SparseCategoricalCrossentropy -> sparse_categorical_crossentropy
            import re

            raw = re.sub("([a-z0-9])([A-Z])", r"\1_\2", name).lower()
            if isinstance(inner, dict) and inner.get("from_logits"):
                raise GradientError(
                    f"--loss compiled: the model was saved with {name}(from_logits=True); gradinspect applies "
                    "Keras losses to probabilities; pass --loss explicitly"
                )
    aliases = {"mean_squared_error": "mse", "mean_absolute_error": "mae"}
    if isinstance(raw, str):
        name = aliases.get(raw, raw)
        if name in KERAS_LOSSES:
            return name
    raise GradientError(
        f"{loaded.artifact.path}: --loss compiled: the saved loss {raw!r} is not one gradinspect can rebuild "
        "(per-output or custom losses); name the loss with --loss"
    )
