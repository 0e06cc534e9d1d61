"""artifacts.structure: the static listing and the graph read from a config, without TensorFlow."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def two_heads(keras, tmp_path_factory):
    """x -> trunk -> head_a, and x -> side -> head_b: two outputs with disjoint paths after x."""
    d = tmp_path_factory.mktemp("heads")
    L = keras.layers
    x = keras.Input((4,), name="x")
    trunk = L.Dense(3, name="trunk")(x)
    a = L.Dense(2, name="head_a")(trunk)
    b = L.Dense(1, name="head_b")(L.Dense(3, name="side")(x))
    model = keras.Model(x, [a, b])
    model.save(d / "heads.keras")
    model.save(d / "heads.h5")
    return d, model


def test_layers_feeding_each_output(two_heads):
    from gradinspect.artifacts.formats import read_artifact
    from gradinspect.artifacts.structure import layers_feeding_outputs

    d, _ = two_heads
    for name in ("heads.keras", "heads.h5"):
        config = read_artifact(d / name).config
        assert layers_feeding_outputs(config, [0]) == {"x", "trunk", "head_a"}
        assert layers_feeding_outputs(config, [1]) == {"x", "side", "head_b"}
        assert layers_feeding_outputs(config, None) == {"x", "trunk", "head_a", "side", "head_b"}


@pytest.mark.parametrize("name", ["heads.keras", "heads.h5"])
def test_static_parameter_counts_equal_keras(two_heads, name):
    from gradinspect.artifacts.formats import read_artifact
    from gradinspect.artifacts.structure import static_layers

    d, model = two_heads
    report = static_layers(read_artifact(d / name))
    assert {r.name: r.params for r in report.layers} == {layer.name: layer.count_params() for layer in model.layers}
    assert report.total_params == model.count_params()


def test_subclassed_configs_have_no_layer_structure():
    from gradinspect.artifacts.structure import has_layer_structure, layers_feeding_outputs

    subclassed = {"class_name": "MyModel", "config": {"units": 3}}
    assert not has_layer_structure(subclassed)
    assert layers_feeding_outputs(subclassed, None) is None
    assert has_layer_structure({"class_name": "Sequential", "config": {"layers": []}})
