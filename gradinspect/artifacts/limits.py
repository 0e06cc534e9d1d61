"""Resource bounds: what a file may make gradinspect read, allocate or copy, checked before it happens.

One limit, ``--max-memory`` (default: half of physical memory), bounds the bytes a model's
declared parameters, its weight datasets, an archive's members and the user's input arrays may
take. Sizes are known before reading: zip members and SavedModel files from the directory,
arrays from their headers, parameters from the config. Only regular files are opened, without
blocking, so a FIFO or a device (``/dev/zero``) is refused instead of hanging or reading forever.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gradinspect.errors import ResourceLimitError, UnreadableFileError, UsageProblem

# Fixed bounds for files that are never large in a healthy artifact.
MAX_JSON_MEMBER = 64 * 1024**2  # config.json, model_config, keras_metadata.pb
MAX_SMALL_MEMBER = 1024**2  # metadata.json
MAX_MEMBERS = 10_000  # zip members or SavedModel files
MAX_TEXT_FILE = 64 * 1024**2  # --baseline, --custom-objects
# A SavedModel graph: library functions, nodes stored, and nodes once every call is inlined (a
# chain of functions each calling the next twice is small on disk and exponential inlined).
MAX_FUNCTIONS = 20_000
MAX_GRAPH_NODES = 2_000_000
MAX_CALL_DEPTH = 32

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def physical_memory() -> int:
    """Bytes of physical memory (8 GiB when the system does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def default_max_memory() -> int:
    """Half of physical memory: room for the model, its gradients and TensorFlow itself."""
    return physical_memory() // 2


_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("gradinspect_max_memory", default=None)


def max_memory() -> int:
    """The limit in force: the innermost :func:`memory_limit`, else :func:`default_max_memory`."""
    value = _LIMIT.get()
    return value if value is not None else default_max_memory()


@contextlib.contextmanager
def memory_limit(n_bytes: int | None) -> Iterator[None]:
    """Run a block with ``--max-memory`` set to ``n_bytes`` (None: the default)."""
    token = _LIMIT.set(n_bytes)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def parse_size(text: str) -> int:
    """``"8G"``, ``"512M"``, ``"1.5g"``, ``"1000000"`` as bytes (binary units); raise UsageProblem."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise UsageProblem(f"--max-memory {text}: expected a size such as 8G, 512M or 1000000 (bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def human(n: float) -> str:
    """Bytes for people: ``6.0 GiB`` (a count past float range, from a forged file, stays exact)."""
    if n >= 1024**6:
        return f"more than {1024**2:,} TiB"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def ensure_within(need: int, limit: int, what: str) -> None:
    """Raise ResourceLimitError when ``need`` bytes exceed ``limit``; ``what`` says who asks."""
    if need > limit:
        raise ResourceLimitError(
            f"{what}: {human(need)} needed, more than the limit of {human(limit)}; "
            "pass --max-memory SIZE to raise the limit if you trust the file"
        )


def ensure_graph_size(functions: int, nodes: int, what: object) -> None:
    """Refuse a SavedModel graph with more library functions or nodes than any real model has."""
    if functions > MAX_FUNCTIONS or nodes > MAX_GRAPH_NODES:
        raise ResourceLimitError(
            f"{what}: the graph holds {functions:,} functions and {nodes:,} nodes, more than the "
            f"{MAX_FUNCTIONS:,} functions and {MAX_GRAPH_NODES:,} nodes gradinspect reads; re-export the model"
        )


def open_regular(path: str | Path, what: str) -> int:
    """Open ``path`` for reading as a file descriptor, refusing anything but a regular file.

    O_NONBLOCK keeps a FIFO from hanging the open; the check is made on the opened descriptor,
    so a file swapped for a FIFO or device after an earlier look is refused too.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UnreadableFileError(f"{what}: no such file") from None
    except OSError as exc:
        raise UnreadableFileError(f"{what}: cannot open the file ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise UnreadableFileError(f"{what}: {kind}; give a regular file")
    os.set_blocking(fd, True)
    return fd


def read_regular(path: str | Path, limit: int, what: str) -> bytes:
    """The whole content of the regular file ``path``, refused when larger than ``limit`` bytes."""
    fd = open_regular(path, what)
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise ResourceLimitError(f"{what}: the file is {human(size)}, more than the {human(limit)} allowed")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ResourceLimitError(f"{what}: the file grew past the {human(limit)} allowed while being read")
    return data


def h5_declared(group: Any) -> tuple[int, str | None]:
    """What an open h5py group declares, from its links and dataset headers in one walk of each
    (nothing is followed or read): the bytes of all its datasets (an HDF5 dataset can declare
    terabytes in a few bytes), and what would make h5py open another file (None: nothing): an
    external link, a dataset kept in external raw files, or a virtual dataset (made of other files)."""
    import h5py

    found: list[str] = []
    total = 0

    def link(name: str, obj: Any) -> bool | None:
        if isinstance(obj, h5py.ExternalLink):
            found.append(f"{name!r} is an external link to the file {obj.filename[:200]!r}")
            return True  # stops the walk
        return None

    def dataset(name: str, obj: Any) -> None:
        nonlocal total
        if not isinstance(obj, h5py.Dataset):
            return
        total += _size(obj.shape) * obj.dtype.itemsize
        if not found and (obj.is_virtual or obj.external):
            kind = "a virtual dataset (made of other files)" if obj.is_virtual else "stored in external raw files"
            found.append(f"dataset {name!r} is {kind}")

    group.visititems_links(link)
    group.visititems(dataset)
    return total, (found[0] if found else None)


def _size(shape: Any) -> int:
    return math.prod(int(d) for d in shape) if shape else 1
