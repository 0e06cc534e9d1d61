"""What ``gradinspect flow`` shows: per layer with weights, in model order, the weight-gradient series
a picture of gradient flow is drawn from. Built from a :class:`GradReport` (one backward pass), so
``grad`` and ``check`` can draw the same picture from their own reports."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from gradinspect.jsonform import JsonMixin, Layout, ReportMixin
from gradinspect.report.gradients import GradReport, WeightGradient

# A weight-gradient norm outside this band is flagged as vanishing or exploding (table, chart, plot).
VANISHING = 1e-7
EXPLODING = 1e3


@dataclass(frozen=True)
class FlowRow(JsonMixin):
    """One layer: its weights' gradients taken together (norm over all of them, mean and max |g|
    over every entry). ``spread``: over several batches, the relative spread of the per-batch
    gradients, sqrt(S)/|G| = 1/sqrt(snr), of its noisiest variable (None with one batch)."""

    JSON: ClassVar[Layout] = (
        "layer",
        "params",
        "grad_norm",
        "mean_abs",
        "max_abs",
        "zero_fraction",
        "nonfinite",
        "weight_norm",
        "spread?",
        "status",
    )

    layer: str
    params: int
    grad_norm: float | None
    mean_abs: float | None
    max_abs: float | None
    zero_fraction: float | None
    nonfinite: int
    weight_norm: float
    spread: float | None = None

    @property
    def status(self) -> str:
        """``non-finite``, ``no gradient``, ``vanishing``, ``exploding`` or ``ok``."""
        if self.nonfinite:
            return "non-finite"
        if self.grad_norm is None:
            return "no gradient"
        if self.grad_norm < VANISHING:
            return "vanishing"
        return "exploding" if self.grad_norm > EXPLODING else "ok"


@dataclass(frozen=True, repr=False)
class FlowReport(ReportMixin):
    """Per-layer weight-gradient series (``rows``) of one run, with the run it came from (``grad``)."""

    JSON: ClassVar[Layout] = (
        ("model", "grad.model"),
        ("loss", (("spec", "grad.loss_spec"), ("value", "grad.loss_value"))),
        ("inputs", (("source", "grad.input_source"), ("batch_size", "grad.batch_size"), ("batches?", "grad.batches"))),
        ("thresholds", (("vanishing", "vanishing"), ("exploding", "exploding"))),
        ("layers", "rows"),
        ("notes", "grad.notes"),
    )

    grad: GradReport
    rows: tuple[FlowRow, ...]
    vanishing: float = VANISHING
    exploding: float = EXPLODING


def flow_rows(report: GradReport) -> tuple[FlowRow, ...]:
    """Every layer with weights in ``report``, in the order the pairs list them, each once."""
    by_layer: dict[str, dict[str, WeightGradient]] = {}
    for pair in report.pairs:
        for w in pair.weights:
            by_layer.setdefault(w.layer, {}).setdefault(w.variable, w)
    return tuple(_row(layer, list(weights.values())) for layer, weights in by_layer.items())


def _row(layer: str, weights: list[WeightGradient]) -> FlowRow:
    params = sum(math.prod(w.shape) for w in weights)
    weight_norm = math.sqrt(sum(w.weight_norm**2 for w in weights))
    stats = [w.stats for w in weights if w.stats is not None and w.stats.norm is not None]
    nonfinite = sum(w.stats.nonfinite for w in weights if w.stats is not None)
    snrs = [w.noise.snr for w in weights if w.noise is not None and w.noise.snr]
    spread = 1 / math.sqrt(min(snrs)) if snrs else None
    if not stats:
        return FlowRow(layer, params, None, None, None, None, nonfinite, weight_norm, spread)
    finite = sum(s.size - s.nonfinite for s in stats) or 1
    return FlowRow(
        layer,
        params,
        math.sqrt(sum((s.norm or 0.0) ** 2 for s in stats)),
        sum((s.abs_mean or 0.0) * (s.size - s.nonfinite) for s in stats) / finite,
        max(s.abs_max or 0.0 for s in stats),
        sum((s.zero_fraction or 0.0) * (s.size - s.nonfinite) for s in stats) / finite,
        nonfinite,
        weight_norm,
        spread,
    )
