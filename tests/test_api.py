"""The Python API reads like the CLI: (model, inputs, then keywords) everywhere, ``flow`` under its
command's name, and reports that print short (issue 25 item 15)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLES

import gradinspect


def test_flow_is_the_commands_name_for_inspect_flow():
    assert gradinspect.flow is gradinspect.inspect_flow
    assert "flow" in gradinspect.__all__


@pytest.mark.slow
def test_one_argument_order_and_short_reprs():
    x = np.load(SAMPLES / "mlp_input.npy")
    grad = gradinspect.inspect_gradients(SAMPLES / "mlp.keras", x, [("dense_1", "dense_2")])
    checked = gradinspect.verify(SAMPLES / "mlp.keras", x, layer="dense_2", entries=2)
    flow = gradinspect.flow(SAMPLES / "mlp.keras", x)
    assert checked.passed and flow.rows
    for report in (grad, checked, flow, gradinspect.check(SAMPLES / "mlp.keras", x)):
        text = repr(report)
        assert text.startswith(f"{type(report).__name__}(model='") and len(text) < 400, text
    assert "pairs=<1>" in repr(grad)
    with pytest.raises(TypeError, match="'layer'"):
        gradinspect.verify(SAMPLES / "mlp.keras", "dense_2")  # the old order: layer is a keyword now
