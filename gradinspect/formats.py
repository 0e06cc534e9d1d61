"""Detect a saved model's format, read its configuration without TensorFlow, and scan it for code."""

from __future__ import annotations

import contextlib
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from gradinspect.errors import ModelFileError, UnsafeModelError

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# A real config.json is kilobytes to a few megabytes; a larger one is refused before reading
# (a zip bomb would otherwise be inflated into memory).
_MAX_CONFIG_BYTES = 64 * 1024 * 1024
_EXPECTED = "expected a Keras 3 '.keras' file, a legacy '.h5'/'.hdf5' file or a TensorFlow SavedModel directory"

# Module roots whose classes and functions may be deserialized without --unsafe. Keras 3
# writes "builtins" for its own built-in functions (e.g. activations) and then resolves
# them only inside keras.* modules, so it is safe too.
SAFE_MODULE_ROOTS = frozenset({"keras", "tf_keras", "tensorflow", "builtins"})


class ModelFormat(str, Enum):
    """The kinds of artifact gradinspect reads."""

    KERAS = "keras"
    H5 = "h5"
    SAVEDMODEL_KERAS = "savedmodel-keras"
    SAVEDMODEL = "savedmodel"


@dataclass(frozen=True)
class Artifact:
    """A model file as read from disk, before any loader has seen it.

    ``config`` is the model's Keras configuration (``None`` for a SavedModel without Keras
    metadata). For a SavedModel with Keras metadata, ``metadata_nodes`` holds every node's
    metadata JSON, decoded.
    """

    path: Path
    format: ModelFormat
    config: dict[str, Any] | None
    keras_version: str | None = None
    metadata_nodes: tuple[dict[str, Any], ...] = ()
    training_config: dict[str, Any] | None = None


def read_artifact(path: str | Path) -> Artifact:
    """Identify ``path`` and read its configuration; raise ModelFileError on anything unusable."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{p}: no such file or directory; {_EXPECTED}")
    if p.is_dir():
        return _read_savedmodel(p)
    suffix = p.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelFileError(f"{p}: unsupported file type {suffix or '(no extension)'!r}; {_EXPECTED}")
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ModelFileError(f"{p}: cannot read the file ({exc.strerror or exc})") from exc
    if not head:
        raise ModelFileError(f"{p}: the file is empty (0 bytes); {_EXPECTED}")
    if suffix == ".keras":
        if not head.startswith(_ZIP_MAGIC):
            raise ModelFileError(f"{p}: not a valid .keras file (a .keras file is a zip archive; this one is not)")
        return _read_keras_zip(p)
    if not head.startswith(_HDF5_MAGIC):
        raise ModelFileError(
            f"{p}: not an HDF5 file; a legacy Keras model saved with model.save('model.h5') was expected"
        )
    return _read_h5(p)


def _read_keras_zip(p: Path) -> Artifact:
    try:
        with zipfile.ZipFile(p) as zf:
            names = set(zf.namelist())
            if "config.json" not in names:
                raise ModelFileError(
                    f"{p}: the archive has no config.json, so it is not a Keras 3 model saved with model.save()"
                )
            if zf.getinfo("config.json").file_size > _MAX_CONFIG_BYTES:
                raise ModelFileError(
                    f"{p}: config.json is {zf.getinfo('config.json').file_size:,} bytes, more than any Keras "
                    f"config needs ({_MAX_CONFIG_BYTES:,}); refusing to read it"
                )
            config = _json(zf.read("config.json"), p, "config.json")
            meta = _json(zf.read("metadata.json"), p, "metadata.json") if "metadata.json" in names else {}
            if "model.weights.h5" in names:
                # Read one byte of the weights member so a truncated archive fails here, not later.
                with zf.open("model.weights.h5") as fh:
                    fh.read(1)
    except zipfile.BadZipFile as exc:
        raise ModelFileError(
            f"{p}: the .keras archive is truncated or corrupt ({exc}); re-save or re-download it"
        ) from exc
    except (OSError, EOFError, zipfile.LargeZipFile) as exc:
        raise ModelFileError(f"{p}: the .keras archive cannot be read ({exc}); re-save or re-download it") from exc
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError(f"{p}: config.json does not describe a Keras model (no 'class_name')")
    version = meta.get("keras_version") if isinstance(meta, dict) else None
    return Artifact(p, ModelFormat.KERAS, config, version)


def _read_h5(p: Path) -> Artifact:
    import h5py

    try:
        with h5py.File(p, "r") as h5:
            attrs = dict(h5.attrs)
            keys = set(h5.keys())
    except OSError as exc:
        raise ModelFileError(f"{p}: the HDF5 file is truncated or corrupt ({exc}); re-save or re-download it") from exc
    raw = attrs.get("model_config")
    if raw is None:
        if "layer_names" in attrs or "model_weights" in keys or "layers" in keys or "vars" in keys:
            raise ModelFileError(
                f"{p}: the file holds only weights (no 'model_config'); "
                "gradinspect needs a full model saved with model.save()"
            )
        raise ModelFileError(f"{p}: the HDF5 file has no 'model_config' attribute, so it is not a saved Keras model")
    config = _json(raw, p, "model_config")
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError(f"{p}: 'model_config' does not describe a Keras model (no 'class_name')")
    version = attrs.get("keras_version")
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    training = None
    if attrs.get("training_config") is not None:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            training = json.loads(attrs["training_config"])
    return Artifact(
        p,
        ModelFormat.H5,
        config,
        str(version) if version is not None else None,
        training_config=training if isinstance(training, dict) else None,
    )


def _read_savedmodel(p: Path) -> Artifact:
    if not (p / "saved_model.pb").is_file() and not (p / "saved_model.pbtxt").is_file():
        raise ModelFileError(
            f"{p}: a directory, but not a TensorFlow SavedModel (no saved_model.pb inside); {_EXPECTED}"
        )
    meta_path = p / "keras_metadata.pb"
    if not meta_path.is_file():
        return Artifact(p, ModelFormat.SAVEDMODEL, None)
    try:
        nodes = tuple(_keras_metadata_nodes(meta_path.read_bytes(), p))
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{p}: keras_metadata.pb is corrupt ({exc}); re-save the model") from exc
    root = next((n for n in nodes if n.get("_node_path") == "root"), None)
    config = None
    if root is not None and isinstance(root.get("config"), dict):
        config = {"class_name": root.get("class_name"), "config": root["config"]}
    training = root.get("training_config") if root is not None else None
    return Artifact(
        p, ModelFormat.SAVEDMODEL_KERAS, config, None, nodes, training if isinstance(training, dict) else None
    )


def _json(raw: bytes | str, p: Path, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{p}: {what} is not valid JSON ({exc}); the file is corrupt") from exc


# --- keras_metadata.pb, read with a minimal protobuf wire-format decoder -----------------
# The file is a `SavedMetadata` message: `repeated SavedObject nodes = 1`, where SavedObject
# has `node_path = 3` and `metadata = 5` (a JSON string). Decoding the wire format by hand
# keeps TensorFlow out of the safety scan.


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, i = _varint(buf, i)
        elif wire_type == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("field runs past the end of the file")
            value, i = buf[i : i + n], i + n
        elif wire_type == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire_type == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        yield number, value


def _keras_metadata_nodes(buf: bytes, p: Path) -> Iterator[dict[str, Any]]:
    for number, node in _fields(buf):
        if number != 1 or not isinstance(node, bytes):
            continue
        fields = {n: v for n, v in _fields(node)}
        raw = fields.get(5, b"")
        path = fields.get(3, b"")
        meta = _json(raw, p, "keras_metadata.pb") if raw else {}
        if isinstance(meta, dict):
            meta["_node_path"] = path.decode("utf-8") if isinstance(path, bytes) else ""
            yield meta


# --- the safety scan ----------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One reason the configuration is unsafe to load."""

    layer: str
    reason: str


def scan_config(artifact: Artifact, registered: frozenset[str] = frozenset()) -> list[Finding]:
    """Every Lambda layer and every non-Keras class or function the config refers to.

    ``registered`` holds the class/function names (and ``package>name`` registered names) the
    user made available through ``--custom-objects``; those are allowed.
    """
    findings: list[Finding] = []
    roots: list[Any] = [artifact.config] if artifact.config is not None else []
    roots.extend(artifact.metadata_nodes)
    if artifact.training_config is not None:
        roots.append(artifact.training_config)
    for root in roots:
        # The model itself is not a layer: its name does not prefix its layers' names.
        is_model = root is artifact.config or root.get("_node_path") == "root"
        _scan(root, "(model)", registered, findings, named=not is_model)
    unique: dict[tuple[str, str], Finding] = {}
    for f in findings:
        unique.setdefault((f.layer, f.reason), f)
    return list(unique.values())


def ensure_safe(artifact: Artifact, registered: frozenset[str] = frozenset(), unsafe: bool = False) -> None:
    """Raise UnsafeModelError naming the first offending layer, unless ``unsafe``."""
    if unsafe:
        return
    findings = scan_config(artifact, registered)
    if findings:
        first = findings[0]
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise UnsafeModelError(
            f"{artifact.path}: refused to load: layer {first.layer!r} {first.reason}{more}; "
            "pass --custom-objects FILE.py to register trusted custom classes, "
            "or --unsafe if you trust this file and accept that it may run code"
        )


def _scan(node: Any, layer: str, registered: frozenset[str], out: list[Finding], named: bool = True) -> None:
    if isinstance(node, list):
        for item in node:
            _scan(item, layer, registered, out)
        return
    if not isinstance(node, dict):
        return
    class_name = node.get("class_name")
    inner = node.get("config")
    if isinstance(class_name, str):
        name = _layer_name(node, inner)
        if named and name is not None and class_name not in ("function", "__keras_tensor__"):
            layer = name if layer == "(model)" else f"{layer}/{name}"
        reason = _unsafe_reason(node, class_name, inner, registered)
        if reason:
            out.append(Finding(layer, reason))
    elif node.get("function_type") == "lambda" or "function" in node and node.get("function_type") == "raw":
        out.append(Finding(layer, "holds serialized Python code (a Lambda function)"))
    for key, value in node.items():
        if key in ("registered_name", "module", "class_name"):
            continue
        _scan(value, layer, registered, out)


def _layer_name(node: dict[str, Any], inner: Any) -> str | None:
    if isinstance(inner, dict) and isinstance(inner.get("name"), str):
        return inner["name"]
    if isinstance(node.get("name"), str):
        return node["name"]
    return None


def _unsafe_reason(node: dict[str, Any], class_name: str, inner: Any, registered: frozenset[str]) -> str | None:
    if class_name == "Lambda":
        if "Lambda" in registered:
            return None
        return "is a Lambda layer, whose Python code would run while loading"
    if class_name == "__lambda__":
        return "holds a serialized Python lambda, which would run while loading"
    module = node.get("module")
    registered_name = node.get("registered_name")
    allowed = class_name in registered or (isinstance(registered_name, str) and registered_name in registered)
    if class_name == "function" and isinstance(inner, str):
        allowed = allowed or inner in registered
    if allowed:
        return None
    if isinstance(registered_name, str) and ">" in registered_name:
        return f"uses the custom object {registered_name!r}, which is not part of Keras/TensorFlow"
    if "module" in node:
        root = module.split(".", 1)[0] if isinstance(module, str) else None
        if root not in SAFE_MODULE_ROOTS:
            where = f"from module {module!r}" if module else "with no module (defined in a script)"
            what = f"function {inner!r}" if class_name == "function" else f"class {class_name!r}"
            return f"uses {what} {where}, which is not part of Keras/TensorFlow"
    return None
