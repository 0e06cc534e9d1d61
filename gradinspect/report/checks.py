"""Results of the checking commands: check's rules and their results, verify's entries and report."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from gradinspect.jsonform import JsonMixin, Layout, ReportMixin
from gradinspect.report.gradients import GradReport
from gradinspect.report.listing import ModelInfo


@dataclass(frozen=True)
class Rules:
    """Which rules run and their thresholds. Non-finite and disconnected checks are on by default;
    the norm, zero-fraction and ratio rules depend on the model's scale and run when given."""

    allow_nonfinite: bool = False
    allow_disconnected: bool = False
    max_norm: float | None = None
    min_norm: float | None = None
    max_zero_fraction: float | None = None
    max_ratio: float | None = None
    baseline: str | Path | None = None
    rtol: float = 1e-3
    # --rules FILE.toml: (glob on layer names, thresholds) in file order; the first match wins.
    per_layer: tuple[tuple[str, dict[str, float]], ...] = ()

    def limits(self, layer: str) -> dict[str, float | None]:
        """The thresholds for ``layer``: the first ``per_layer`` pattern it matches overrides the flags."""
        limits = {
            "max_norm": self.max_norm,
            "min_norm": self.min_norm,
            "max_zero_fraction": self.max_zero_fraction,
            "max_ratio": self.max_ratio,
        }
        for pattern, override in self.per_layer:
            if fnmatch.fnmatchcase(layer, pattern):
                return {**limits, **override}
        return limits


@dataclass(frozen=True)
class RuleResult(JsonMixin):
    """One rule applied to one gradient (``target`` is its ``--save-npz`` key)."""

    JSON: ClassVar[Layout] = ("rule", "target", "passed", "value", "threshold", "message")

    rule: str
    target: str
    passed: bool
    value: float | None
    threshold: float | None
    message: str
    # The reason without the numbers the Value and Limit columns show (the terminal table's Why).
    why: str = ""


@dataclass(frozen=True, repr=False)
class CheckReport(ReportMixin):
    """Every rule result of one ``check`` run, with the gradient report they were computed from."""

    JSON: ClassVar[Layout] = (
        ("model", "grad.model"),
        ("loss", (("spec", "grad.loss_spec"), ("value", "grad.loss_value"))),
        (
            "inputs",
            (
                ("source", "grad.input_source"),
                ("batch_size", "grad.batch_size"),
                ("batches?", "grad.batches"),
                ("training", "grad.training"),
                ("fingerprint", "grad.input_fingerprint"),
            ),
        ),
        "passed",
        "checks",
        "failed",
        "results",
    )

    grad: GradReport
    results: tuple[RuleResult, ...]
    rules: Rules = field(default_factory=Rules)

    @property
    def failures(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def checks(self) -> int:
        return len(self.results)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def summary(self) -> str:
        """``12 checks, 2 failed`` — the last line gradinspect writes to stderr."""
        return f"{len(self.results)} checks, {len(self.failures)} failed"


@dataclass(frozen=True)
class EntryDetail(JsonMixin):
    """One checked index whose tape value is off the central difference: a ``FAIL``, or a ``kink``
    (the one-sided differences disagree too: a ReLU or max-pool kink within eps)."""

    JSON: ClassVar[Layout] = ("index", "kind", "tape", "central", "forward", "backward")

    index: tuple[int, ...]
    kind: str
    tape: float
    central: float
    forward: float
    backward: float


@dataclass(frozen=True)
class VerifyEntry(JsonMixin):
    """One tensor (a call's output or input) or variable: how far the tape is from finite differences.

    ``max_error`` is max |tape - fd| / max(1, |fd|) over the resolved entries: absolute for small
    gradients, relative for large ones. ``status`` is ``ok``, ``FAIL``, ``kink`` (off only where the
    function has a kink) or ``unresolved`` (every entry below what float64 differences resolve).
    """

    JSON: ClassVar[Layout] = (
        "target", "shape", "checked", "max_abs_error", "max_rel_error", "max_error", "passed", "status",
        "unresolved", "details",
    )  # fmt: skip

    target: str
    shape: tuple[Any, ...]
    checked: int
    max_abs_error: float
    max_rel_error: float
    max_error: float
    passed: bool
    status: str = "ok"
    unresolved: int = 0
    details: tuple[EntryDetail, ...] = ()


@dataclass(frozen=True, repr=False)
class VerifyReport(ReportMixin):
    """The result of ``verify`` for one layer."""

    JSON: ClassVar[Layout] = (
        "model",
        "layer",
        ("loss", "loss_spec"),
        ("inputs", (("source", "input_source"), "batch_size")),
        "eps",
        "tol",
        "passed",
        "verdict",
        "entries",
    )

    model: ModelInfo
    layer: str
    loss_spec: str
    input_source: str
    batch_size: int
    eps: float
    tol: float
    entries: tuple[VerifyEntry, ...]
    verdict: str | None = None

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.entries)

    def summary(self) -> str:
        failed = sum(not e.passed for e in self.entries)
        text = f"{len(self.entries)} gradients checked against finite differences, {failed} failed"
        kinks = sum(e.status == "kink" for e in self.entries)
        unresolved = sum(e.status == "unresolved" for e in self.entries)
        if kinks:
            text += f", {kinks} off only at kinks"
        if unresolved:
            text += f", {unresolved} too small to resolve"
        return text
