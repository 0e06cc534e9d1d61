"""Import a user's trusted ``--custom-objects`` Python file and collect what it registers."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from gradinspect.errors import CustomObjectsError


def load_custom_objects(path: str | Path | None) -> dict[str, Any]:
    """Run the file (the user vouches for it) and return ``{name: class_or_function}``.

    Collected: a ``CUSTOM_OBJECTS`` dict if the file defines one, every class and function the
    file itself defines, and everything registered with Keras's serialization registry
    (``register_keras_serializable``), under its registered ``package>name`` too.
    """
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise CustomObjectsError(f"--custom-objects {p}: no such file; give the path of a Python file")
    if p.suffix != ".py":
        raise CustomObjectsError(f"--custom-objects {p}: not a Python file (.py expected)")
    digest = hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:12]
    module_name = f"gradinspect_custom_objects_{digest}"
    try:
        spec = importlib.util.spec_from_file_location(module_name, p)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code may raise anything
        sys.modules.pop(module_name, None)
        raise CustomObjectsError(
            f"--custom-objects {p}: importing the file failed: {type(exc).__name__}: {exc}"
        ) from exc
    found: dict[str, Any] = {}
    for name, obj in vars(module).items():
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", None) == module_name:
            found[name] = obj
    explicit = getattr(module, "CUSTOM_OBJECTS", None)
    if isinstance(explicit, dict):
        found.update({str(k): v for k, v in explicit.items()})
    if "keras" in sys.modules:
        found.update(sys.modules["keras"].saving.get_custom_objects())
    if "tf_keras" in sys.modules:
        found.update(sys.modules["tf_keras"].utils.get_custom_objects())
    return found


def registered_names(objects: dict[str, Any]) -> frozenset[str]:
    """Every name under which the safety scan should accept an object from ``objects``."""
    names = set(objects)
    for key, obj in objects.items():
        if ">" in key:
            names.add(key.split(">", 1)[1])
        names.add(getattr(obj, "__name__", key))
    return frozenset(names)
