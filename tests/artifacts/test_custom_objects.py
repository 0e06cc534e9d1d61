"""artifacts.custom_objects: what a trusted --custom-objects file contributes, and its one-line errors."""

from __future__ import annotations

import textwrap

import pytest


def test_defined_classes_functions_and_custom_objects_dict_are_collected(keras, tmp_path):
    from gradinspect.artifacts.custom_objects import load_custom_objects, registered_names

    path = tmp_path / "objects.py"
    path.write_text(
        textwrap.dedent(
            """
            import keras
            from math import sqrt  # imported, not defined here: not collected

            @keras.saving.register_keras_serializable(package="mine")
            class Scale(keras.layers.Layer):
                pass

            def swish2(x):
                return x

            CUSTOM_OBJECTS = {"alias_fn": swish2}
            """
        )
    )
    found = load_custom_objects(path)
    assert found["Scale"].__name__ == "Scale" and found["swish2"] is found["alias_fn"]
    assert "sqrt" not in found
    assert found["mine>Scale"] is found["Scale"]  # Keras's registry, under package>name
    names = registered_names(found)
    assert {"Scale", "swish2", "alias_fn", "mine>Scale"} <= names


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.py", None, "no such file"),
        ("objects.txt", "x = 1", "not a Python file"),
        ("broken.py", "raise ValueError('bad import')", "importing the file failed: ValueError: bad import"),
    ],
)
def test_bad_custom_objects_files(tmp_path, name, content, message):
    from gradinspect.artifacts.custom_objects import load_custom_objects
    from gradinspect.errors import CustomObjectsError

    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(CustomObjectsError, match=message):
        load_custom_objects(path)


def test_no_file_means_no_objects():
    from gradinspect.artifacts.custom_objects import load_custom_objects

    assert load_custom_objects(None) == {}
