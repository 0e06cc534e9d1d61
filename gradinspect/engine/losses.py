"""Loss specs for ``--loss``: what each means for one output, checked before anything is loaded.

Per output: ``sum``/``mean``/``sumsq`` reduce it; ``unit:K`` sums unit K of the last axis;
``logit:K`` sums unit K of the logits, the input of the output's final softmax (the pass runs
that softmax as linear, as tf-keras-vis's ``ReplaceToLinear`` does);
``logprob:pred`` sums, over samples, the log-probability of each sample's predicted class, and
``logprob:K`` that of class K (for outputs that are probability rows); a Keras loss name compares
it with a target. ``auto`` is resolved per output by :mod:`gradinspect.engine.objective`, and
``compiled`` by :func:`compiled_losses` from the model's saved compile settings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gradinspect.artifacts.loading import LoadedModel
from gradinspect.errors import GradientError

BUILTIN = ("sum", "mean", "sumsq")
LOGPROB_PRED = "logprob:pred"
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
# Keras clips probabilities to [eps, 1 - eps] before a log; so does logprob.
_EPSILON = 1e-7


def check_loss_spec(spec: str, has_target: bool) -> None:
    """Raise GradientError for a ``--loss`` that cannot work, before anything is loaded (no TensorFlow)."""
    if spec in (*BUILTIN, "auto", "compiled", LOGPROB_PRED):
        return
    for prefix, example in (("unit:", "unit:0"), ("logit:", "logit:3"), ("logprob:", "logprob:3")):
        if spec.startswith(prefix):
            try:
                int(spec[len(prefix) :])
            except ValueError as exc:
                raise GradientError(f"--loss {spec}: expected {prefix}K with K an integer, e.g. {example}") from exc
            return
    if spec in KERAS_LOSSES:
        if not has_target:
            raise GradientError(f"--loss {spec} compares the output with a target: give --target FILE")
        return
    raise GradientError(
        f"--loss {spec}: unknown loss; use auto, {', '.join(BUILTIN)}, unit:K, logit:K, {LOGPROB_PRED}, logprob:K, "
        f"compiled, or a Keras loss ({', '.join(KERAS_LOSSES[:7])}, ...)"
    )


def term_function(spec: str) -> Callable[[Any, Any], Any]:
    """``(output, target) -> scalar tensor`` for one output and a resolved spec (not auto/compiled)."""
    import tensorflow as tf

    if spec == "sum":  # the article's reduce_sum
        return lambda y, t: tf.reduce_sum(_float(y))
    if spec == "mean":
        return lambda y, t: tf.reduce_mean(_float(y))
    if spec == "sumsq":
        return lambda y, t: tf.reduce_sum(tf.square(_float(y)))
    if spec.startswith("unit:"):
        return _unit(spec, int(spec[5:]))
    if spec.startswith("logit:"):  # the output is the logits: the pass made its softmax linear
        return _unit(spec, int(spec[6:]))
    if spec.startswith("logprob:"):
        return _logprob(spec)
    if spec in KERAS_LOSSES:
        return _keras_loss(spec)
    raise GradientError(f"--loss {spec}: not a loss of one output")


def _float(y: Any) -> Any:
    """Integer outputs become float32; float outputs keep their precision (float64 for verify)."""
    import tensorflow as tf

    return y if y.dtype.is_floating else tf.cast(y, tf.float32)


def _unit(spec: str, k: int) -> Callable[[Any, Any], Any]:
    import tensorflow as tf

    def unit(y: Any, t: Any) -> Any:
        n = int(y.shape[-1])
        if not -n <= k < n:
            raise GradientError(f"--loss {spec}: the output has {n} units (0..{n - 1})")
        return tf.reduce_sum(_float(y[..., k]))

    return unit


def _logprob(spec: str) -> Callable[[Any, Any], Any]:
    import tensorflow as tf

    which = spec.split(":", 1)[1]

    def logprob(y: Any, t: Any) -> Any:
        p = _float(y)
        n = int(p.shape[-1])
        if which == "pred":
            # The predicted class is a constant of the pass: argmax has no gradient, the log does.
            index = tf.stop_gradient(tf.argmax(p, axis=-1))
            chosen = tf.gather(p, index, axis=-1, batch_dims=len(p.shape) - 1)
        else:
            k = int(which)
            if not -n <= k < n:
                raise GradientError(f"--loss {spec}: the output has {n} classes (0..{n - 1})")
            chosen = p[..., k]
        return tf.reduce_sum(tf.math.log(tf.clip_by_value(chosen, _EPSILON, 1.0)))

    return logprob


def _keras_loss(spec: str) -> Callable[[Any, Any], Any]:
    import keras
    import tensorflow as tf

    fn = keras.losses.get(spec)

    def keras_loss(y: Any, t: Any) -> Any:
        # tf.identity drops the logits Keras attaches to a softmax output (_keras_logits), so the
        # loss is computed from, and differentiates through, the output tensor itself.
        y = tf.identity(y)
        target = tf.cast(tf.convert_to_tensor(t), y.dtype) if y.dtype.is_floating else t
        return tf.reduce_mean(fn(target, y))

    return keras_loss


def compiled_losses(loaded: LoadedModel, names: list[str]) -> tuple[dict[str, str], dict[str, float]]:
    """The losses and loss weights the model was compiled with, by output name, for ``--loss compiled``."""
    config = loaded.artifact.config or {}
    compile_config = (config.get("compile_config") or {}) if isinstance(config, dict) else {}
    training = loaded.artifact.training_config or {}
    raw = compile_config.get("loss", training.get("loss"))
    raw_weights = compile_config.get("loss_weights", training.get("loss_weights"))
    if raw is None:
        raise GradientError(f"{loaded.artifact.path}: --loss compiled: the model was saved without a compiled loss")
    if isinstance(raw, dict) and "class_name" not in raw:
        losses = {name: _loss_name(value, loaded) for name, value in raw.items() if value is not None}
    elif isinstance(raw, list):
        losses = {name: _loss_name(value, loaded) for name, value in zip(names, raw) if value is not None}
    else:
        losses = dict.fromkeys(names, _loss_name(raw, loaded))
    if isinstance(raw_weights, dict):
        weights = {str(k): float(v) for k, v in raw_weights.items()}
    elif isinstance(raw_weights, list):
        weights = {name: float(w) for name, w in zip(names, raw_weights)}
    else:
        weights = {}
    return losses, weights


def _loss_name(raw: Any, loaded: LoadedModel) -> str:
    """One saved loss as a Keras loss name (``SparseCategoricalCrossentropy`` -> its function name)."""
    if isinstance(raw, dict) and isinstance(raw.get("config"), (dict, str)) and "class_name" in raw:
        name, inner = raw["class_name"], raw["config"]
        if name == "function" and isinstance(inner, str):
            raw = inner
        else:
            raw = re.sub("([a-z0-9])([A-Z])", r"\1_\2", name).lower()
            if isinstance(inner, dict) and inner.get("from_logits"):
                raise GradientError(
                    f"--loss compiled: the model was saved with {name}(from_logits=True); gradinspect applies "
                    "Keras losses to probabilities; pass --loss explicitly"
                )
    aliases = {"mean_squared_error": "mse", "mean_absolute_error": "mae"}
    if isinstance(raw, str) and aliases.get(raw, raw) in KERAS_LOSSES:
        return aliases.get(raw, raw)
    raise GradientError(
        f"{loaded.artifact.path}: --loss compiled: the saved loss {raw!r} is not one gradinspect can rebuild "
        "(a custom loss); name the loss with --loss"
    )
