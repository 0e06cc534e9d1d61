"""Numbers about a gradient array (numpy only). Non-finite entries are counted, then left out."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradinspect.report import TensorStats

# Sums are accumulated in float64 over chunks that stay in cache: converting a whole float32
# array to float64 at once costs more than every other pass together.
_CHUNK = 1 << 16


def tensor_stats(values: Any) -> TensorStats:
    """Stats of ``values``; sums are accumulated in float64 so that large arrays keep their digits."""
    a = np.asarray(values)
    flat = a.reshape(-1)
    if flat.dtype.kind not in "fc":
        flat = flat.astype(np.float64)
    finite_mask = np.isfinite(flat)
    if finite_mask.all():
        x = flat
        nonfinite = 0
    else:
        x = flat[finite_mask]
        nonfinite = int(flat.size - x.size)
    n = x.size
    if n == 0:
        return TensorStats(int(flat.size), None, None, None, None, None, None, None, None, nonfinite)
    total = squares = absolute = 0.0
    zeros = 0
    for start in range(0, n, _CHUNK):
        c = x[start : start + _CHUNK].astype(np.float64)
        total += float(c.sum())
        squares += float(np.dot(c, c))
        absolute += float(np.abs(c).sum())
        zeros += c.size - int(np.count_nonzero(c))
    mean = total / n
    centred = 0.0
    for start in range(0, n, _CHUNK):
        d = x[start : start + _CHUNK].astype(np.float64) - mean
        centred += float(np.dot(d, d))
    lo, hi = float(x.min()), float(x.max())
    return TensorStats(
        size=int(flat.size),
        norm=float(np.sqrt(squares)),
        mean=mean,
        std=float(np.sqrt(centred / n)),
        min=lo,
        max=hi,
        abs_mean=absolute / n,
        abs_max=max(abs(lo), abs(hi)),
        zero_fraction=zeros / n,
        nonfinite=nonfinite,
    )
