"""Read user data (npy, npz, csv, json, HDF5) or draw seeded random data; check it against the model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradinspect.artifacts import limits
from gradinspect.engine.readers import lazy_columns, read_arrays, read_rows
from gradinspect.errors import GradinspectError, InputDataError
from gradinspect.formatting import shape as shape_text
from gradinspect.report import InputSpec

# Refuse --random requests that would need more than this, before allocating anything.
MAX_RANDOM_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class RandomDraw:
    """How ``--random`` draws samples: ``n`` of them from ``seed``; ``input_shape`` for unknown
    dimensions; ``ids`` gives, for inputs that feed an Embedding, the vocabulary size to draw token
    ids below; ``shapes`` per-input sample shapes known from the file (when the signature has none)."""

    n: int = 4
    seed: int = 0
    input_shape: tuple[int, ...] | None = None
    ids: Mapping[str, int] = field(default_factory=dict)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


def random_arrays(specs: list[InputSpec], draw: RandomDraw) -> tuple[dict[str, np.ndarray], str]:
    """Seeded samples for every input, and a description of what was drawn (for the header line).

    Floats are standard normal; inputs that feed an Embedding get integer ids in [0, vocabulary)
    (in the input's own dtype); other integers are in [0, 10); a fixed batch dimension is honoured.
    """
    if draw.n < 1:
        raise InputDataError(f"--random {draw.n}: need at least one sample")
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
    if draw.input_shape is not None:
        dims = list(draw.input_shape)
    elif any(d is None for d in dims) and spec.name in draw.shapes:
        dims = list(draw.shapes[spec.name])
    if any(d is None for d in dims):
        raise InputDataError(
            f"input {spec.name!r} has shape {shape_text(spec.shape, '(unknown)')} with unknown dimensions; "
            "give --input-shape (without the batch dimension, e.g. --input-shape 28,28,1)"
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


def select(arrays: dict[str, np.ndarray], samples: str | None, batch_size: int | None) -> dict[str, np.ndarray]:
    """Apply ``--samples START:STOP`` then ``--batch-size N`` (the first N of what is left)."""
    sl = slice(None)
    if samples:
        try:
            start_s, _, stop_s = samples.partition(":")
            sl = slice(int(start_s) if start_s else None, int(stop_s) if stop_s else None)
        except ValueError as exc:
            raise InputDataError(f"--samples {samples}: expected START:STOP, e.g. 0:16") from exc
    out = {k: v[sl] for k, v in arrays.items()}
    if batch_size is not None:
        if batch_size < 1:
            raise InputDataError(f"--batch-size {batch_size}: must be at least 1")
        out = {k: v[:batch_size] for k, v in out.items()}
    if any(v.shape[0] == 0 for v in out.values()):
        raise InputDataError(f"--samples {samples}: selects no samples")
    return out


def output_targets(
    target: Any, outputs: tuple[str, ...], names: list[str], samples: str | None, batch_size: int | None, batch: int
) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """The outputs a loss is aimed at (``--model-output NAME[=FILE]``) and the target of each.

    ``--target`` is one array for one aimed output, or an ``.npz`` (a dict from Python) keyed by
    output name for several; ``NAME=FILE`` gives an output its own target file.
    """
    aimed = tuple(o.partition("=")[0] for o in outputs)
    cut: dict[str, Any] = {"samples": samples, "batch_size": batch_size, "batch": batch}
    targets = {name: _cut(file, f"--model-output {name}={file}", **cut) for name, _, file in
               (o.partition("=") for o in outputs) if file}  # fmt: skip
    if target is None:
        return aimed, targets
    wanted = [n for n in (aimed or names) if n not in targets]
    if isinstance(target, dict):
        unknown = sorted(set(target) - set(names))
        if unknown:
            raise InputDataError(f"target: {', '.join(unknown)} are not outputs of the model ({', '.join(names)})")
        targets.update({k: _cut(v, f"target {k}", **cut) for k, v in target.items()})
    elif len(wanted) > 1 and str(target).lower().endswith(".npz"):
        arrays = read_arrays(str(target), wanted)
        targets.update({k: _cut(v, f"--target {target}:{k}", **cut) for k, v in arrays.items()})
    elif len(wanted) == 1:
        targets[wanted[0]] = _cut(target, f"--target {target}" if isinstance(target, (str, Path)) else "target", **cut)
    elif wanted:
        raise InputDataError(
            f"--target {target}: one array for {len(wanted)} outputs ({', '.join(wanted)}); give an .npz keyed by "
            "output name, or aim the loss with --model-output NAME"
        )
    return aimed, targets


def _cut(target: Any, label: str, samples: str | None, batch_size: int | None, batch: int) -> Any:
    """A target (a file spec is read lazily where its format allows: :class:`TargetRows`), cut by
    --samples/--batch-size like the inputs."""
    if isinstance(target, (str, Path)):
        array = _read_target(str(target), label)
    else:
        array = np.asarray(target)
    array = select({"target": array}, samples, batch_size)["target"]
    if array.shape[0] != batch:
        raise InputDataError(f"{label}: has {array.shape[0]} samples, the input has {batch}; they must match")
    return array


def _read_target(spec: str, label: str) -> Any:
    """A target file, lazily where its format allows; errors name the target's option, not --input."""
    try:
        lazy = lazy_columns(spec, ["target"])
        return TargetRows(lazy["target"], label) if lazy else read_arrays(spec, ["target"])["target"]
    except GradinspectError as exc:  # the readers speak of --input
        message, prefix = str(exc), f"--input {spec}"
        if not message.startswith(prefix):
            raise
        raise type(exc)(label + message[len(prefix) :]) from exc


class TargetRows:
    """A target file's rows (``.npy`` or an HDF5 dataset), read only when a batch needs them.

    Slicing gives another view without reading; ``np.asarray`` reads the view's rows (bounded by
    ``--max-memory``), so each batch's targets are read with its inputs, aligned by sample."""

    def __init__(self, column: Any, label: str, start: int = 0, n: int | None = None) -> None:
        self.column, self.label, self.start = column, label, start
        self.n = int(column.shape[0]) - start if n is None else n
        self.dtype = np.dtype(column.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, *(int(d) for d in self.column.shape[1:]))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: slice) -> TargetRows:
        start, stop, step = key.indices(self.n)
        if step != 1:
            raise TypeError("target rows are sliced contiguously")
        return TargetRows(self.column, self.label, self.start + start, max(0, stop - start))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        row = math.prod(self.shape[1:]) * self.dtype.itemsize
        limits.ensure_within(self.n * row, limits.max_memory(), f"{self.label}: one batch of targets")
        rows = read_rows(self.column, self.start, self.start + self.n, self.label)
        return rows if dtype is None else rows.astype(dtype)
