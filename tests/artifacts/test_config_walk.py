"""artifacts.config_walk: the one walk of a config (the ConfigGraph) and the static listing, without TensorFlow."""

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

    d, _ = two_heads
    for name in ("heads.keras", "heads.h5"):
        graph = read_artifact(d / name).graph
        assert graph is not None
        assert graph.feeding([0]) == {"x", "trunk", "head_a"}
        assert graph.feeding([1]) == {"x", "side", "head_b"}
        assert graph.feeding(None) == {"x", "trunk", "head_a", "side", "head_b"}


@pytest.mark.parametrize("name", ["heads.keras", "heads.h5"])
def test_static_parameter_counts_equal_keras(two_heads, name):
    from gradinspect.commands.layers import static_listing

    d, model = two_heads
    report = static_listing(d / name)
    assert report is not None
    assert {r.name: r.params for r in report.layers} == {layer.name: layer.count_params() for layer in model.layers}
    assert report.total_params == model.count_params()


def test_subclassed_configs_have_no_layer_structure():
    from gradinspect.artifacts.config_walk import has_layer_structure, walk_config
    from gradinspect.artifacts.weights import WeightShapes

    subclassed = {"class_name": "MyModel", "config": {"units": 3}}
    assert not has_layer_structure(subclassed)
    assert walk_config(subclassed, WeightShapes(None, True)) is None
    assert has_layer_structure({"class_name": "Sequential", "config": {"layers": []}})
