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


def destination(path: str | Path, option: str, reads: Iterable[Path] = (), force: bool = True) -> Destination:
    """Check ``path`` as an output of ``option`` before any work is done; raise OutputError."""
    p = Path(path)
    target = Path(os.path.realpath(p))
    parent = target.parent
    if not parent.is_dir():
        raise OutputError(f"{option} {p}: the directory {str(p.parent)!r} does not exist; create it first")
    if target.is_dir():
        raise OutputError(f"{option} {p}: is a directory; give a file name")
    for read in reads:
        if _same(target, read):
            raise OutputError(
                f"{option} {p}: is {read}, a file this run reads; gradinspect never overwrites its inputs, "
                "give another output path"
            )
    if not force and target.exists():
        raise OutputError(f"{option} {p}: the file exists; pass --force to overwrite it")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{option} {p}: cannot write in {str(parent)!r} (permission denied)")
    return Destination(p, target, option)


def ensure_distinct(destinations: Iterable[Destination | None]) -> None:
    """Refuse two outputs of one run that resolve to the same file (one would silently replace the other)."""
    seen: dict[Path, Destination] = {}
    for dest in destinations:
        if dest is None:
            continue
        other = seen.get(dest.target)
        if other is not None:
            raise OutputError(
                f"{dest.option} {dest.path}: is also the file of {other.option} {other.path}; "
                "give each output its own path"
            )
        seen[dest.target] = dest


def _same(target: Path, read: Path) -> bool:
    real = Path(os.path.realpath(read))
    if real.is_dir():
        return target == real or real in target.parents
    if target == real:
        return True
    with contextlib.suppress(OSError):
        return target.exists() and os.path.samefile(target, real)
    return False


def write_all(items: Iterable[tuple[Destination, str | bytes | StagedH5]]) -> None:
    """Write every ``(destination, data)``: all staged first, then renamed; on any failure none is."""
    staged: list[tuple[str, Destination]] = []
    try:
        for dest, data in items:
            staged.append((data.finish() if isinstance(data, StagedH5) else _stage(dest, data), dest))
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


def _temp_beside(dest: Destination) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(dir=dest.target.parent, prefix=f".{dest.target.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(
            f"{dest.option} {dest.path}: cannot write in {str(dest.target.parent)!r} ({exc.strerror or exc})"
        ) from exc


def _mode_for(dest: Destination) -> int:
    try:
        return os.stat(dest.target).st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _stage(dest: Destination, data: str | bytes) -> str:
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = _temp_beside(dest)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _mode_for(dest))
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


class StagedH5:
    """An HDF5 file (``--save-h5``) filled batch by batch in a temporary file beside its destination.

    Call it with ``(arrays by key, first row, total rows)`` for each batch: each key becomes a
    dataset of ``total rows`` samples. :func:`write_all` renames it into place with the run's other
    outputs; :meth:`discard` (on any failure) removes it, so no partial file is left under the final name.
    """

    def __init__(self, dest: Destination) -> None:
        self.dest = dest
        fd, self.tmp = _temp_beside(dest)
        os.close(fd)
        self._file: Any = None

    def __call__(self, arrays: dict[str, Any], start: int, total: int) -> None:
        import h5py

        try:
            if self._file is None:
                self._file = h5py.File(self.tmp, "w")
            for key, rows in arrays.items():
                if key not in self._file:
                    self._file.create_dataset(key, shape=(total, *rows.shape[1:]), dtype=rows.dtype, chunks=True)
                self._file[key][start : start + len(rows)] = rows
        except OSError as exc:
            raise OutputError(f"{self.dest.option} {self.dest.path}: cannot write the file ({exc})") from exc

    def close(self) -> None:
        """Close the file (it stays staged): the writer's side, when another process renames it."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self) -> str:
        """Close the file and return its temporary path, ready to be renamed."""
        import h5py

        if self._file is None and os.path.getsize(self.tmp) == 0:
            # No output gradient at all (or none written yet by this process): an empty, valid HDF5 file.
            self._file = h5py.File(self.tmp, "w")
        self.close()
        os.chmod(self.tmp, _mode_for(self.dest))
        return self.tmp

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)
