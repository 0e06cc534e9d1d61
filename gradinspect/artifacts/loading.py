"""Turn a model artifact into a live model: Keras 3, the tf_keras fallback, or tf.saved_model."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gradinspect.artifacts import limits
from gradinspect.artifacts.custom_objects import load_custom_objects, registered_names
from gradinspect.artifacts.formats import Artifact, ModelFormat, read_artifact
from gradinspect.artifacts.graphscan import scan_savedmodel
from gradinspect.artifacts.scan import ensure_safe
from gradinspect.errors import ModelLoadError, UnsafeModelError
from gradinspect.formatting import first_line, specific_line


@dataclass(frozen=True)
class LoadedModel:
    """A live model and how it was obtained.

    ``loader`` is ``"keras"`` (Keras 3), ``"tf_keras"`` (Keras 2) or ``"tf.saved_model"`` (a
    SavedModel with no Keras structure; ``model`` is then the restored trackable object).
    ``note`` says why a fallback loader was used, if one was.
    """

    model: Any
    artifact: Artifact
    loader: str
    note: str | None = None
    # The user's custom objects (imported once per command) and --unsafe, for loaders run later
    # (verify rebuilds the model in float64).
    objects: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    unsafe: bool = False


def load_model(path: str | Path, custom_objects: str | Path | None = None, unsafe: bool = False) -> LoadedModel:
    """Read, scan and load ``path``. Raises a GradinspectError subclass for every expected failure."""
    artifact, objects = open_artifact(path, custom_objects, unsafe)
    return load_artifact(artifact, objects, unsafe)


def open_artifact(
    path: str | Path, custom_objects: str | Path | None = None, unsafe: bool = False
) -> tuple[Artifact, dict[str, Any]]:
    """Copy ``path`` privately, read it and run every check that comes before a loader may see it.

    The config scan (allow-listed classes, functions and op layers), the graph scan of a
    SavedModel (allow-listed ops) and the resource bounds (declared parameters, weight datasets,
    variables) all run on the private copy that the loader will read. Returns the artifact and
    the user's custom objects.
    """
    limit = limits.max_memory()
    artifact = read_artifact(path, limit)
    if custom_objects is not None:
        # The user's file may import TensorFlow: import it first, with its start-up logging held back.
        quiet_tensorflow("keras")
    objects = load_custom_objects(custom_objects)
    ensure_safe(artifact, registered_names(objects), unsafe)
    variable_bytes = 0
    if artifact.format in (ModelFormat.SAVEDMODEL, ModelFormat.SAVEDMODEL_KERAS):
        variable_bytes = scan_savedmodel(artifact.saved_model, artifact.path, unsafe).variable_bytes
    _ensure_affordable(artifact, variable_bytes, limit)
    return artifact, objects


def _ensure_affordable(artifact: Artifact, variable_bytes: int, limit: int) -> None:
    """Refuse a model whose weights, and their gradients, would not fit in ``limit`` bytes."""
    # float32 weights plus a gradient of the same size for each.
    declared = 2 * 4 * declared_parameters(artifact.config) if artifact.config else 0
    limits.ensure_within(
        declared, limit, f"{artifact.path}: the layers its config declares (an estimate from their sizes)"
    )
    limits.ensure_within(2 * variable_bytes, limit, f"{artifact.path}: the variables of the SavedModel")
    if artifact.weights_foreign is not None:
        raise UnsafeModelError(
            f"{artifact.path}: refused to load: in the weights, {artifact.weights_foreign}; gradinspect opens no "
            "file a model names (re-save the model so its weights are stored inside it)"
        )
    limits.ensure_within(artifact.weight_bytes, limit, f"{artifact.path}: the weight arrays it stores")


# --- parameters a config declares ------------------------------------------------------------
# Keras allocates every variable while it builds a layer, before any weight is read, so a small
# config can ask for terabytes. The estimate bounds each layer's parameters by its size
# hyperparameters and the widest feature dimension the model declares anywhere.
_WIDTH_KEYS = ("units", "filters", "output_dim")


def declared_parameters(config: Any) -> int:
    """An upper estimate of the parameters the layers in ``config`` would allocate when built."""
    layers = list(_layer_configs(config))
    width = max([1, *(_width(cls, cfg) for cls, cfg in layers)])
    return sum(_layer_params(cls, cfg, width) for cls, cfg in layers)


def _layer_configs(node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, list):
        for item in node:
            yield from _layer_configs(item)
    elif isinstance(node, dict):
        if isinstance(node.get("class_name"), str) and isinstance(node.get("config"), dict):
            yield node["class_name"], node["config"]
        for value in node.values():
            yield from _layer_configs(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return max(0, int(value))


def _ints(value: Any) -> list[int]:
    if isinstance(value, (list, tuple)):
        return [_int(v) for v in value]
    return [_int(value)]


def _width(cls: str, cfg: dict[str, Any]) -> int:
    dims = [_int(cfg.get(k)) for k in _WIDTH_KEYS]
    dims.append(_int(cfg.get("num_heads")) * max(_int(cfg.get("key_dim")), _int(cfg.get("value_dim"))))
    for key in ("batch_shape", "batch_input_shape"):
        shape = cfg.get(key)
        if isinstance(shape, list) and shape:
            dims.append(_int(shape[-1]))
    return max(dims)


def _layer_params(cls: str, cfg: dict[str, Any], width: int) -> int:
    units = max(_int(cfg.get("units")), _int(cfg.get("filters")))
    kernel = math.prod(v for v in _ints(cfg.get("kernel_size", 1)) if v) or 1
    params = 0
    if units:
        gates = 4 if "LSTM" in cls else 3 if "GRU" in cls else 1
        recurrent = units if gates > 1 or "RNN" in cls else 0
        params = gates * units * (width * kernel + recurrent + 1)
    if _int(cfg.get("input_dim")) and _int(cfg.get("output_dim")):
        params += _int(cfg.get("input_dim")) * _int(cfg.get("output_dim"))
    heads = _int(cfg.get("num_heads"))
    if heads:
        params += 4 * heads * max(_int(cfg.get("key_dim")), _int(cfg.get("value_dim")), 1) * width
    if _int(cfg.get("depth_multiplier")):
        params += _int(cfg.get("depth_multiplier")) * kernel * width
    return params


def load_artifact(artifact: Artifact, objects: dict[str, Any], unsafe: bool) -> LoadedModel:
    """Load an artifact that already passed the safety scan (or that the user marked --unsafe)."""
    return replace(_load(artifact, objects, unsafe), objects=objects, unsafe=unsafe)


def _load(artifact: Artifact, objects: dict[str, Any], unsafe: bool) -> LoadedModel:
    if artifact.format is ModelFormat.KERAS and (artifact.keras_version or "").startswith("2"):
        return _tf_keras_dot_keras(artifact, objects)
    if artifact.format is ModelFormat.KERAS:
        # tf_keras never sees a Keras 3 .keras file: it loads Keras 3 subclassed models with random
        # weights, silently.
        try:
            return LoadedModel(_keras3(artifact, objects, unsafe), artifact, "keras")
        except Exception as exc:
            raise ModelLoadError(f"{artifact.path}: Keras could not load the model: {specific_line(exc)}") from exc
    if artifact.format is ModelFormat.H5:
        return _load_h5(artifact, objects, unsafe)
    if artifact.format is ModelFormat.SAVEDMODEL_KERAS:
        try:
            return LoadedModel(_tf_keras(artifact, objects), artifact, "tf_keras")
        except Exception as exc:
            raise ModelLoadError(f"{artifact.path}: tf_keras could not load the SavedModel: {first_line(exc)}") from exc
    quiet_tensorflow()
    import tensorflow as tf

    try:
        with _silenced():
            obj = tf.saved_model.load(str(artifact.source))
    except Exception as exc:
        raise ModelLoadError(f"{artifact.path}: TensorFlow could not load the SavedModel: {first_line(exc)}") from exc
    return LoadedModel(obj, artifact, "tf.saved_model")


def _tf_keras_dot_keras(artifact: Artifact, objects: dict[str, Any]) -> LoadedModel:
    """A .keras file written by tf.keras 2.13+ (``keras_version`` 2.x): Keras 3 cannot import its
    ``keras.src.engine`` modules; tf_keras, its own loader, reads it."""
    version = artifact.keras_version
    try:
        model = _tf_keras(artifact, objects)
    except Exception as exc:
        reason = first_line(exc)
        if "variables, but received 0" in reason:
            reason += (
                " (tf.keras 2.13-2.15 built MultiHeadAttention's sublayers lazily, so their weights cannot be "
                "restored from this file; re-save the model as .h5 or as a SavedModel)"
            )
        raise ModelLoadError(
            f"{artifact.path}: tf_keras could not load this tf.keras {version} .keras file: {reason}"
        ) from exc
    return LoadedModel(model, artifact, "tf_keras", note=f"saved by tf.keras {version}: loaded with tf_keras")


def _load_h5(artifact: Artifact, objects: dict[str, Any], unsafe: bool) -> LoadedModel:
    keras3_error = _keras3_changes_semantics(artifact)
    if keras3_error is None:
        try:
            model = _keras3(artifact, objects, unsafe)
        except Exception as exc:
            keras3_error = specific_line(exc)
        else:
            keras3_error = _input_shape_mismatch(artifact, model)
            if keras3_error is None:
                return LoadedModel(model, artifact, "keras")
    # Keras 3 refuses (or misreads) some legacy configs that tf_keras reads correctly.
    try:
        model = _tf_keras(artifact, objects)
    except Exception as exc:
        raise ModelLoadError(
            f"{artifact.path}: neither Keras 3 ({keras3_error}) nor tf_keras ({first_line(exc)}) could load the model"
        ) from exc
    return LoadedModel(model, artifact, "tf_keras", note=_fallback_note(artifact, keras3_error))


def _fallback_note(artifact: Artifact, keras3_error: str) -> str:
    """What happened when tf_keras loaded a file Keras 3 could not read (or would misread), said as
    what it is, not as Keras 3's error: ``loaded with tf_keras (Keras 3 cannot read Keras 2.10 LSTM configs)``."""
    saved = f"Keras {artifact.keras_version}" if artifact.keras_version else "Keras 2"
    missing = re.search(r"Could not locate (?:class|function) '([^']+)'", keras3_error)
    unknown = re.search(r"Unrecognized keyword arguments passed to (\w+): \{'([^']+)'", keras3_error)
    if missing:
        why = f"Keras 3 cannot read {saved} {missing.group(1)} configs"
    elif unknown:
        why = f"Keras 3 cannot read {saved} {unknown.group(1)} configs: it has no argument {unknown.group(2)!r}"
    elif keras3_error.startswith("the file uses"):
        why = f"Keras 3 would compute other numbers: {keras3_error}"
    elif keras3_error.startswith("input shape"):
        why = f"Keras 3 reads this {saved} file with another input shape: {keras3_error}"
    else:
        why = f"Keras 3 cannot read this {saved} file: {keras3_error}"
    return f"loaded with tf_keras ({why})"


# Activations whose formula Keras 3 changed: a Keras 2 file that names one computes other
# numbers under Keras 3 (hard_sigmoid was clip(0.2x + 0.5), is now clip(x/6 + 0.5)).
_CHANGED_ACTIVATIONS = ("hard_sigmoid",)


def _keras3_changes_semantics(artifact: Artifact) -> str | None:
    """Why Keras 3 would compute different numbers from the Keras 2 that saved this file, if it would."""
    version = artifact.keras_version or ""
    if version.startswith("3"):
        return None
    text = json.dumps(artifact.config)
    for name in _CHANGED_ACTIVATIONS:
        if f'"{name}"' in text:
            return f"the file uses {name}, whose formula differs in Keras 3 (saved by Keras {version or '2'})"
    return None


def _input_shape_mismatch(artifact: Artifact, model: Any) -> str | None:
    """Keras 3 reads some tf.keras 2.3 Sequential files with an extra input dimension."""
    try:
        declared = [spec.shape for spec in artifact.graph.inputs] if artifact.graph is not None else []
        actual = [tuple(t.shape) for t in model.inputs]
    except Exception:
        return None
    # Keras 3 may order a multi-input model's inputs differently from the config: compare the
    # shapes regardless of order (what is looked for is an extra dimension).
    if declared and all(s is not None for s in declared) and sorted(map(repr, declared)) != sorted(map(repr, actual)):
        return f"input shape {actual} differs from the saved {declared}"
    return None


def _keras3(artifact: Artifact, objects: dict[str, Any], unsafe: bool) -> Any:
    quiet_tensorflow("keras")
    import keras

    with _silenced():
        return keras.saving.load_model(
            str(artifact.source), custom_objects=objects or None, compile=False, safe_mode=not unsafe
        )


def _tf_keras(artifact: Artifact, objects: dict[str, Any]) -> Any:
    quiet_tensorflow("tf_keras")
    import tf_keras

    with _silenced():
        return tf_keras.models.load_model(str(artifact.source), custom_objects=objects or None, compile=False)


def quiet_tensorflow(*modules: str, setup: Callable[[Any], None] | None = None) -> None:
    """Import TensorFlow (and the named ``keras``/``tf_keras``) once, keeping start-up chatter off stderr.

    TF_CPP_MIN_LOG_LEVEL does not silence absl's "log messages before InitializeLog" banner
    or the CUDA probes, which C++ writes to file descriptor 2 directly; so the imports and the
    first device query run with fd 2 pointed at a temporary file, replayed if the import fails.
    Only what is asked for is imported: Keras 3 and tf_keras each cost a second or more.
    ``setup(tf)`` runs right after the import, before TensorFlow starts its devices (``--devices``).
    """
    wanted = ("tensorflow", *modules)
    if all(m in sys.modules for m in wanted):
        return
    # Only logging is changed: TF_ENABLE_ONEDNN_OPTS (which picks CPU kernels, and so rounding) is
    # left as the user has it; its notice is among the lines captured below.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    with _fd2_captured():
        import tensorflow as tf

        if setup is not None:
            setup(tf)
        tf.config.list_physical_devices()
        tf.add(tf.constant(1.0), 1.0)  # the first kernel launch prints a CPU-feature notice
        for name in modules:
            importlib.import_module(name)
    tf.get_logger().setLevel(logging.ERROR)


@contextlib.contextmanager
def _fd2_captured() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode("utf-8", "replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    # Loaders print deprecation warnings and progress to stdout/stderr; stdout is for data.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def as_loaded(model_or_path: Any, custom_objects: Any, unsafe: bool) -> LoadedModel:
    if isinstance(model_or_path, LoadedModel):
        return model_or_path
    if isinstance(model_or_path, (str, Path)):
        return load_model(model_or_path, custom_objects=custom_objects, unsafe=unsafe)
    from gradinspect.artifacts.formats import Artifact, ModelFormat

    artifact = Artifact(Path("<in-memory model>"), ModelFormat.KERAS, None)
    return LoadedModel(model_or_path, artifact, "in-memory")
