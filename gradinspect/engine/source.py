"""The samples of one run: read from the user's data (npy, npz, csv, json, HDF5) or drawn at random
(seeded), a slice at a time: a memory-mapped ``.npy`` or an HDF5 dataset is never read whole, and
every slice is checked against the model's inputs (shapes, dtypes, safe casts) as it is read."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradinspect.artifacts import limits
from gradinspect.artifacts.loading import LoadedModel
from gradinspect.engine.options import DataOptions, InputShape
from gradinspect.engine.readers import lazy_columns, read_arrays
from gradinspect.errors import InputDataError
from gradinspect.formatting import first_line
from gradinspect.formatting import shape as shape_text
from gradinspect.report import InputSpec

_NONFINITE = re.compile(r"^input '(.+)' holds (\d+) NaN/Inf value\(s\)$")


# Refuse --random requests that would need more than this, before allocating anything.
MAX_RANDOM_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class RandomDraw:
    """How ``--random`` draws samples: ``n`` of them from ``seed``; ``input_shape`` for unknown
    dimensions; ``ids`` gives, for inputs that feed an Embedding, the vocabulary size to draw token
    ids below; ``shapes`` per-input sample shapes known from the file (when the signature has none)."""

    n: int = 4
    seed: int = 0
    input_shape: InputShape = None
    ids: Mapping[str, int] = field(default_factory=dict)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


def random_arrays(specs: list[InputSpec], draw: RandomDraw) -> tuple[dict[str, np.ndarray], str]:
    """Seeded samples for every input, and a description of what was drawn (for the header line).

    Floats are standard normal; inputs that feed an Embedding get integer ids in [0, vocabulary)
    (in the input's own dtype); other integers are in [0, 10); a fixed batch dimension is honoured.
    """
    if draw.n < 1:
        raise InputDataError(f"--random {draw.n}: need at least one sample")
    if isinstance(draw.input_shape, Mapping):
        unknown = sorted(set(draw.input_shape) - {s.name for s in specs} - {"*"})
        if unknown:
            raise InputDataError(
                f"--input-shape {unknown[0]}=...: the model has no input {unknown[0]!r}; its inputs are "
                + ", ".join(s.name for s in specs)
            )
    rng = np.random.default_rng(draw.seed)
    shapes = {spec.name: _draw_shape(spec, draw) for spec in specs}
    total = sum(math.prod(shapes[s.name]) * np.dtype(_np_dtype(s.dtype)).itemsize for s in specs)
    if total > MAX_RANDOM_BYTES:
        raise InputDataError(
            f"--random {draw.n}: would allocate {total / 1024**3:.1f} GiB of input data "
            f"(limit {MAX_RANDOM_BYTES / 1024**3:.0f} GiB); ask for fewer samples"
        )
    out, said = {}, [f"seed {draw.seed}"]
    for spec in specs:
        dt, shape = _np_dtype(spec.dtype), shapes[spec.name]
        if spec.name in draw.ids:
            out[spec.name] = rng.integers(0, draw.ids[spec.name], shape).astype(dt)
            said.append(f"token ids in [0, {draw.ids[spec.name]}) for {spec.name!r}")
        elif np.dtype(dt).kind in "iu":
            out[spec.name] = rng.integers(0, 10, shape).astype(dt)
        elif np.dtype(dt).kind == "b":
            out[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            out[spec.name] = rng.standard_normal(shape).astype(dt)
        if shape[0] != draw.n:
            said.append(f"batch {shape[0]} fixed by {spec.name!r}")
    return out, f"--random {draw.n} ({'; '.join(said)})"


def _draw_shape(spec: InputSpec, draw: RandomDraw) -> tuple[int, ...]:
    dims: list[Any] = list(spec.shape[1:]) if spec.shape else [None]
    given = draw.input_shape
    if isinstance(given, Mapping):
        given = given.get(spec.name, given.get("*"))
    if given is not None:
        dims = list(given)
    elif any(d is None for d in dims) and spec.name in draw.shapes:
        dims = list(draw.shapes[spec.name])
    if any(d is None for d in dims):
        raise InputDataError(
            f"input {spec.name!r} has shape {shape_text(spec.shape, '(unknown)')} with unknown dimensions; "
            f"give --input-shape (without the batch dimension, e.g. --input-shape 28,28,1, or --input-shape "
            f"{spec.name}=28,28,1 for this input alone)"
        )
    # A fixed first dimension (half_plus_two's x: (1,), a model saved with batch_shape [8, 50]) is kept.
    batch = spec.shape[0] if spec.shape and spec.shape[0] is not None else draw.n
    return (batch, *dims)


def _np_dtype(dtype: str | None) -> str:
    if not dtype or dtype in ("string", "object"):
        return "float32"
    return dtype


def check_arrays(
    arrays: dict[str, np.ndarray], specs: list[InputSpec], source: str
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Check shapes and dtypes against the model; cast where it is safe. Returns (arrays, notes)."""
    notes: list[str] = []
    out = {}
    batch = None
    for spec in specs:
        a = np.asarray(arrays[spec.name])
        if a.dtype.kind in "OSUV":
            what = "strings" if a.dtype.kind in "SU" else "non-numeric data"
            raise InputDataError(f"{source}: input {spec.name!r} holds {what}; numbers are needed")
        want = _np_dtype(spec.dtype)
        expected = spec.shape
        if expected is not None and a.ndim == len(expected) - 1 and a.size and _fits(a.shape, expected[1:]):
            a = a[None, ...]  # one sample without its batch dimension
        if expected is not None:
            if a.ndim != len(expected) or not _fits(a.shape[1:], expected[1:]):
                # A CSV row of flattened features still fits when the sizes agree.
                flat_ok = (
                    a.ndim == 2 and all(d is not None for d in expected[1:]) and a.shape[1] == math.prod(expected[1:])
                )
                if not flat_ok:
                    raise InputDataError(
                        f"{source}: input {spec.name!r} expects shape {shape_text(expected)}, "
                        f"received {shape_text(a.shape)}"
                    )
                a = a.reshape((a.shape[0], *expected[1:]))
        if a.shape[0] == 0:
            raise InputDataError(f"{source}: input {spec.name!r} is empty (batch of 0 samples)")
        if expected and expected[0] is not None and a.shape[0] != expected[0]:
            raise InputDataError(
                f"{source}: input {spec.name!r} expects shape {shape_text(expected)} (a fixed first dimension), "
                f"received {shape_text(a.shape)}"
            )
        if batch is not None and a.shape[0] != batch:
            raise InputDataError(f"{source}: inputs have different batch sizes ({batch} and {a.shape[0]})")
        batch = a.shape[0]
        kind_have, kind_want = a.dtype.kind, np.dtype(want).kind
        if kind_want in "iu" and kind_have == "f":
            if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                raise InputDataError(
                    f"{source}: input {spec.name!r} must hold integers ({want}); received fractional values"
                )
        if a.dtype != np.dtype(want):
            if kind_have in "iub" and kind_want == "f":
                notes.append(f"input {spec.name!r}: {a.dtype} values cast to {want}")
            a = a.astype(want)
        if kind_want == "f":
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            if bad:
                notes.append(f"input {spec.name!r} holds {bad} NaN/Inf value(s)")
        out[spec.name] = a
    return out, notes


def _fits(have: tuple[Any, ...], want: tuple[Any, ...]) -> bool:
    return len(have) == len(want) and all(w is None or h == w for h, w in zip(have, want))


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
    ids = {n: v for n, v in graph.vocabularies.items() if n in names}
    if "" in graph.vocabularies and len(names) == 1:  # a Sequential's one input
        ids = {names[0]: graph.vocabularies[""]}
    return RandomDraw(data.random, data.seed, data.input_shape, ids, shapes)


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


def _rekey(arrays: dict[str, np.ndarray], names: list[str], source: str) -> dict[str, np.ndarray]:
    if len(arrays) == 1 and len(names) == 1:
        return {names[0]: next(iter(arrays.values()))}
    raise InputDataError(f"{source}: inputs {sorted(arrays)} do not match the model's inputs {names}")


def read_rows(column: Any, start: int, stop: int, label: str) -> np.ndarray:
    """Rows ``start:stop`` of a lazily read column; a file cut short or changed under us is one InputDataError."""
    try:
        return np.asarray(column[start:stop])
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        why = f"{type(exc).__name__}: {first_line(exc, 200)}"
        raise InputDataError(f"{label}: cannot read samples {start}:{stop} ({why})") from exc
