"""engine.losses: each loss against its formula in numpy, and its checks before anything is loaded."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

Y = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=np.float32)


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("sum", Y.sum()),
        ("mean", Y.mean()),
        ("sumsq", np.square(Y).sum()),
        ("unit:2", Y[:, 2].sum()),
        ("unit:-1", Y[:, -1].sum()),
    ],
)
def test_builtin_losses_match_their_formulas(keras, spec, expected):
    import tensorflow as tf

    from gradinspect.engine.losses import make_loss

    value = make_loss(spec, has_target=False)([tf.constant(Y)], None)
    assert float(value.numpy()) == pytest.approx(float(expected), rel=1e-6)


def test_sum_of_several_outputs_adds_them(keras):
    import tensorflow as tf

    from gradinspect.engine.losses import make_loss

    value = make_loss("sum", False)([tf.constant(Y), tf.constant(2 * Y)], None)
    assert float(value.numpy()) == pytest.approx(3 * float(Y.sum()), rel=1e-6)


def test_keras_mse_matches_numpy(keras):
    import tensorflow as tf

    from gradinspect.engine.losses import make_loss

    target = np.zeros_like(Y)
    value = make_loss("mse", has_target=True)([tf.constant(Y)], target)
    assert float(value.numpy()) == pytest.approx(float(np.mean(np.square(Y))), rel=1e-6)


@pytest.mark.parametrize(
    "spec,target,message",
    [
        ("nope", False, "unknown loss"),
        ("unit:x", False, "expected unit:K"),
        ("mse", False, "give --target FILE"),
    ],
)
def test_bad_loss_specs_are_refused_without_tensorflow(spec, target, message):
    code = (
        "import sys\n"
        "from gradinspect.engine.losses import check_loss_spec\n"
        "from gradinspect.errors import GradientError\n"
        f"try:\n    check_loss_spec({spec!r}, {target})\nexcept GradientError as e:\n    print(e)\n"
        "print(any(m.split('.')[0] == 'tensorflow' for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    lines = out.stdout.strip().splitlines()
    assert message in lines[0] and lines[-1] == "False"


def test_unit_out_of_range_names_the_units(keras):
    import tensorflow as tf

    from gradinspect.engine.losses import make_loss
    from gradinspect.errors import GradientError

    with pytest.raises(GradientError, match=r"the output has 3 units \(0..2\)"):
        make_loss("unit:3", False)([tf.constant(Y)], None)


@pytest.mark.parametrize(
    "saved,expected",
    [
        ("mean_squared_error", "mse"),
        (
            {"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": False}},
            "sparse_categorical_crossentropy",
        ),
        ({"class_name": "function", "config": "binary_crossentropy"}, "binary_crossentropy"),
    ],
)
def test_compiled_loss_reads_the_saved_loss(saved, expected):
    from pathlib import Path

    from gradinspect.artifacts.formats import Artifact, ModelFormat
    from gradinspect.artifacts.loading import LoadedModel
    from gradinspect.engine.losses import compiled_loss

    artifact = Artifact(Path("m.h5"), ModelFormat.H5, {"class_name": "Sequential"}, training_config={"loss": saved})
    assert compiled_loss(LoadedModel(None, artifact, "tf_keras")) == expected


def test_compiled_loss_from_logits_asks_for_an_explicit_loss():
    from pathlib import Path

    from gradinspect.artifacts.formats import Artifact, ModelFormat
    from gradinspect.artifacts.loading import LoadedModel
    from gradinspect.engine.losses import compiled_loss
    from gradinspect.errors import GradientError

    saved = {"class_name": "CategoricalCrossentropy", "config": {"from_logits": True}}
    artifact = Artifact(Path("m.h5"), ModelFormat.H5, {"class_name": "Sequential"}, training_config={"loss": saved})
    with pytest.raises(GradientError, match="from_logits=True"):
        compiled_loss(LoadedModel(None, artifact, "tf_keras"))
