"""A private, read-only copy of a model artifact: the bytes that are scanned are the bytes that are loaded.

Loaders run seconds after the scan (TensorFlow takes that long to import); a file swapped in
between would load unscanned. So the artifact is copied once, from descriptors opened on
regular files only, into a fresh 0700 temporary directory, and everything afterwards (reading
the config, the scan, the loaders) reads the copy. A ``.keras`` archive is rewritten with only
the members Keras reads, each bounded by its declared size, so Keras never extracts more than
was checked. The directory is removed when the snapshot is garbage collected or at exit.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradinspect.artifacts import limits
from gradinspect.errors import ModelFileError

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# The members Keras 3 reads from a .keras archive; anything else is left behind.
_KERAS_MEMBERS = ("config.json", "metadata.json", "model.weights.h5", "model.weights.npz")
# fingerprint.pb is only an identity check; a corrupt one makes TensorFlow print a traceback.
_SKIPPED_SAVEDMODEL_FILES = frozenset({"fingerprint.pb"})
# A SavedModel loads without its assets (only ops that read files would open them, and those are
# not on the allow-list), so they are not copied: a 4 GiB asset costs nothing.
_SKIPPED_SAVEDMODEL_DIRS = frozenset({"assets", "assets.extra"})
# Keras 3 reads a .keras archive's assets/ only for these layers (their vocabularies).
_ASSET_LAYERS = (b'"StringLookup"', b'"IntegerLookup"', b'"TextVectorization"', b'"IndexLookup"')
# Weights compress little; a member that claims far more bytes than it stores is a zip bomb.
_MAX_RATIO = 200
_RATIO_FLOOR = 1024**2


@dataclass(frozen=True)
class Snapshot:
    """``local`` is the private copy of the artifact; ``workspace`` keeps its directory alive."""

    local: Path
    workspace: Any = field(repr=False, compare=False)


def snapshot(path: Path, max_bytes: int) -> Snapshot:
    """Copy the file or SavedModel directory at ``path`` into a private temporary directory."""
    workspace = tempfile.TemporaryDirectory(prefix="gradinspect-")
    local = Path(workspace.name) / (path.name or "model")
    try:
        if path.is_dir():
            # A link the user named is their choice; links inside a SavedModel are refused.
            _copy_tree(path.resolve(), local, max_bytes)
        else:
            local = _copy_file(path, local, max_bytes)
    except BaseException:
        workspace.cleanup()
        raise
    return Snapshot(local, workspace)


def _copy_file(src: Path, dst: Path, max_bytes: int) -> Path:
    """Copy ``src``; the copy is named by what its bytes are (a zip is ``.keras``, HDF5 ``.h5``),
    since the loaders go by the name. Returns the copy's path."""
    fd = limits.open_regular(src, str(src))
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        limits.ensure_within(size, max_bytes, f"{src}: the file")
        head = fh.read(8)
        fh.seek(0)
        if head.startswith(_ZIP_MAGIC):
            dst = dst.with_suffix(".keras")
            _rewrite_keras(fh, src, dst, max_bytes)
        else:
            dst = dst.with_suffix(".h5") if head.startswith(_HDF5_MAGIC) else dst
            _copy_stream(fh, dst, max_bytes, src)
    return dst


def _copy_stream(fh: Any, dst: Path, max_bytes: int, src: Path) -> None:
    copied = 0
    with open(dst, "xb") as out:
        while chunk := fh.read(1 << 20):
            copied += len(chunk)
            limits.ensure_within(copied, max_bytes, f"{src}: the file")
            out.write(chunk)
    os.chmod(dst, stat.S_IRUSR)


def _rewrite_keras(fh: Any, src: Path, dst: Path, max_bytes: int) -> None:
    try:
        with zipfile.ZipFile(fh) as zin:
            infos = zin.infolist()
            if len(infos) > limits.MAX_MEMBERS:
                raise ModelFileError(f"{src}: the archive has {len(infos):,} members; a .keras file has a handful")
            _refuse_duplicate_members(infos, src)
            keep = [i for i in infos if i.filename in _KERAS_MEMBERS]
            assets = [i for i in infos if i.filename.startswith("assets/")] if _needs_assets(zin, keep, src) else []
            keep += assets
            for info in keep:
                _check_member(info, src)
            limits.ensure_within(sum(i.file_size for i in keep), max_bytes, f"{src}: the unpacked archive")
            with zipfile.ZipFile(dst, "x", compression=zipfile.ZIP_STORED) as zout:
                for info in keep:
                    if info.is_dir():
                        continue
                    with zin.open(info) as member, zout.open(info.filename, "w", force_zip64=True) as out:
                        shutil.copyfileobj(member, out, 1 << 20)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise ModelFileError(
            f"{src}: the .keras archive is truncated or corrupt ({exc}); re-save or re-download it"
        ) from exc
    except (NotImplementedError, RuntimeError) as exc:
        # An unknown compression method or an encrypted member.
        raise ModelFileError(f"{src}: the .keras archive cannot be read ({exc}); re-save it with Keras") from exc
    os.chmod(dst, stat.S_IRUSR)


def _check_member(info: zipfile.ZipInfo, src: Path) -> None:
    """Bounds read from the archive's directory, before a byte of the member is written."""
    if info.filename == "metadata.json":
        limits.ensure_within(info.file_size, limits.MAX_SMALL_MEMBER, f"{src}: metadata.json")
    if info.filename == "config.json":
        limits.ensure_within(info.file_size, limits.MAX_JSON_MEMBER, f"{src}: config.json")
    if info.file_size > _RATIO_FLOOR and info.file_size > _MAX_RATIO * max(info.compress_size, 1):
        raise ModelFileError(
            f"{src}: the member {info.filename!r} claims {limits.human(info.file_size)} from "
            f"{limits.human(info.compress_size)} compressed (more than {_MAX_RATIO}:1, a zip bomb); refused"
        )


def _needs_assets(zin: zipfile.ZipFile, keep: list[zipfile.ZipInfo], src: Path) -> bool:
    """Whether the config names a layer whose vocabulary Keras reads from assets/ (a mention
    anywhere counts, so nothing needed is left out)."""
    config = next((i for i in keep if i.filename == "config.json"), None)
    if config is None:
        return False
    _check_member(config, src)
    raw = zin.read(config)
    return any(name in raw for name in _ASSET_LAYERS)


def _refuse_duplicate_members(infos: list[zipfile.ZipInfo], src: Path) -> None:
    """Two members of one name: zipfile (and so Keras) reads the last, other tools the first. No
    archive Keras writes has them, so such a file is refused rather than guessed at."""
    seen: set[str] = set()
    for info in infos:
        if info.filename in seen:
            raise ModelFileError(
                f"{src}: the archive holds two members named {info.filename!r}; a .keras file written by "
                "Keras has one of each, re-save the model"
            )
        seen.add(info.filename)


def _copy_tree(src: Path, dst: Path, max_bytes: int) -> None:
    total = count = 0
    for root, dirs, files in os.walk(src, followlinks=False):
        rel = Path(root).relative_to(src)
        # Every directory is walked, so a link anywhere is refused; assets are not copied.
        skipped = bool(rel.parts) and rel.parts[0] in _SKIPPED_SAVEDMODEL_DIRS
        if not skipped:
            (dst / rel).mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in dirs + files:
            if (Path(root) / name).is_symlink():
                raise ModelFileError(
                    f"{src}: {rel / name} is a symbolic link; links are not followed, give a SavedModel of plain files"
                )
        for name in files:
            if skipped or (rel == Path(".") and name in _SKIPPED_SAVEDMODEL_FILES):
                continue
            count += 1
            if count > limits.MAX_MEMBERS:
                raise ModelFileError(
                    f"{src}: more than {limits.MAX_MEMBERS:,} files; not a SavedModel gradinspect reads"
                )
            fd = limits.open_regular(Path(root) / name, f"{src}: {rel / name}")
            with os.fdopen(fd, "rb") as fh:
                total += os.fstat(fh.fileno()).st_size
                limits.ensure_within(total, max_bytes, f"{src}: the SavedModel's files")
                _copy_stream(fh, dst / rel / name, max_bytes, src)
