"""Numbers about a gradient array (numpy only). Non-finite entries are counted, then left out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TensorStats:
    """Statistics of one array. Every value but ``nonfinite`` is over the finite entries only;
    ``None`` when there are none. ``norm`` is the L2 norm (Frobenius for matrices)."""

    size: int
    norm: float | None
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    abs_mean: float | None
    abs_max: float | None
    zero_fraction: float | None
    nonfinite: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "abs_mean": self.abs_mean,
            "abs_max": self.abs_max,
            "zero_fraction": self.zero_fraction,
            "nonfinite": self.nonfinite,
        }


def tensor_stats(values: Any) -> TensorStats:
    """Stats of ``values``, accumulated in float64 so that large arrays keep their digits."""
    a = np.asarray(values)
    if a.dtype.kind not in "fc":
        a = a.astype(np.float64)
    flat = a.reshape(-1)
    finite_mask = np.isfinite(flat)
    nonfinite = int(flat.size - np.count_nonzero(finite_mask))
    x = flat[finite_mask].astype(np.float64)
    if x.size == 0:
        return TensorStats(int(flat.size), None, None, None, None, None, None, None, None, nonfinite)
    ax = np.abs(x)
    return TensorStats(
        size=int(flat.size),
        norm=float(np.sqrt(np.dot(x, x))),
        mean=float(x.mean()),
        std=float(x.std()),
        min=float(x.min()),
        max=float(x.max()),
        abs_mean=float(ax.mean()),
        abs_max=float(ax.max()),
        zero_fraction=float(np.count_nonzero(x == 0) / x.size),
        nonfinite=nonfinite,
    )
