"""Write results: every destination checked before any work, then all files at once or none.

A destination is refused when it resolves to a file the run reads (the model, any file inside a
SavedModel directory, ``--input``, ``--target``, ``--baseline``, ``--custom-objects``), when its
directory does not exist, or when it is a directory. Symbolic links are followed: the file the
link points to is replaced and the link stays. Each file is written to a temporary file beside
its destination and renamed over it only after every output of the run was written, so an
interrupted or failed run changes nothing. A replaced file keeps its permission bits; a new one
gets those the umask allows.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradinspect.errors import OutputError


@dataclass(frozen=True)
class Destination:
    """A checked output path: ``target`` is where the bytes go (a link resolved), ``option`` names it."""

    path: Path
    target: Path
    option: str


def input_paths(*specs: str | Path | None) -> list[Path]:
    """The files a run reads, from option values (``data.h5:dataset`` names ``data.h5``)."""
    out = []
    for spec in specs:
        if spec is None:
            continue
        text = str(spec)
        head = text.split(":")[0]
        out.append(Path(head if head.lower().endswith((".h5", ".hdf5")) else text))
    return out


def destination(path: str | Path, option: str, reads: Iterable[Path] = (), force: bool = True) -> Destination:
    """Check ``path`` as an output of ``option`` before any work is done; raise OutputError."""
    p = Path(path)
    target = Path(os.path.realpath(p))
    parent = target.parent
    if not parent.is_dir():
        raise OutputError(f"{option} {p}: the directory {str(p.parent)!r} does not exist; create it first")
    if target.is_dir():
        raise OutputError(f"{option} {p}: is a directory; give a file name")
    if not force and target.exists():
        raise OutputError(f"{option} {p}: the file exists; pass --force to overwrite it")
    for read in reads:
        if _same(target, read):
            raise OutputError(
                f"{option} {p}: is {read}, a file this run reads; gradinspect never overwrites its inputs, "
                "give another output path"
            )
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{option} {p}: cannot write in {str(parent)!r} (permission denied)")
    return Destination(p, target, option)


def _same(target: Path, read: Path) -> bool:
    real = Path(os.path.realpath(read))
    if real.is_dir():
        return target == real or real in target.parents
    if target == real:
        return True
    with contextlib.suppress(OSError):
        return target.exists() and os.path.samefile(target, real)
    return False


def write_all(items: Iterable[tuple[Destination, str | bytes]]) -> None:
    """Write every ``(destination, data)``: all staged first, then renamed; on any failure none is."""
    staged: list[tuple[str, Destination]] = []
    try:
        for dest, data in items:
            staged.append((_stage(dest, data), dest))
        for tmp, dest in staged:
            os.replace(tmp, dest.target)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def atomic_write(path: str | Path, data: str | bytes, option: str = "--output") -> None:
    """Write one file atomically (checked as :func:`destination` with no inputs)."""
    write_all([(destination(path, option), data)])


def _stage(dest: Destination, data: str | bytes) -> str:
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=dest.target.parent, prefix=f".{dest.target.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(
            f"{dest.option} {dest.path}: cannot write in {str(dest.target.parent)!r} ({exc.strerror or exc})"
        ) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            mode = os.stat(dest.target).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"{dest.option} {dest.path}: cannot write the file ({exc.strerror or exc})") from exc
        raise
    return tmp


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    """``arrays`` as the bytes of an ``.npz`` file (``--save-npz``), built in memory for :func:`write_all`."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
