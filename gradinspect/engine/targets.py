"""The loss of a run and its targets: ``--target`` and ``--model-output NAME=FILE``, cut to the samples the
inputs use."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from gradinspect.artifacts import limits
from gradinspect.artifacts.loading import LoadedModel
from gradinspect.engine.losses import compiled_losses
from gradinspect.engine.objective import Objective, OutputChoice, build_objective
from gradinspect.engine.options import DataOptions
from gradinspect.engine.readers import lazy_columns, read_arrays
from gradinspect.engine.source import read_rows
from gradinspect.errors import GradinspectError, InputDataError


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
    target: Any, outputs: tuple[str, ...], names: list[str], samples: str | None, rows: int, used: int
) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """The outputs a loss is aimed at (``--model-output NAME[=FILE]``) and the target of each.

    ``--target`` is one array for one aimed output, or an ``.npz`` (a dict from Python) keyed by
    output name for several; ``NAME=FILE`` gives an output its own target file. Each target, after
    ``--samples``, has the ``rows`` samples the inputs have, and is cut to the first ``used``.
    """
    aimed = tuple(o.partition("=")[0] for o in outputs)
    cut: dict[str, Any] = {"samples": samples, "rows": rows, "used": used}
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


def _cut(target: Any, label: str, samples: str | None, rows: int, used: int) -> Any:
    """A target (a file spec is read lazily where its format allows: :class:`TargetRows`) selected by
    --samples like the inputs; it must then have as many samples as they do (a longer one is not
    cut silently), and is cut to the ``used`` samples the run reads."""
    if isinstance(target, (str, Path)):
        array = _read_target(str(target), label)
    else:
        array = np.asarray(target)
    array = select({"target": array}, samples, None)["target"]
    if array.shape[0] != rows:
        selected = f" (after --samples {samples})" if samples else ""
        raise InputDataError(
            f"{label}: has {array.shape[0]} samples{selected}, the input has {rows}; they must match "
            "(give both the same samples, or select the same ones of both with --samples START:STOP)"
        )
    return array[:used] if used < rows else array


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


def objective_for(loaded: LoadedModel, names: list[str], data: DataOptions, rows: int, used: int) -> Objective:
    """The loss of ``data.loss`` aimed at ``data.outputs`` (default: as the loss allows), its targets read,
    checked against the inputs' ``rows`` samples (after --samples) and cut to the ``used`` ones."""
    aimed, targets = output_targets(data.target, data.outputs, names, data.samples, rows, used)
    compiled = compiled_losses(loaded, names) if data.loss == "compiled" else None
    return build_objective(data.loss, names, OutputChoice(aimed), targets, compiled, data.regularizers)
