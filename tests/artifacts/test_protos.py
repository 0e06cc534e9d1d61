"""The SavedModel schema gradinspect decodes with is TensorFlow's own, and needs no TensorFlow import."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from conftest import REPO, SAMPLES


@pytest.mark.slow
def test_the_shipped_schema_is_the_installed_tensorflows():
    """Fails after a TensorFlow upgrade that changed a message: run tools/make_protos.py and review."""
    spec = importlib.util.spec_from_file_location("make_protos", REPO / "tools" / "make_protos.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    shipped = (REPO / "gradinspect" / "artifacts" / "data" / "tf_protos.desc").read_bytes()
    assert tool.descriptor_set() == shipped


def test_decoding_a_savedmodel_imports_no_tensorflow():
    code = (
        "import sys; from gradinspect.artifacts import protos; "
        f"sm = protos.decode_saved_model(open({str(SAMPLES / 'cnn_export' / 'saved_model.pb')!r}, 'rb').read()); "
        "print(len(sm.meta_graphs[0].graph_def.library.function)); "
        "assert 'tensorflow' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == 5


@pytest.mark.parametrize("data", [b"\x12\x05abc", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x0b"])
def test_malformed_bytes_are_a_value_error(data):
    from gradinspect.artifacts import protos

    with pytest.raises(ValueError):
        protos.decode_saved_model(data)
