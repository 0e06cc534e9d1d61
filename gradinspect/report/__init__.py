"""Every result type, in one place: frozen, typed dataclasses that know nothing about display.

Each class declares its JSON as a ``JSON`` layout; :mod:`gradinspect.jsonform` derives the JSON
from it. Grouped by command (``listing``, ``gradients``, ``checks``) and all importable from here.
"""

from __future__ import annotations

from gradinspect.report.checks import CheckReport, EntryDetail, RuleResult, Rules, VerifyEntry, VerifyReport
from gradinspect.report.gradients import (
    ActivationStats,
    GradReport,
    Noise,
    OutputGradient,
    PairReport,
    Stage2Report,
    Stage2Weight,
    TensorStats,
    WeightGradient,
    output_key,
)
from gradinspect.report.listing import (
    InputSpec,
    LayerRow,
    LayersReport,
    ModelInfo,
    OutputShape,
    Shape,
    Signature,
    VariableInfo,
)

__all__ = [
    "CheckReport",
    "EntryDetail",
    "GradReport",
    "InputSpec",
    "Noise",
    "LayerRow",
    "LayersReport",
    "ModelInfo",
    "ActivationStats",
    "OutputGradient",
    "OutputShape",
    "PairReport",
    "RuleResult",
    "Rules",
    "Shape",
    "Signature",
    "Stage2Report",
    "Stage2Weight",
    "TensorStats",
    "VariableInfo",
    "VerifyEntry",
    "VerifyReport",
    "WeightGradient",
    "output_key",
]
