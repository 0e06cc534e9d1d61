"""engine.capture: recording every call of a layer by shadowing `call`, and undoing it whatever happens."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def shared_model(keras):
    """x -> shared Dense -> tanh -> the same shared Dense: two calls of one layer."""
    x = keras.Input((3,), name="x")
    shared = keras.layers.Dense(3, name="shared")
    y = shared(keras.layers.Activation("tanh")(shared(x)))
    return keras.Model(x, y), shared


def test_every_call_of_a_shared_layer_is_recorded(shared_model):
    import tensorflow as tf

    from gradinspect.engine.subjects import recording

    model, shared = shared_model
    x = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], dtype=np.float32)
    with tf.GradientTape() as tape, recording({"shared": shared}, tape) as calls:
        model(x)
    kernel, bias = (w.numpy() for w in shared.weights)
    first = x @ kernel + bias  # the independent computation of each call
    second = np.tanh(first) @ kernel + bias
    assert len(calls["shared"]) == 2
    # float32 matmuls in TensorFlow's kernels and numpy round differently: ~1e-7 absolute.
    np.testing.assert_allclose(calls["shared"][0][0].numpy(), first, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(calls["shared"][1][0].numpy(), second, rtol=1e-5, atol=1e-6)


def test_recorded_outputs_are_watched_so_their_gradient_exists(shared_model):
    import tensorflow as tf

    from gradinspect.engine.subjects import recording

    model, shared = shared_model
    x = np.ones((1, 3), dtype=np.float32)
    with tf.GradientTape() as tape, recording({"shared": shared}, tape) as calls:
        y = model(x)
        loss = tf.reduce_sum(y)
    # d sum(y) / d (second call's output) is all ones: y is that output.
    grad = tape.gradient(loss, calls["shared"][1][0])
    np.testing.assert_array_equal(grad.numpy(), np.ones((1, 3)))


def test_call_is_restored_even_when_the_forward_pass_raises(shared_model):
    from gradinspect.engine.subjects import recording

    model, shared = shared_model
    x = np.ones((2, 3), dtype=np.float32)
    before = model(x).numpy()
    with pytest.raises(RuntimeError, match="boom"), recording({"shared": shared}, []):
        model(x)
        raise RuntimeError("boom")
    assert "call" not in vars(shared)  # the instance attribute is gone; the class's call is back
    np.testing.assert_array_equal(model(x).numpy(), before)


def test_flatten_orders_nested_outputs():
    from gradinspect.engine.subjects import flatten

    assert flatten([1, (2, [3, 4]), {"b": 6, "a": 5}]) == [1, 2, 3, 4, 5, 6]
    assert flatten(7) == [7]
