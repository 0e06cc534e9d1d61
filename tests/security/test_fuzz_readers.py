"""Every reader, fuzzed with seeded mutations of real files: only exit 0, 1 or 2, one line on failure.

The mutations start from the real third-party artifacts in ../shared/real_models (Keras 2.2.4 to
3.10, two SavedModels) and the sample models, and change their structure, not just their bytes:
config values of every JSON type, huge numbers, deep nesting, hostile strings, duplicated or
removed keys; HDF5 bytes past the superblock; truncated and corrupted archives; mutated inputs.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import REAL_MODELS, SAMPLES, run_cli
from fuzzing import mutated_input, mutated_model

pytestmark = pytest.mark.slow


def _models():
    found = sorted(REAL_MODELS.iterdir()) if REAL_MODELS.is_dir() else []
    found = [p for p in found if p.suffix in (".h5", ".keras") or (p / "saved_model.pb").is_file()]
    return found + [SAMPLES / "mlp.keras", SAMPLES / "mlp.h5", SAMPLES / "mlp_savedmodel", SAMPLES / "mlp_export"]


def _assert_contract(result, what):
    assert result.exit_code in (0, 1, 2), (what, result.exit_code, result.stderr[-2000:])
    if result.exit_code == 2:
        lines = [line for line in result.stderr.strip().splitlines() if line.startswith("Error: ")]
        assert len(lines) == 1 and "Traceback" not in result.stderr, (what, result.stderr[-2000:])


def test_mutated_model_files_are_listed_or_refused_in_one_line(keras, tmp_path):
    """Static listing (and the scans) of 300 mutations; every tenth also through a full grad run."""
    rng = random.Random(19)
    models = _models()
    counts = {0: 0, 2: 0}
    for i in range(300):
        src = models[i % len(models)]
        path = mutated_model(src, tmp_path, rng, i)
        result = run_cli("layers", path)
        _assert_contract(result, (src.name, i, "layers"))
        counts[result.exit_code] = counts.get(result.exit_code, 0) + 1
        if i % 10 == 0:
            _assert_contract(run_cli("grad", path, "--all", "--random", "2", "--seed", str(i)), (src.name, i, "grad"))
    assert counts[0] > 30 and counts[2] > 30, counts  # the mutations reach past the first check


@pytest.mark.parametrize("kind", ["npy", "npz", "csv", "json", "h5"])
def test_mutated_input_files_are_read_or_refused_in_one_line(keras, tmp_path, kind):
    rng = random.Random(kind)
    good = np.load(SAMPLES / "mlp_input.npy")
    for i in range(24):
        path = mutated_input(kind, tmp_path, rng, i, good)
        _assert_contract(run_cli("grad", SAMPLES / "mlp.keras", "--all", "--input", path), (kind, i))
