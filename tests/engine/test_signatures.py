"""engine.signatures: gradients of a SavedModel without layers, through its signature, in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLES


@pytest.fixture(scope="module")
def affine(keras, tmp_path_factory):
    """y = x @ w + b with scopes `enc` (w, b) and an unused variable `spare/v`: a plain tf.Module."""
    import tensorflow as tf

    class Affine(tf.Module):
        def __init__(self):
            with tf.name_scope("enc"):
                self.w = tf.Variable([[1.0, -2.0], [0.5, 3.0]], name="w")
                self.b = tf.Variable([0.25, -1.0], name="b")
            with tf.name_scope("spare"):
                self.v = tf.Variable(7.0, name="v")

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
        def serve(self, x):
            return {"y": tf.matmul(x, self.w) + self.b}

    module = Affine()
    path = tmp_path_factory.mktemp("sig") / "affine"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_gradients_through_the_signature_in_closed_form(affine):
    from gradinspect import inspect_gradients

    x = np.array([[1.0, 2.0], [-1.0, 0.5], [3.0, 1.0]], dtype=np.float32)
    report = inspect_gradients(affine, x, all_layers=True)
    arrays = report.arrays
    # loss = sum(x @ w + b): d/dw = column sums of x repeated, d/db = batch size, d/dx = row sums of w.
    np.testing.assert_allclose(arrays["weight/enc/w"], np.repeat(x.sum(axis=0)[:, None], 2, axis=1), rtol=1e-6)
    np.testing.assert_allclose(arrays["weight/enc/b"], [3.0, 3.0])
    w = np.array([[1.0, -2.0], [0.5, 3.0]])
    np.testing.assert_allclose(arrays["output/x"], np.tile(w.sum(axis=1), (3, 1)), rtol=1e-6)
    spare = next(wg for wg in report.pairs[0].weights if wg.layer == "spare")
    assert spare.stats is None and "does not use this variable" in spare.missing


def test_a_pair_selects_its_scopes_and_unknown_scopes_suggest(affine):
    from gradinspect import inspect_gradients
    from gradinspect.errors import LayerNameError

    report = inspect_gradients(affine, None, pairs=[("x", "enc")])
    assert {w.layer for w in report.pairs[0].weights} == {"enc"}
    with pytest.raises(LayerNameError, match="closest: enc"):
        inspect_gradients(affine, None, pairs=[("x", "encc")])


def test_serving_default_is_the_signature_used(keras):
    from gradinspect.artifacts.loading import load_model
    from gradinspect.engine.signatures import savedmodel_signature

    signature = savedmodel_signature(load_model(SAMPLES / "mlp_export"))
    assert signature.key == "serving_default"
    assert [(s.name, s.shape, s.dtype) for s in signature.specs] == [("x", (None, 2), "float32")]
    assert signature.output_names == ["output_0"]
