"""``grad --saliency`` (issue 25 item 13, tf-keras-vis's ``Saliency`` defaults): per sample,
|d loss / d input|, the maximum over channels, scaled to [0, 1]; SmoothGrad with ``--smooth N``.

References: for a linear model ``sum(x @ w)`` the gradient is ``w`` for every sample (closed form,
so SmoothGrad's noisy copies change nothing); for a conv net, an independent tape in this test.
Float32 runs: rtol 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_one_error_line, run_cli


@pytest.fixture(scope="module")
def models(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("saliency")
    L = keras.layers
    keras.utils.set_random_seed(11)
    x = keras.Input((5,), name="x")
    linear = keras.Model(x, L.Dense(1, use_bias=False, name="w")(x))
    linear.save(d / "linear.keras")
    image = keras.Input((6, 6, 2), name="image")
    h = L.Conv2D(3, 3, activation="tanh", name="conv")(image)
    conv = keras.Model(image, L.Dense(1, name="out")(L.Flatten(name="flat")(h)))
    conv.save(d / "conv.keras")
    rng = np.random.default_rng(11)
    np.save(d / "x.npy", rng.normal(size=(3, 5)).astype("float32"))
    np.save(d / "images.npy", rng.normal(size=(4, 6, 6, 2)).astype("float32"))
    return d, linear, conv


def _saliency(d, name, data, *args):
    out = d / f"{name}{abs(hash(args))}.npz"
    result = run_cli("grad", d / f"{name}.keras", "--all", "--input", d / data, "--saliency", out, "--force", *args)
    assert result.exit_code == 0, result.stderr
    return np.load(out)


def test_a_linear_models_saliency_is_its_scaled_weights_with_or_without_smoothgrad(models):
    d, linear, _ = models
    w = np.abs(np.asarray(linear.get_layer("w").kernel.numpy(), np.float64)[:, 0])
    expected = np.broadcast_to((w - w.min()) / (w.max() - w.min()), (3, 5))
    plain = _saliency(d, "linear", "x.npy")
    np.testing.assert_allclose(plain["saliency/x"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(plain["input/x"], np.load(d / "x.npy"))
    smooth = _saliency(d, "linear", "x.npy", "--smooth", "5", "--noise", "0.3")
    np.testing.assert_allclose(smooth["saliency/x"], expected, rtol=1e-5, atol=1e-6)


def test_an_images_saliency_is_the_channel_maximum_of_the_tapes_gradient(models):
    import tensorflow as tf

    d, _, conv = models
    images = tf.constant(np.load(d / "images.npy"))
    with tf.GradientTape() as tape:
        tape.watch(images)
        loss = tf.reduce_sum(conv(images))
    g = np.abs(tape.gradient(loss, images).numpy()).max(axis=-1)
    lo, hi = g.min(axis=(1, 2), keepdims=True), g.max(axis=(1, 2), keepdims=True)
    maps = _saliency(d, "conv", "images.npy", "--batch-size", "2")["saliency/image"]  # two batches
    assert maps.shape == (4, 6, 6)
    np.testing.assert_allclose(maps, (g - lo) / (hi - lo), rtol=1e-5, atol=1e-6)


def test_a_png_grid_for_images_and_one_error_line_otherwise(models, tmp_path):
    d, _, _ = models
    png = tmp_path / "s.png"
    result = run_cli("grad", d / "conv.keras", "--all", "--input", d / "images.npy", "--saliency", png)
    assert result.exit_code == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    not_image = tmp_path / "v.png"
    line = assert_one_error_line(run_cli("grad", d / "linear.keras", "--all", "--saliency", not_image))
    assert "not an image" in line and not not_image.exists()
    assert_one_error_line(run_cli("grad", d / "linear.keras", "--all", "--saliency", tmp_path / "s.txt"), ".npz")
