"""Read user data (npy, npz, csv, json, HDF5) or draw seeded random data; check it against the model."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradinspect.errors import InputDataError
from gradinspect.report import InputSpec

# Refuse --random requests that would need more than this, before allocating anything.
MAX_RANDOM_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Batch:
    """The arrays that go into the forward pass, keyed by input name, and where they came from."""

    arrays: dict[str, np.ndarray]
    source: str
    notes: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0]) if self.arrays else 0


def read_arrays(spec: str, names: list[str]) -> dict[str, np.ndarray]:
    """Arrays from ``spec`` (a path, or ``file.h5:dataset``), keyed by input name."""
    path_str, _, dataset = (
        spec.partition(":") if spec.lower().split(":")[0].endswith((".h5", ".hdf5")) else (spec, "", "")
    )
    p = Path(path_str)
    if not p.is_file():
        raise InputDataError(f"--input {spec}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return _keyed([np.load(p, allow_pickle=False)], names, spec)
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
            return _from_mapping(data, names, spec)
        if suffix == ".csv":
            return _keyed([_read_csv(p)], names, spec)
        if suffix == ".json":
            return _from_json(json.loads(p.read_text()), names, spec)
        if suffix in (".h5", ".hdf5"):
            return _from_h5(p, dataset, names, spec)
    except InputDataError:
        raise
    except Exception as exc:  # numpy, zipfile, json and h5py raise many kinds on malformed files
        raise InputDataError(f"--input {spec}: cannot read the data ({type(exc).__name__}: {_short(exc)})") from exc
    raise InputDataError(f"--input {spec}: unsupported file type {suffix!r}; use .npy, .npz, .csv, .json or .h5")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _keyed(arrays: list[np.ndarray], names: list[str], spec: str) -> dict[str, np.ndarray]:
    if len(names) != 1:
        raise InputDataError(
            f"--input {spec}: the model has {len(names)} inputs ({', '.join(names)}); "
            "give an .npz, .json object or HDF5 file with one array per input name"
        )
    return {names[0]: np.asarray(arrays[0])}


def _from_mapping(data: dict[str, Any], names: list[str], spec: str) -> dict[str, np.ndarray]:
    if len(names) == 1 and len(data) == 1:
        return {names[0]: np.asarray(next(iter(data.values())))}
    missing = [n for n in names if n not in data]
    extra = [k for k in data if k not in names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(extra)}")
        raise InputDataError(
            f"--input {spec}: keys do not match the model's inputs ({'; '.join(parts)}); expected {', '.join(names)}"
        )
    return {n: np.asarray(data[n]) for n in names}


def _read_csv(p: Path) -> np.ndarray:
    with open(p) as fh:
        first = fh.readline()
    cells = [c.strip() for c in first.split(",")]
    skip = 0
    try:
        [float(c) for c in cells if c]
    except ValueError:
        skip = 1  # a header row
    data = np.loadtxt(p, delimiter=",", skiprows=skip, dtype=np.float64, ndmin=2)
    return data


def _from_json(obj: Any, names: list[str], spec: str) -> dict[str, np.ndarray]:
    if isinstance(obj, dict):
        return _from_mapping({k: np.asarray(v) for k, v in obj.items()}, names, spec)
    if isinstance(obj, list):
        return _keyed([np.asarray(obj)], names, spec)
    raise InputDataError(f"--input {spec}: JSON must be nested lists or an object keyed by input name")


def _from_h5(p: Path, dataset: str, names: list[str], spec: str) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(p, "r") as h5:
        if dataset:
            if dataset not in h5:
                raise InputDataError(f"--input {spec}: no dataset {dataset!r} in {p}")
            return _keyed([h5[dataset][()]], names, spec)
        found: dict[str, Any] = {}
        h5.visititems(lambda n, o: found.setdefault(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    if not found:
        raise InputDataError(f"--input {spec}: the HDF5 file holds no dataset")
    if len(found) == 1 or len(names) > 1:
        return _from_mapping(found, names, spec)
    raise InputDataError(f"--input {spec}: the file holds {len(found)} datasets; name one as {p}:DATASET")


def random_arrays(
    specs: list[InputSpec], n: int, seed: int, override: tuple[int, ...] | None = None
) -> dict[str, np.ndarray]:
    """``n`` samples per input from a seeded generator: standard normal floats, integers in [0, 10)."""
    if n < 1:
        raise InputDataError(f"--random {n}: need at least one sample")
    rng = np.random.default_rng(seed)
    shapes = {}
    total = 0
    for spec in specs:
        dims: list = list(spec.shape[1:]) if spec.shape else [None]
        if override is not None:
            dims = list(override)
        if any(d is None for d in dims):
            raise InputDataError(
                f"input {spec.name!r} has shape {_fmt(spec.shape)} with unknown dimensions; "
                "give --input-shape (without the batch dimension, e.g. --input-shape 28,28,1)"
            )
        # A signature with a fixed first dimension (e.g. half_plus_two's x: (1,)) takes exactly that many.
        batch = spec.shape[0] if spec.shape and spec.shape[0] is not None else n
        shapes[spec.name] = (batch, *dims)
        itemsize = np.dtype(_np_dtype(spec.dtype)).itemsize
        total += math.prod(shapes[spec.name]) * itemsize
    if total > MAX_RANDOM_BYTES:
        raise InputDataError(
            f"--random {n}: would allocate {total / 1024**3:.1f} GiB of input data "
            f"(limit {MAX_RANDOM_BYTES / 1024**3:.0f} GiB); ask for fewer samples"
        )
    out = {}
    for spec in specs:
        dt = _np_dtype(spec.dtype)
        if np.dtype(dt).kind in "iu":
            out[spec.name] = rng.integers(0, 10, shapes[spec.name]).astype(dt)
        elif np.dtype(dt).kind == "b":
            out[spec.name] = rng.integers(0, 2, shapes[spec.name]).astype(bool)
        else:
            out[spec.name] = rng.standard_normal(shapes[spec.name]).astype(dt)
    return out


def _np_dtype(dtype: str | None) -> str:
    if not dtype or dtype in ("string", "object"):
        return "float32"
    return dtype


def _fmt(shape: Any) -> str:
    if shape is None:
        return "(unknown)"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


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
                        f"{source}: input {spec.name!r} expects shape {_fmt(expected)}, received {_fmt(a.shape)}"
                    )
                a = a.reshape((a.shape[0], *expected[1:]))
        if a.shape[0] == 0:
            raise InputDataError(f"{source}: input {spec.name!r} is empty (batch of 0 samples)")
        if expected and expected[0] is not None and a.shape[0] != expected[0]:
            raise InputDataError(
                f"{source}: input {spec.name!r} expects shape {_fmt(expected)} (a fixed first dimension), "
                f"received {_fmt(a.shape)}"
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


def _fits(have: tuple, want: tuple) -> bool:
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


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """A SHA-256 over the input names, dtypes, shapes and bytes: which data a result came from."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()
