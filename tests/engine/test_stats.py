"""Gradient statistics, checked against plain numpy on arbitrary arrays (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gradinspect.engine.stats import tensor_stats

floats = st.floats(width=32, allow_nan=True, allow_infinity=True)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(0, 6), st.integers(1, 5)), elements=floats))
def test_stats_match_numpy_over_finite_entries(a):
    s = tensor_stats(a)
    finite = a[np.isfinite(a)].astype(np.float64)
    assert s.nonfinite == a.size - finite.size
    assert s.size == a.size
    if finite.size == 0:
        assert s.norm is None and s.mean is None and s.zero_fraction is None
        return
    assert math.isclose(s.norm, float(np.linalg.norm(finite)), rel_tol=1e-12, abs_tol=1e-300)
    assert s.min == finite.min() and s.max == finite.max()
    assert s.abs_max == np.abs(finite).max()
    assert math.isclose(s.mean, float(finite.mean()), rel_tol=1e-9, abs_tol=1e-30)
    assert s.zero_fraction == np.count_nonzero(finite == 0) / finite.size
    assert math.isclose(s.std, float(finite.std()), rel_tol=1e-9, abs_tol=1e-30)
    assert math.isclose(s.abs_mean, float(np.abs(finite).mean()), rel_tol=1e-9, abs_tol=1e-30)
    assert 0.0 <= s.zero_fraction <= 1.0 and s.std >= 0.0


def test_known_values():
    s = tensor_stats([[3.0, -4.0], [0.0, 0.0]])
    assert (s.norm, s.mean, s.min, s.max, s.abs_mean, s.abs_max, s.zero_fraction, s.nonfinite) == (
        5.0,
        -0.25,
        -4.0,
        3.0,
        1.75,
        4.0,
        0.5,
        0,
    )
    assert s.std == np.std([3.0, -4.0, 0.0, 0.0])
