"""Numbers about a gradient array (numpy only). Non-finite entries are counted, then left out."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradinspect.report import ActivationStats, TensorStats

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


class StreamingStats:
    """The statistics of many arrays as if they were one, updated array by array (Chan et al.'s
    parallel moments, in float64), so that batches give the numbers of one giant batch."""

    def __init__(self) -> None:
        self.size = self.nonfinite = self.count = self.zeros = 0
        self.mean = self.m2 = self.squares = self.absolute = 0.0
        self.lo, self.hi = np.inf, -np.inf

    def update(self, values: Any) -> None:
        flat = np.asarray(values).reshape(-1)
        finite = flat[np.isfinite(flat)] if not np.all(np.isfinite(flat)) else flat
        self.size += flat.size
        self.nonfinite += int(flat.size - finite.size)
        if not finite.size:
            return
        x = finite.astype(np.float64)
        n, mean = x.size, float(x.mean())
        m2 = float(np.dot(x - mean, x - mean))
        total = self.count + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total
        self.squares += float(np.dot(x, x))
        self.absolute += float(np.abs(x).sum())
        self.zeros += int(n - np.count_nonzero(x))
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))

    def result(self) -> TensorStats:
        if not self.count:
            return TensorStats(self.size, None, None, None, None, None, None, None, None, self.nonfinite)
        n = self.count
        return TensorStats(
            size=self.size,
            norm=float(np.sqrt(self.squares)),
            mean=self.mean,
            std=float(np.sqrt(self.m2 / n)),
            min=self.lo,
            max=self.hi,
            abs_mean=self.absolute / n,
            abs_max=max(abs(self.lo), abs(self.hi)),
            zero_fraction=self.zeros / n,
            nonfinite=self.nonfinite,
        )


# Where a sigmoid or tanh is saturated: its derivative is below ~0.04 there.
SATURATION = {"sigmoid": (0.01, 0.99), "tanh": (-0.99, 0.99)}


class ActivationSums:
    """A layer output's values over every batch (``--activations``): moments and zeros as
    :class:`StreamingStats` keeps them, and the values outside ``saturating``'s unsaturated range."""

    def __init__(self, saturating: str | None) -> None:
        self.saturating = saturating if saturating in SATURATION else None
        self.values = StreamingStats()
        self.saturated = 0

    def update(self, values: Any) -> None:
        flat = np.asarray(values, np.float64).reshape(-1)
        self.values.update(flat)
        if self.saturating is not None:
            lo, hi = SATURATION[self.saturating]
            self.saturated += int(np.count_nonzero((flat < lo) | (flat > hi)))

    def result(self) -> ActivationStats:
        s = self.values.result()
        share = self.saturated / self.values.count if self.saturating and self.values.count else None
        return ActivationStats(s.mean, s.std, s.zero_fraction, share, self.saturating)


def activation_stats(values: Any, saturating: str | None) -> ActivationStats:
    """:class:`ActivationSums` of one array."""
    sums = ActivationSums(saturating)
    sums.update(values)
    return sums.result()
