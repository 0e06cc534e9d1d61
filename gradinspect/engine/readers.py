"""Read the user's data files (npy, npz, csv, json, HDF5) into arrays keyed by input name, within bounds."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from gradinspect.artifacts import limits
from gradinspect.errors import InputDataError, ResourceLimitError
from gradinspect.formatting import first_line


def data_file(spec: str | Path) -> tuple[Path, str]:
    """``file.h5:dataset`` -> (the file, the dataset name); any other spec is a path (``""``: no dataset)."""
    text = str(spec)
    head, _, dataset = text.partition(":")
    if head.lower().endswith((".h5", ".hdf5")):
        return Path(head), dataset
    return Path(text), ""


def read_arrays(spec: str, names: list[str]) -> dict[str, np.ndarray]:
    """Arrays from ``spec`` (a path, or ``file.h5:dataset``), keyed by input name.

    Only regular files are read, and every array's size is known from its header before it is
    read: the total is bounded by :func:`limits.max_memory`.
    """
    p, dataset = data_file(spec)
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
        raise InputDataError(
            f"{_label(spec)}: cannot read the data ({type(exc).__name__}: {first_line(exc, 200)})"
        ) from exc


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
        _refuse_foreign_storage(h5, spec)
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


def _refuse_foreign_storage(h5: Any, spec: str) -> None:
    _, foreign = limits.h5_declared(h5)
    if foreign is not None:
        raise InputDataError(f"{_label(spec)}: {foreign}; gradinspect reads only data stored in the input file itself")


class NpyRows:
    """A C-ordered ``.npy`` read a slice of rows at a time, with plain reads.

    Not a memory map: pages of a mapped file count in the process's resident memory (and in a
    container's memory limit) until the kernel drops them; plain reads keep only the batch.
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.ndim = len(shape)
        self._row = math.prod(shape[1:]) * dtype.itemsize

    def __getitem__(self, key: Any) -> np.ndarray:
        start, stop, step = key.indices(self.shape[0]) if isinstance(key, slice) else (0, self.shape[0], 1)
        if step != 1 or stop < start:
            raise IndexError("NpyRows reads contiguous rows only")
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * self._row)
            data = fh.read((stop - start) * self._row)
        rows = np.frombuffer(data, dtype=self.dtype).reshape((stop - start, *self.shape[1:]))
        return rows if isinstance(key, slice) else rows[key]


class H5Rows:
    """One HDF5 dataset read a slice at a time (the file is opened for each read)."""

    def __init__(self, path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.name, self.shape, self.dtype = path, name, shape, dtype
        self.ndim = len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as h5:
            return np.asarray(h5[self.name][key])


def lazy_columns(spec: str, names: list[str]) -> dict[str, Any] | None:
    """Inputs read on demand, by input name: a ``.npy`` memory-mapped, HDF5 datasets slice by slice.
    None for the formats that are read whole (npz, csv, json)."""
    p, dataset = data_file(spec)
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".h5", ".hdf5") or not p.exists():
        return None
    fd = limits.open_regular(p, _label(spec))
    try:
        with os.fdopen(fd, "rb") as fh:
            if suffix == ".npy":
                shape, fortran, dtype = _npy_header(fh)  # refuses pickled object arrays before any read
                declared, held = math.prod(shape) * dtype.itemsize, os.fstat(fh.fileno()).st_size - fh.tell()
                if declared > held:
                    raise ResourceLimitError(
                        f"{_label(spec)}: the array {shape}: {limits.human(declared)} needed, but the file holds "
                        f"only {limits.human(held)}; it is truncated or forged"
                    )
                if fortran or not shape:
                    return _lazy_keyed({"": np.load(p, mmap_mode="r", allow_pickle=False)}, names, spec)
                return _lazy_keyed({"": NpyRows(p, fh.tell(), shape, dtype)}, names, spec)
            return _lazy_keyed(_h5_columns(fh, p, dataset, len(names), spec), names, spec)
    except (InputDataError, ResourceLimitError):
        raise
    except Exception as exc:  # numpy and h5py raise many kinds on malformed files
        why = f"{type(exc).__name__}: {first_line(exc, 200)}"
        raise InputDataError(f"{_label(spec)}: cannot read the data ({why})") from exc


def _h5_columns(fh: Any, p: Path, dataset: str, wanted: int, spec: str) -> dict[str, H5Rows]:
    import h5py

    with h5py.File(fh, "r") as h5:
        _refuse_foreign_storage(h5, spec)
        found: dict[str, Any] = {}

        def collect(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                found[name] = obj

        if dataset:
            if not isinstance(h5.get(dataset), h5py.Dataset):
                raise InputDataError(f"{_label(spec)}: no dataset {dataset!r} in {p}")
            found = {dataset: h5[dataset]}
        else:
            h5.visititems(collect)
        if len(found) > 1 and wanted == 1:
            raise InputDataError(f"{_label(spec)}: the file holds {len(found)} datasets; name one as {p}:DATASET")
        for d in found.values():
            _refuse_fill_value_bomb(d, spec)
        return {name: H5Rows(p, name, tuple(d.shape), d.dtype) for name, d in found.items() if d.shape}


# Compression rarely beats this ratio; a dataset that "stores" gigabytes in kilobytes holds a
# fill value, not data. Reading one row of a chunked dataset decompresses its whole chunk, so a
# chunk larger than _MAX_CHUNK would take that much memory for a batch of any size.
_MAX_RATIO = 1000
_BOMB_FLOOR = 64 * 1024**2
_MAX_CHUNK = 64 * 1024**2


def _refuse_fill_value_bomb(dataset: Any, spec: str) -> None:
    declared = math.prod(dataset.shape or ()) * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if declared > _BOMB_FLOOR and stored * _MAX_RATIO < declared:
        raise ResourceLimitError(
            f"{_label(spec)}: the datasets it declares: {limits.human(declared)} needed, but the file stores "
            f"{limits.human(stored)} of data; refusing a fill-value dataset of that size"
        )
    chunk = math.prod(dataset.chunks) * dataset.dtype.itemsize if dataset.chunks else 0
    if chunk > _MAX_CHUNK:
        raise ResourceLimitError(
            f"{_label(spec)}: dataset {dataset.name!r} is stored in chunks of {limits.human(chunk)}, each read "
            f"whole for a batch; gradinspect reads chunks of at most {limits.human(_MAX_CHUNK)} (re-chunk it)"
        )


def _lazy_keyed(columns: dict[str, Any], names: list[str], spec: str) -> dict[str, Any]:
    if len(columns) == 1 and len(names) == 1:
        return {names[0]: next(iter(columns.values()))}
    if set(columns) != set(names):
        raise InputDataError(
            f"{_label(spec)}: keys do not match the model's inputs ({', '.join(sorted(columns))}); "
            f"expected {', '.join(names)}"
        )
    return columns
