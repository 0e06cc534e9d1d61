"""Detect a saved model's format and read its configuration without TensorFlow."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from gradinspect.artifacts import limits, protos
from gradinspect.artifacts.config_graph import ConfigGraph
from gradinspect.artifacts.config_walk import MALFORMED, walk_config
from gradinspect.artifacts.snapshot import Snapshot, snapshot
from gradinspect.artifacts.weights import WeightShapes
from gradinspect.errors import ModelFileError

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# What h5py raises on a corrupt file: OSError for unreadable blocks, RuntimeError and ValueError
# from the HDF5 library's own checks (bad heaps, offsets past the end, unknown entry types),
# KeyError for an object header it cannot open while walking the file (found by the fuzz tests),
# and SystemError when that happens inside its lock.
HDF5_ERRORS = (OSError, RuntimeError, ValueError, KeyError, SystemError)
_EXPECTED = "expected a Keras 3 '.keras' file, a legacy '.h5'/'.hdf5' file or a TensorFlow SavedModel directory"


class ModelFormat(str, Enum):
    """The kinds of artifact gradinspect reads."""

    KERAS = "keras"
    H5 = "h5"
    SAVEDMODEL_KERAS = "savedmodel-keras"
    SAVEDMODEL = "savedmodel"


@dataclass(frozen=True)
class Artifact:
    """A model file as read from disk, before any loader has seen it.

    ``path`` is the path the user gave (for messages); ``local`` is the private copy that every
    reader and loader opens (see :mod:`gradinspect.artifacts.snapshot`). ``config`` is the model's Keras
    configuration (``None`` for a SavedModel without Keras metadata). For a SavedModel with Keras
    metadata, ``metadata_nodes`` holds every node's metadata JSON, decoded. For a SavedModel,
    ``saved_model`` is ``saved_model.pb`` decoded once (a ``tensorflow.SavedModel`` message, see
    :mod:`gradinspect.artifacts.protos`): every reader of the graph reads this message. ``graph``
    is the config walked once (None for a subclassed model, or when the config is malformed:
    ``graph_error`` then says how).
    """

    path: Path
    format: ModelFormat
    config: dict[str, Any] | None
    keras_version: str | None = None
    metadata_nodes: tuple[dict[str, Any], ...] = ()
    training_config: dict[str, Any] | None = None
    local: Path | None = None
    snapshot: Snapshot | None = field(default=None, repr=False, compare=False)
    note: str | None = None
    saved_model: Any = field(default=None, repr=False, compare=False)
    # Read in the same pass as the config, from the weights file (``.keras``: model.weights.h5):
    # the bytes its datasets declare, and what in it would make h5py open another file (None: nothing).
    weight_bytes: int = 0
    weights_foreign: str | None = None
    graph: ConfigGraph | None = field(default=None, repr=False, compare=False)
    graph_error: str | None = None
    # The bytes to read: the private copy when there is one.
    source: Path = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", self.local if self.local is not None else self.path)


def read_artifact(path: str | Path, max_bytes: int | None = None) -> Artifact:
    """Copy ``path`` privately, identify it and read its configuration; raise ModelFileError on anything unusable.

    ``max_bytes`` bounds what the copy may hold (default: :func:`limits.default_max_memory`).
    """
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{p}: no such file or directory; {_EXPECTED}")
    if not p.is_dir():
        suffix = p.suffix.lower()
        if suffix not in (".keras", ".h5", ".hdf5"):
            raise ModelFileError(f"{p}: unsupported file type {suffix or '(no extension)'!r}; {_EXPECTED}")
    snap = snapshot(p, max_bytes if max_bytes is not None else limits.default_max_memory())
    artifact = _identify(p, snap.local)
    return replace(artifact, local=snap.local, snapshot=snap)


def _identify(p: Path, local: Path) -> Artifact:
    if local.is_dir():
        return _read_savedmodel(p, local)
    # The private copy is opened once: its magic bytes, its config and its weights' facts.
    with open(local, "rb") as fh:
        head = fh.read(8)
        fh.seek(0)
        if not head:
            raise ModelFileError(f"{p}: the file is empty (0 bytes); {_EXPECTED}")
        # By content, not by name: tf.keras 2.11 wrote HDF5 under a .keras name.
        if head.startswith(_ZIP_MAGIC):
            artifact = _read_keras_zip(p, fh)
        elif head.startswith(_HDF5_MAGIC):
            artifact = _read_h5(p, fh)
        elif p.suffix.lower() == ".keras":
            raise ModelFileError(f"{p}: not a valid .keras file (a .keras file is a zip archive; this one is not)")
        else:
            raise ModelFileError(
                f"{p}: not an HDF5 file; a legacy Keras model saved with model.save('model.h5') was expected"
            )
    named = ".keras" if p.suffix.lower() == ".keras" else ".h5"
    found = ".keras" if artifact.format is ModelFormat.KERAS else ".h5"
    if named != found:
        what = "a Keras 3 .keras zip archive" if found == ".keras" else "an HDF5 (legacy .h5) model"
        artifact = replace(artifact, note=f"{p.name} is {what} despite its name; read as {found}")
    return artifact


def _read_keras_zip(p: Path, fh: Any) -> Artifact:
    # The snapshot already bounded every member by its declared size.
    try:
        with zipfile.ZipFile(fh) as zf:
            names = set(zf.namelist())
            if "config.json" not in names:
                raise ModelFileError(
                    f"{p}: the archive has no config.json, so it is not a Keras 3 model saved with model.save()"
                )
            config = _json(zf.read("config.json"), p, "config.json")
            meta = _json(zf.read("metadata.json"), p, "metadata.json") if "metadata.json" in names else {}
            _ensure_model_config(config, p, "config.json")
            version = meta.get("keras_version") if isinstance(meta, dict) else None
            artifact = Artifact(p, ModelFormat.KERAS, config, version if isinstance(version, str) else None)
            weights = _weight_facts(zf, p, config) if "model.weights.h5" in names else _walked(config, None, True)
    except zipfile.BadZipFile as exc:
        raise ModelFileError(
            f"{p}: the .keras archive is truncated or corrupt ({exc}); re-save or re-download it"
        ) from exc
    except (OSError, EOFError, zipfile.LargeZipFile) as exc:
        raise ModelFileError(f"{p}: the .keras archive cannot be read ({exc}); re-save or re-download it") from exc
    return replace(artifact, **weights)


def _weight_facts(zf: zipfile.ZipFile, p: Path, config: dict[str, Any]) -> dict[str, Any]:
    """From one open of the weights member: its declared dataset bytes, its foreign storage, and the
    config walked with the weights' shapes."""
    import h5py

    try:
        with zf.open("model.weights.h5") as member, h5py.File(member, "r") as h5:
            weight_bytes, foreign = limits.h5_declared(h5)
            return {"weight_bytes": weight_bytes, "weights_foreign": foreign, **_walked(config, h5, True)}
    except HDF5_ERRORS as exc:
        raise ModelFileError(f"{p}: the weights cannot be read ({exc}); the file is truncated or corrupt") from exc


def _walked(
    config: dict[str, Any], weights: Any, keras3: bool, metadata: tuple[dict[str, Any], ...] = ()
) -> dict[str, Any]:
    """``graph`` and ``graph_error`` of an Artifact: the config's one walk (see config_walk)."""
    try:
        return {"graph": walk_config(config, WeightShapes(weights, keras3), metadata), "graph_error": None}
    except MALFORMED as exc:
        # The config is untrusted JSON: a missing key or a wrong type is a malformed file. Only a
        # listing needs the walk, so that says so; a loader may still read the model.
        return {"graph": None, "graph_error": f"the model config is malformed ({type(exc).__name__}: {exc})"}


def _read_h5(p: Path, fh: Any) -> Artifact:
    import h5py

    try:
        with h5py.File(fh, "r") as h5:
            attrs = dict(h5.attrs)
            keys = set(h5.keys())
            weight_bytes, foreign = limits.h5_declared(h5)
            config = _h5_config(attrs, keys, p)
            graph = _walked(config, h5.get("model_weights", h5), False)
    except HDF5_ERRORS as exc:
        raise ModelFileError(f"{p}: the HDF5 file is truncated or corrupt ({exc}); re-save or re-download it") from exc
    version = attrs.get("keras_version")
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    training = None
    if attrs.get("training_config") is not None:
        with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
            training = json.loads(attrs["training_config"])
    return Artifact(
        p,
        ModelFormat.H5,
        config,
        str(version) if version is not None else None,
        training_config=training if isinstance(training, dict) else None,
        weight_bytes=weight_bytes,
        weights_foreign=foreign,
        **graph,
    )


def _h5_config(attrs: dict[str, Any], keys: set[str], p: Path) -> dict[str, Any]:
    """The legacy file's ``model_config`` attribute, parsed and checked."""
    raw = attrs.get("model_config")
    if raw is None:
        if "layer_names" in attrs or "model_weights" in keys or "layers" in keys or "vars" in keys:
            raise ModelFileError(
                f"{p}: the file holds only weights (no 'model_config'); "
                "gradinspect needs a full model saved with model.save()"
            )
        raise ModelFileError(f"{p}: the HDF5 file has no 'model_config' attribute, so it is not a saved Keras model")
    if len(raw) > limits.MAX_JSON_MEMBER:
        raise ModelFileError(f"{p}: 'model_config' is {len(raw):,} bytes, more than any Keras config needs")
    config = _json(raw, p, "model_config")
    _ensure_model_config(config, p, "'model_config'")
    assert isinstance(config, dict)
    return config


def _read_savedmodel(p: Path, local: Path) -> Artifact:
    if not (local / "saved_model.pb").is_file():
        hint = (
            " (saved_model.pbtxt is not supported; convert it to saved_model.pb)"
            if (local / "saved_model.pbtxt").is_file()
            else ""
        )
        raise ModelFileError(
            f"{p}: a directory, but not a TensorFlow SavedModel (no saved_model.pb inside){hint}; {_EXPECTED}"
        )
    saved_model = _decode_saved_model(p, local / "saved_model.pb")
    _ensure_variables(p, local, saved_model)
    meta_path = local / "keras_metadata.pb"
    if not meta_path.is_file():
        return Artifact(p, ModelFormat.SAVEDMODEL, None, saved_model=saved_model)
    raw = limits.read_regular(meta_path, limits.MAX_JSON_MEMBER, f"{p}: keras_metadata.pb")
    try:
        metadata = protos.decode_keras_metadata(raw)
    except ValueError as exc:
        raise ModelFileError(f"{p}: keras_metadata.pb is corrupt ({exc}); re-save the model") from exc
    _canonical(meta_path, metadata)
    nodes = tuple(_keras_metadata_nodes(metadata, p))
    root = next((n for n in nodes if n.get("_node_path") == "root"), None)
    if root is None:
        raise ModelFileError(f"{p}: keras_metadata.pb describes no model (no root node); re-save the model")
    config = None
    if isinstance(root.get("config"), dict):
        config = {"class_name": root.get("class_name"), "config": root["config"]}
    training = root.get("training_config")
    return Artifact(
        p,
        ModelFormat.SAVEDMODEL_KERAS,
        config,
        None,
        nodes,
        training if isinstance(training, dict) else None,
        saved_model=saved_model,
        **(_walked(config, None, False, nodes) if config is not None else {}),
    )


def _ensure_variables(p: Path, local: Path, saved_model: Any) -> None:
    """A SavedModel whose object graph holds variables needs ``variables/variables.index`` and every
    data shard it names; without them its weights are missing and no listing or gradient is true."""
    graphs = saved_model.meta_graphs
    if not graphs or not any(node.HasField("variable") for node in graphs[0].object_graph_def.nodes):
        return
    folder = local / "variables"
    shards = sorted(f.name for f in folder.glob("variables.data-*-of-*")) if folder.is_dir() else []
    total = int(shards[0].rsplit("-of-", 1)[1]) if shards and shards[0].rsplit("-of-", 1)[1].isdigit() else 1
    wanted = ["variables.index", *(f"variables.data-{i:05d}-of-{total:05d}" for i in range(total))]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise ModelFileError(
            f"{p}: variables/{missing[0]} is missing{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: "
            "the SavedModel's weights are not all there; copy the whole SavedModel directory"
        )


def _decode_saved_model(p: Path, pb: Path) -> Any:
    """``saved_model.pb`` decoded once, with the protobuf runtime TensorFlow reads it with; the private
    copy is rewritten from the decoded message, so the loader reads exactly what was scanned."""
    data = limits.read_regular(pb, limits.max_memory(), f"{p}: saved_model.pb")
    try:
        saved_model = protos.decode_saved_model(data)
    except ValueError as exc:
        raise ModelFileError(f"{p}: saved_model.pb cannot be read: {exc}; re-export the model") from exc
    _canonical(pb, saved_model)
    return saved_model


def _canonical(path: Path, msg: Any) -> None:
    """Replace the private copy ``path`` with ``msg`` serialized (the copy is read-only: 0400)."""
    tmp = path.with_name(path.name + ".canonical")
    with open(tmp, "xb") as out:
        out.write(protos.encode(msg))
    os.chmod(tmp, stat.S_IRUSR)
    os.replace(tmp, path)


def _ensure_model_config(config: Any, p: Path, what: str) -> None:
    """A model's config is a JSON object whose ``class_name`` is a string (and ``config``, if any, an object)."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError(f"{p}: {what} does not describe a Keras model (no 'class_name')")
    if not isinstance(config["class_name"], str):
        raise ModelFileError(f"{p}: {what} is malformed ('class_name' must be a string); the file is corrupt")
    if not isinstance(config.get("config", {}), (dict, list)):
        raise ModelFileError(f"{p}: {what} is malformed ('config' must be an object or a list); the file is corrupt")


def _json(raw: bytes | str, p: Path, what: str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise ModelFileError(f"{p}: {what} is nested too deeply to be a Keras config; the file is corrupt") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{p}: {what} is not valid JSON ({exc}); the file is corrupt") from exc


def _keras_metadata_nodes(metadata: Any, p: Path) -> Iterator[dict[str, Any]]:
    """Each node's metadata JSON of a decoded ``SavedMetadata``, with its ``_node_path``."""
    for node in metadata.nodes:
        meta = _json(node.metadata, p, "keras_metadata.pb") if node.metadata else {}
        if isinstance(meta, dict):
            meta["_node_path"] = node.node_path
            yield meta
