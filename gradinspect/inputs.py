"""Read user data (npy, npz, csv, json, HDF5) or draw seeded random data; check it against the model."""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradinspect import limits
from gradinspect.errors import InputDataError, ResourceLimitError
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
    """Arrays from ``spec`` (a path, or ``file.h5:dataset``), keyed by input name.

    Only regular files are read, and every array's size is known from its header before it is
    read: the total is bounded by :func:`limits.max_memory`.
    """
    path_str, _, dataset = (
        spec.partition(":") if spec.lower().split(":")[0].endswith((".h5", ".hdf5")) else (spec, "", "")
    )
    p = Path(path_str)
    if not p.exists():
        raise InputDataError(f"{_label(spec)}: no such file")
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".npz", ".csv", ".json", ".h5", ".hdf5"):
        raise InputDataError(f"{_label(spec)}: unsupported file type {suffix!r}; use .npy, .npz, .csv, .json or .h5")
    budget = limits.max_memory()
    fd = limits.open_regular(p, _label(spec))
    try:
        with os.fdopen(fd, "rb") as fh:
            if suffix == ".npy":
                return _keyed([_read_npy(fh, budget, spec)], names, spec)
            if suffix == ".npz":
                return _from_mapping(_read_npz(fh, budget, spec), names, spec)
            # Text is parsed into float64 (8 bytes for as little as 2 characters) or Python objects.
            size = os.fstat(fh.fileno()).st_size
            limits.ensure_within(size * (4 if suffix == ".csv" else 16), budget, f"{_label(spec)}: parsing the file")
            if suffix == ".csv":
                return _keyed([_read_csv(fh)], names, spec)
            if suffix == ".json":
                return _from_json(json.loads(fh.read()), names, spec)
            return _from_h5(fh, p, dataset, names, spec, budget)
    except (InputDataError, ResourceLimitError):
        raise
    except RecursionError:
        raise InputDataError(f"{_label(spec)}: the data is nested too deeply to be an array") from None
    except Exception as exc:  # numpy, zipfile, json and h5py raise many kinds on malformed files
        raise InputDataError(f"{_label(spec)}: cannot read the data ({type(exc).__name__}: {_short(exc)})") from exc


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _label(spec: str) -> str:
    return spec if spec.startswith("--") else f"--input {spec}"


def _npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise InputDataError(f"the .npy format version {version} is not supported; save with numpy.save")
    shape, fortran, dtype = readers[version](fh)
    if dtype.hasobject:
        raise InputDataError("the array holds Python objects (pickles), which are never loaded")
    return shape, fortran, dtype


def _read_npy(fh: Any, budget: int, spec: str) -> np.ndarray:
    start = fh.tell()
    shape, _, dtype = _npy_header(fh)
    limits.ensure_within(math.prod(shape) * dtype.itemsize, budget, f"{_label(spec)}: the array {shape}")
    fh.seek(start)
    return np.lib.format.read_array(fh, allow_pickle=False)


def _read_npz(fh: Any, budget: int, spec: str) -> dict[str, np.ndarray]:
    import zipfile

    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(fh) as zf:
        infos = [i for i in zf.infolist() if i.filename.endswith(".npy")]
        if len(infos) > limits.MAX_MEMBERS:
            raise InputDataError(f"{_label(spec)}: {len(infos):,} arrays; more than gradinspect reads")
        need = 0
        for info in infos:
            with zf.open(info) as member:
                shape, _, dtype = _npy_header(member)
            need += math.prod(shape) * dtype.itemsize
            limits.ensure_within(need, budget, f"{_label(spec)}: the arrays it declares")
        for info in infos:
            with zf.open(info) as member:
                out[info.filename[: -len(".npy")]] = np.lib.format.read_array(member, allow_pickle=False)
    return out


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


def _read_csv(fh: Any) -> np.ndarray:
    text = io.TextIOWrapper(fh, encoding="utf-8")
    first = text.readline()
    cells = [c.strip() for c in first.split(",")]
    skip = 0
    try:
        [float(c) for c in cells if c]
    except ValueError:
        skip = 1  # a header row
    text.seek(0)
    return np.loadtxt(text, delimiter=",", skiprows=skip, dtype=np.float64, ndmin=2)


def _from_json(obj: Any, names: list[str], spec: str) -> dict[str, np.ndarray]:
    if isinstance(obj, dict):
        return _from_mapping({k: np.asarray(v) for k, v in obj.items()}, names, spec)
    if isinstance(obj, list):
        return _keyed([np.asarray(obj)], names, spec)
    raise InputDataError(f"--input {spec}: JSON must be nested lists or an object keyed by input name")


def _from_h5(fh: Any, p: Path, dataset: str, names: list[str], spec: str, budget: int) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(fh, "r") as h5:
        if dataset:
            if not isinstance(h5.get(dataset), h5py.Dataset):
                raise InputDataError(f"{_label(spec)}: no dataset {dataset!r} in {p}")
            chosen = {dataset: h5[dataset]}
        else:
            found: dict[str, Any] = {}

            def collect(name: str, obj: Any) -> None:
                # visititems stops at the first non-None return value: return nothing.
                if isinstance(obj, h5py.Dataset):
                    found[name] = obj

            h5.visititems(collect)
            if not found:
                raise InputDataError(f"{_label(spec)}: the HDF5 file holds no dataset")
            if len(found) > 1 and len(names) == 1:
                raise InputDataError(
                    f"{_label(spec)}: the file holds {len(found)} datasets ({', '.join(sorted(found)[:5])}); "
                    f"name one as {p}:DATASET"
                )
            chosen = found
        need = sum(math.prod(d.shape or ()) * d.dtype.itemsize for d in chosen.values())
        limits.ensure_within(need, budget, f"{_label(spec)}: the datasets it declares")
        arrays = {k: d[()] for k, d in chosen.items()}
    if dataset:
        return _keyed([arrays[dataset]], names, spec)
    return _from_mapping(arrays, names, spec)


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
