"""artifacts.shapes: output shapes derived from configs, compared with Keras's own compute_output_shape."""

from __future__ import annotations

import pytest

CASES = [
    ("Dense", {"units": 7}, [(None, 5)]),
    ("Dense", {"units": 4}, [(None, 3, 5)]),
    ("Conv2D", {"filters": 6, "kernel_size": 3, "strides": 2, "padding": "valid"}, [(None, 28, 28, 1)]),
    ("Conv2D", {"filters": 6, "kernel_size": [5, 3], "strides": 1, "padding": "same"}, [(None, 17, 9, 2)]),
    ("Conv1D", {"filters": 3, "kernel_size": 4, "dilation_rate": 2}, [(None, 20, 5)]),
    ("MaxPooling2D", {"pool_size": 2}, [(None, 9, 8, 3)]),
    ("AveragePooling1D", {"pool_size": 3, "strides": 1, "padding": "same"}, [(None, 10, 2)]),
    ("GlobalAveragePooling2D", {}, [(None, 7, 7, 16)]),
    ("Flatten", {}, [(None, 4, 5, 6)]),
    ("Reshape", {"target_shape": [3, -1]}, [(None, 12)]),
    ("Concatenate", {"axis": -1}, [(None, 4, 2), (None, 4, 3)]),
    ("Embedding", {"input_dim": 100, "output_dim": 8}, [(None, 12)]),
    ("LSTM", {"units": 5}, [(None, 10, 3)]),
    ("GRU", {"units": 5, "return_sequences": True}, [(None, 10, 3)]),
]


@pytest.mark.parametrize("cls,config,inputs", CASES, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_derived_shapes_equal_keras(keras, cls, config, inputs):
    from gradinspect.artifacts import shapes

    layer = getattr(keras.layers, cls)(**config)
    expected = layer.compute_output_shape(inputs if len(inputs) > 1 else inputs[0])
    assert shapes.infer(cls, layer.get_config(), inputs) == tuple(expected)


def test_unknown_layer_or_input_is_none_never_a_guess():
    from gradinspect.artifacts import shapes

    assert shapes.infer("SomethingNew", {}, [(None, 3)]) is None
    assert shapes.infer("Dense", {"units": 3}, [None]) is None
    assert shapes.infer("Dense", {}, [(None, 3)]) is None  # a malformed config
