"""The samples of one run, read a slice at a time: a memory-mapped ``.npy`` or an HDF5 dataset is
never read whole, and every slice is checked against the model's inputs as it is read."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from gradinspect.artifacts import limits
from gradinspect.artifacts.loading import LoadedModel
from gradinspect.engine.inputs import RandomDraw, check_arrays, random_arrays
from gradinspect.engine.options import DataOptions
from gradinspect.engine.readers import lazy_columns, read_arrays, read_rows
from gradinspect.errors import InputDataError
from gradinspect.report import InputSpec

_NONFINITE = re.compile(r"^input '(.+)' holds (\d+) NaN/Inf value\(s\)$")


class InputSource:
    """``columns`` (arrays, memory maps or :class:`~gradinspect.engine.readers.H5Rows`) by input
    name, restricted to ``--samples START:STOP``; :meth:`rows` gives checked, cast arrays."""

    def __init__(self, columns: dict[str, Any], specs: list[InputSpec], label: str, samples: str | None = None):
        self.specs, self.label = specs, label
        for name, col in columns.items():
            if not col.shape:
                raise InputDataError(
                    f"{label}: input {name!r} is a single number (a 0-d array); inputs have samples along "
                    "their first axis, e.g. shape (N, features)"
                )
        self.columns = {name: _with_batch_axis(col, _spec(specs, name)) for name, col in columns.items()}
        sizes = {int(col.shape[0]) for col in self.columns.values()}
        if len(sizes) > 1:
            raise InputDataError(
                f"{label}: inputs have different numbers of samples ({', '.join(map(str, sorted(sizes)))})"
            )
        total = sizes.pop() if sizes else 0
        self.start, stop, _ = _window(samples).indices(total)
        self.n = max(0, stop - self.start)
        if total == 0:
            first = next(iter(self.columns), "input")
            raise InputDataError(f"{label}: input {first!r} is empty (batch of 0 samples)")
        if self.n == 0:
            raise InputDataError(f"--samples {samples}: selects no samples")
        self._casts: dict[str, None] = {}
        self._nonfinite: dict[str, int] = {}
        self._hashers: dict[str, Any] = {}
        self._hashed = 0
        self.read_whole = False  # the file's format cannot be read lazily

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples ``start:stop`` of the selection, read, checked against the model and cast."""
        row_bytes = sum(math.prod(col.shape[1:]) * np.dtype(col.dtype).itemsize for col in self.columns.values())
        limits.ensure_within((stop - start) * row_bytes, limits.max_memory(), f"{self.label}: one batch")
        a, b = self.start + start, self.start + stop
        part = {name: read_rows(col, a, b, self.label) for name, col in self.columns.items()}
        arrays, notes = check_arrays(part, self.specs, self.label)
        for note in notes:
            found = _NONFINITE.match(note)
            if found:
                self._nonfinite[found.group(1)] = self._nonfinite.get(found.group(1), 0) + int(found.group(2))
            else:
                self._casts.setdefault(note)
        if start == self._hashed:
            self._hash(arrays)
            self._hashed = stop
        return arrays

    @property
    def notes(self) -> list[str]:
        """What the rows read so far needed saying: casts, and NaN/Inf counts over every row."""
        counts = [f"input {name!r} holds {n} NaN/Inf value(s)" for name, n in self._nonfinite.items()]
        return [*self._casts, *counts]

    def fingerprint(self, chunk: int = 4096) -> str:
        """A SHA-256 over every selected sample (dtype, shape, bytes, in input order), read in chunks."""
        while self._hashed < self.n:
            self.rows(self._hashed, min(self._hashed + chunk, self.n))
        h = hashlib.sha256()
        for spec in self.specs:
            dtype, rest, hasher = self._hashers[spec.name]
            h.update(f"{dtype}|{(self.n, *rest)}|{hasher.hexdigest()}".encode())
        return "sha256:" + h.hexdigest()

    def _hash(self, arrays: dict[str, np.ndarray]) -> None:
        for name, a in arrays.items():
            entry = self._hashers.setdefault(name, (a.dtype.str, a.shape[1:], hashlib.sha256()))
            entry[2].update(np.ascontiguousarray(a).tobytes())


def fingerprint(arrays: dict[str, np.ndarray], specs: list[InputSpec]) -> str:
    """The fingerprint of arrays already in memory, the same as :meth:`InputSource.fingerprint`'s."""
    return InputSource(arrays, specs, "arrays").fingerprint()


def _spec(specs: list[InputSpec], name: str) -> InputSpec | None:
    return next((s for s in specs if s.name == name), None)


def _with_batch_axis(column: Any, spec: InputSpec | None) -> Any:
    """One sample given without its batch axis gets one (a memory map stays mapped)."""
    if spec is not None and spec.shape is not None and column.ndim == len(spec.shape) - 1:
        return column[None, ...] if isinstance(column, np.ndarray) else np.asarray(column[()])[None, ...]
    return column


def _window(samples: str | None) -> slice:
    if not samples:
        return slice(None)
    try:
        start, _, stop = samples.partition(":")
        return slice(int(start) if start else None, int(stop) if stop else None)
    except ValueError as exc:
        raise InputDataError(f"--samples {samples}: expected START:STOP, e.g. 0:16") from exc


def random_draw(loaded: LoadedModel, specs: tuple[InputSpec, ...] | list[InputSpec], data: DataOptions) -> RandomDraw:
    """How --random draws for this model: token ids for inputs that feed an Embedding, and sample
    shapes from the config where the model (a SavedModel signature) leaves dimensions unknown."""
    names = [s.name for s in specs]
    graph = loaded.artifact.graph
    if graph is None:
        return RandomDraw(data.random, data.seed, data.input_shape, {}, {})
    declared = graph.input_shapes
    shapes = (
        {n: tuple(s[1:]) for n, s in zip(names, declared) if s and None not in s[1:]}
        if len(declared) == len(names)
        else {}
    )
    return RandomDraw(data.random, data.seed, data.input_shape, graph.vocabularies_for(names), shapes)


def prepare_source(
    specs: list[InputSpec], inputs: Any, draw: RandomDraw | None = None, samples: str | None = None
) -> tuple[InputSource, str]:
    """The run's samples (``--samples`` applied) and where they came from. ``inputs`` is a file spec,
    an array, a dict of arrays by input name, or None to draw them as ``draw`` says."""
    names = [s.name for s in specs]
    lazy = None
    if isinstance(inputs, (str, Path)):
        label = f"--input {inputs}"
        lazy = lazy_columns(str(inputs), names)
        columns = lazy if lazy is not None else read_arrays(str(inputs), names)
    elif inputs is None:
        columns, label = random_arrays(specs, draw or RandomDraw())
    elif isinstance(inputs, dict):
        label = "arrays"
        columns = {k: np.asarray(v) for k, v in inputs.items()}
    else:
        label = "array"
        columns = {names[0]: np.asarray(inputs)}
    if set(columns) != set(names):
        columns = _rekey(columns, names, label)
    source = InputSource(columns, specs, label, samples)
    source.read_whole = isinstance(inputs, (str, Path)) and lazy is None
    return source, label


def prepare_inputs(
    specs: list[InputSpec],
    inputs: Any,
    draw: RandomDraw | None = None,
    samples: str | None = None,
    batch_size: int | None = None,
) -> tuple[dict[str, np.ndarray], str, list[str]]:
    """One batch: the first ``batch_size`` selected samples (all without it), checked against
    ``specs``: (arrays by input name, where they came from, notes)."""
    source, label = prepare_source(specs, inputs, draw, samples)
    arrays = source.rows(0, min(source.n, batch_size or source.n))
    return arrays, label, source.notes


def _rekey(arrays: dict[str, np.ndarray], names: list[str], source: str) -> dict[str, np.ndarray]:
    if len(arrays) == 1 and len(names) == 1:
        return {names[0]: next(iter(arrays.values()))}
    raise InputDataError(f"{source}: inputs {sorted(arrays)} do not match the model's inputs {names}")
