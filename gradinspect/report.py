"""Every result type: frozen, typed dataclasses that know nothing about display.

Each class declares its JSON as a ``JSON`` layout; :mod:`gradinspect.jsonform` derives the
JSON from it, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

from gradinspect.jsonform import JsonMixin, Layout

# A shape is a tuple of ints/None; a layer with several outputs has a tuple of shapes.
Shape = tuple
OutputShape = Union[Shape, tuple[Shape, ...], None]  # noqa: UP007 - a runtime alias, evaluated on 3.10


@dataclass(frozen=True)
class InputSpec(JsonMixin):
    """One model input (or one argument of a SavedModel signature)."""

    JSON: ClassVar[Layout] = ("name", "shape", "dtype")

    name: str
    shape: Shape | None
    dtype: str | None


@dataclass(frozen=True)
class ModelInfo(JsonMixin):
    """Where a model came from and what it takes."""

    JSON: ClassVar[Layout] = ("path", "format", "name", "keras_version", "loader", "inputs")

    path: str
    format: str
    name: str | None
    inputs: tuple[InputSpec, ...]
    loader: str | None = None
    keras_version: str | None = None


@dataclass(frozen=True)
class VariableInfo(JsonMixin):
    """A variable of a layer (or of a name scope, for SavedModels without Keras metadata)."""

    JSON: ClassVar[Layout] = ("name", "shape", "dtype", "trainable")

    name: str
    shape: Shape
    dtype: str | None
    trainable: bool


@dataclass(frozen=True)
class LayerRow(JsonMixin):
    """One layer of the listing. ``name`` is the path (``outer/inner`` inside nested models)."""

    JSON: ClassVar[Layout] = (
        "name",
        ("class", "class_name"),
        "output_shape",
        "params",
        "trainable_params",
        "trainable",
        "depth",
        "variables?",
    )

    name: str
    class_name: str
    output_shape: OutputShape
    params: int
    trainable_params: int
    trainable: bool
    depth: int = 0
    is_container: bool = False
    variables: tuple[VariableInfo, ...] = ()


@dataclass(frozen=True)
class Signature(JsonMixin):
    """A SavedModel signature: its key, its inputs and its outputs."""

    JSON: ClassVar[Layout] = ("key", "inputs", "outputs")

    key: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[InputSpec, ...]


@dataclass(frozen=True)
class LayersReport(JsonMixin):
    """What ``gradinspect layers`` shows. Totals count every variable once."""

    JSON: ClassVar[Layout] = (
        "model",
        "layers",
        "total_params",
        "trainable_params",
        "non_trainable_params",
        "signatures?",
    )

    model: ModelInfo
    layers: tuple[LayerRow, ...]
    total_params: int
    trainable_params: int
    signatures: tuple[Signature, ...] = field(default=())

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params


@dataclass(frozen=True)
class OutputGradient(JsonMixin):
    """d loss / d one output tensor of one call of a layer. ``stats`` is None when there is no
    gradient, and ``missing`` then says why."""

    JSON: ClassVar[Layout] = ("layer", "call", "tensor", "shape", "stats", "missing")

    layer: str
    call: int
    tensor: int
    shape: Shape
    stats: TensorStats | None
    missing: str | None = None

    @property
    def key(self) -> str:
        """The ``--save-npz`` key: ``output/<layer>``, ``#<n>`` for further calls, ``.<j>`` for further tensors."""
        key = f"output/{self.layer}"
        if self.call:
            key += f"#{self.call}"
        if self.tensor:
            key += f".{self.tensor}"
        return key


@dataclass(frozen=True)
class WeightGradient(JsonMixin):
    """d loss / d one trainable variable of a layer; ``variable`` is its path inside the layer."""

    JSON: ClassVar[Layout] = ("layer", "variable", "shape", "stats", "weight_norm", "ratio", "missing")

    layer: str
    variable: str
    shape: Shape
    stats: TensorStats | None
    weight_norm: float
    missing: str | None = None

    @property
    def key(self) -> str:
        return f"weight/{self.layer}/{self.variable}"

    @property
    def ratio(self) -> float | None:
        if self.stats is None or self.stats.norm is None or not self.weight_norm:
            return None
        return self.stats.norm / self.weight_norm


@dataclass(frozen=True)
class Stage2Weight(JsonMixin):
    """d stage2 / d one variable, compared with the same variable's plain gradient (d loss / d var)."""

    JSON: ClassVar[Layout] = ("layer", "variable", "shape", "stats", "plain_norm", "cosine", "norm_ratio", "missing")

    layer: str
    variable: str
    shape: Shape
    stats: TensorStats | None
    plain_norm: float | None
    cosine: float | None
    norm_ratio: float | None
    missing: str | None = None

    @property
    def key(self) -> str:
        return f"stage2/weight/{self.layer}/{self.variable}"


@dataclass(frozen=True)
class Stage2Report(JsonMixin):
    """A gradient-conditioned second-stage loss: g = d stage1 / d act feeds stage2.

    ``through`` says whether g was differentiated through (double backprop) or held constant.
    """

    JSON: ClassVar[Layout] = (
        ("stage1", (("expr", "stage1_expr"), ("value", "stage1_value"), "grad_shape", "grad_stats")),
        "expr",
        "through",
        "value",
        "weights",
    )

    stage1_expr: str
    stage1_value: float
    grad_shape: Shape
    grad_stats: TensorStats | None
    expr: str
    through: bool
    value: float
    weights: tuple[Stage2Weight, ...]


@dataclass(frozen=True)
class PairReport(JsonMixin):
    """The gradients for one ``--from A --to B`` pair: outputs and weights of both layers."""

    JSON: ClassVar[Layout] = (("from", "from_layer"), ("to", "to_layer"), "outputs", "weights", "stage2?")

    from_layer: str
    to_layer: str
    outputs: tuple[OutputGradient, ...]
    weights: tuple[WeightGradient, ...]
    stage2: Stage2Report | None = None


@dataclass(frozen=True)
class GradReport(JsonMixin):
    """What ``gradinspect grad`` shows. ``arrays`` holds the raw gradients by ``--save-npz`` key."""

    JSON: ClassVar[Layout] = (
        "model",
        ("loss", (("spec", "loss_spec"), ("value", "loss_value"))),
        ("inputs", (("source", "input_source"), "batch_size", "training", ("fingerprint", "input_fingerprint"))),
        "pairs",
        "notes",
    )

    model: ModelInfo
    loss_spec: str
    loss_value: float
    input_source: str
    batch_size: int
    training: bool
    pairs: tuple[PairReport, ...]
    notes: tuple[str, ...] = ()
    arrays: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    input_fingerprint: str | None = None


@dataclass(frozen=True)
class TensorStats(JsonMixin):
    """Statistics of one array. Every value but ``nonfinite`` is over the finite entries only;
    ``None`` when there are none. ``norm`` is the L2 norm (Frobenius for matrices)."""

    JSON: ClassVar[Layout] = ("norm", "mean", "std", "min", "max", "abs_mean", "abs_max", "zero_fraction", "nonfinite")

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


@dataclass(frozen=True)
class CheckReport(JsonMixin):
    """Every rule result of one ``check`` run, with the gradient report they were computed from."""

    JSON: ClassVar[Layout] = (
        ("model", "grad.model"),
        ("loss", (("spec", "grad.loss_spec"), ("value", "grad.loss_value"))),
        (
            "inputs",
            (
                ("source", "grad.input_source"),
                ("batch_size", "grad.batch_size"),
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
class VerifyEntry(JsonMixin):
    """One variable (or the layer's output): how far the tape is from finite differences.

    ``max_error`` is max |tape - fd| / max(1, |fd|) over the checked entries: absolute for small
    gradients, relative for large ones. It is compared with ``tol``.
    """

    JSON: ClassVar[Layout] = ("target", "shape", "checked", "max_abs_error", "max_rel_error", "max_error", "passed")

    target: str
    shape: tuple
    checked: int
    max_abs_error: float
    max_rel_error: float
    max_error: float
    passed: bool


@dataclass(frozen=True)
class VerifyReport(JsonMixin):
    """The result of ``verify`` for one layer."""

    JSON: ClassVar[Layout] = (
        "model",
        "layer",
        ("loss", "loss_spec"),
        ("inputs", (("source", "input_source"), "batch_size")),
        "eps",
        "tol",
        "passed",
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

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.entries)

    def summary(self) -> str:
        failed = sum(not e.passed for e in self.entries)
        return f"{len(self.entries)} gradients checked against finite differences, {failed} failed"
