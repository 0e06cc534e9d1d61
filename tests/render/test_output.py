"""--output writes atomically; nothing is written to or next to the model."""

from __future__ import annotations

import os

import pytest
from conftest import SAMPLES, assert_one_error_line, run_cli, sha256


def test_output_file_matches_stdout(tmp_path):
    out = tmp_path / "layers.json"
    to_file = run_cli("layers", SAMPLES / "mlp.keras", "--format", "json", "--output", out)
    to_stdout = run_cli("layers", SAMPLES / "mlp.keras", "--format", "json")
    assert to_file.exit_code == 0 and to_file.stdout == ""
    assert out.read_text() == to_stdout.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["layers.json"]  # no temp file left behind


def test_output_into_missing_directory(tmp_path):
    out = tmp_path / "missing" / "x.json"
    assert_one_error_line(run_cli("layers", SAMPLES / "mlp.keras", "-o", out), "--output", "does not exist")
    assert not out.parent.exists()


def test_output_into_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root ignores permission bits; use a path under /proc instead
            target = "/proc/gradinspect-test/x.json"
        else:
            target = str(ro / "x.json")
        assert_one_error_line(run_cli("layers", SAMPLES / "mlp.keras", "-o", target), "--output")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


@pytest.mark.slow
def test_model_files_unchanged_and_nothing_written_beside_them(tmp_path):
    import shutil

    for name in ("mlp.keras", "mlp.h5", "mlp_savedmodel", "mlp_export"):
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        src = SAMPLES / name
        dst = folder / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
        before = sha256(dst), sorted(p.name for p in folder.iterdir())
        assert run_cli("layers", dst).exit_code == 0
        assert (sha256(dst), sorted(p.name for p in folder.iterdir())) == before
