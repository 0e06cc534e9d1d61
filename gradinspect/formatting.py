"""The one home for turning values into text: shapes, numbers, counts, the informative line of an error.

A leaf module (it imports nothing from gradinspect), so that messages raised anywhere and every
renderer format the same value the same way.
"""

from __future__ import annotations

import re
from typing import Any

MISSING = "—"


def shape(value: Any, unknown: str = "") -> str:
    """``(None, 3)`` as Keras prints it, ``(3,)`` for one dimension; several as ``[(None, 3), (None, 2)]``."""
    if value is None:
        return unknown
    value = tuple(value)
    if value and all(isinstance(s, tuple) for s in value):
        return "[" + ", ".join(shape(s) for s in value) + "]"
    inner = ", ".join("None" if d is None else str(d) for d in value)
    return f"({inner},)" if len(value) == 1 else f"({inner})"


def number(value: float | None, missing: str = MISSING) -> str:
    """A statistic in four significant digits (``0.1235``, ``2.236e+04``); ``missing`` for None."""
    return missing if value is None else f"{value:.4g}"


def count(n: int) -> str:
    """``1,234,567``."""
    return f"{n:,}"


# Lines of a Keras/TensorFlow error that only head the reason given further down.
_HEADINGS = re.compile(
    r"(exception encountered when calling|example error message for object|a total of \d+ objects "
    r"could not be loaded|call arguments received by layer|traceback \(most recent call last\)|^file \")",
    re.IGNORECASE,
)
_LAYER = re.compile(r"calling layer ['\"]?([^'\"]+)['\"]? \(type (\w+)\)")


def summed_over(batches: int | None) -> str:
    """Said after a stage-2 value taken over several batches: it is the sum of theirs."""
    return f"; summed over {batches} batches" if batches else ""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The informative line of an exception, at most ``limit`` characters.

    Keras and TensorFlow errors span several lines whose first is often a heading ("Exception
    encountered when calling layer 'x' (type Embedding).", "A total of 16 objects could not be
    loaded. Example error message for object <Dense ...>:"); the reason ("was never built",
    "expected 2 variables", a shape or dtype mismatch) comes later. Headings, argument listings and
    config dumps are skipped; the layer a heading names is kept as context.
    """
    lines = []
    for line in str(exc).strip().splitlines():
        if line.strip().lower().startswith(("call arguments received", "arguments received")):
            break  # what follows lists the arguments, not the reason
        line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line.strip())
        line = re.split(r"\s*(?:Full object config|Config|Received config)\s*[:=]\s*\{", line)[0].strip()
        if line:
            lines.append(line)
    if not lines:
        return type(exc).__name__
    reason = next((line for line in lines if not _HEADINGS.search(line) and not _is_dump(line)), lines[0])
    layer = _LAYER.search(lines[0])
    if layer and reason is not lines[0] and layer.group(1) not in reason:
        reason = f"layer {layer.group(1)!r} ({layer.group(2)}): {reason}"
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


# Keras's wrappers around a layer's own error while deserializing: they say where, not why.
_GENERIC = re.compile(r"could not be deserialized properly|^Error when deserializing class", re.IGNORECASE)


def specific_line(exc: BaseException, limit: int = 300) -> str:
    """The most specific informative line of ``exc`` and the exceptions it was raised from.

    Keras wraps a layer's own error ("Unrecognized keyword arguments passed to RandomRotation: …")
    in generic deserialization errors, as the exception's cause or context and as text after
    "Exception encountered:"; the innermost line that is not such a wrapper is the reason.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    for inner in reversed(chain):
        line = first_line(ValueError(str(inner).rsplit("Exception encountered:", 1)[-1]), limit)
        if len(line) > 15 and not _GENERIC.search(line):
            return line
    return first_line(exc, limit)


def _is_dump(line: str) -> bool:
    """A serialized config or argument listing rather than a sentence."""
    return line.startswith(("{", "[", "config=", "Received:", "Arguments received", "*", "\u2022")) or (
        line.count("'") > 20 and ":" in line and "{" in line
    )


def without_output_index(name: str) -> str:
    """A TensorFlow tensor or variable name without its ``:N`` output index (``dense/kernel:0`` ->
    ``dense/kernel``); a colon that is part of a layer's name (``a:b/kernel``) stays."""
    return re.sub(r":\d+$", "", name)
