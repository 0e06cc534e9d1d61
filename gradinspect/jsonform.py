"""The JSON form of every report, derived in one place from each class's ``JSON`` layout.

A layout is a tuple of keys: an attribute (or property) name; ``(key, "attr.path")`` to rename
a field or reach into one; ``(key, (layout...))`` to group several under one key; a trailing
``?`` on a key omits it when the value is None or empty. Tuples become lists, nested reports are
converted recursively, paths become strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

Layout = tuple[Any, ...]


def to_json(value: Any) -> Any:
    """The JSON form of a report value: dataclasses by their ``JSON`` layout, tuples as lists."""
    layout = getattr(type(value), "JSON", None)
    if layout is not None:
        return _with_layout(value, layout)
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _with_layout(obj: Any, layout: Layout) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in layout:
        key, source = (item, item.rstrip("?")) if isinstance(item, str) else item
        optional = key.endswith("?")
        key = key.rstrip("?")
        if isinstance(source, tuple):
            out[key] = _with_layout(obj, source)
            continue
        value: Any = obj
        for part in source.split("."):
            value = getattr(value, part)
        if optional and (value is None or value == ()):
            continue
        out[key] = to_json(value)
    return out


class JsonMixin:
    """``to_dict()``: the JSON form, from the class's ``JSON`` layout (see :func:`to_json`)."""

    JSON: ClassVar[Layout] = ()

    def to_dict(self) -> dict[str, Any]:
        return _with_layout(self, self.JSON)


class ReportMixin(JsonMixin):
    """A top-level report: ``to_dict()`` and a short ``repr`` (its JSON's top-level keys, lists and
    objects summarized: ``GradReport(model='m.keras', loss={spec, value}, pairs=<2>, ...)``), not the
    dataclass's dump of every statistic. Report classes declare ``@dataclass(repr=False)``."""

    def __repr__(self) -> str:
        parts = [f"{key}={_brief(value)}" for key, value in self.to_dict().items()]
        return f"{type(self).__name__}({', '.join(parts)})"


def _brief(value: Any) -> str:
    if isinstance(value, list):
        return f"<{len(value)}>"
    if isinstance(value, dict):
        if "path" in value:
            return repr(value["path"])
        return "{" + ", ".join(value) + "}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
