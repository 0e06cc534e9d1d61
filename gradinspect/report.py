"""Frozen dataclasses describing results; they know nothing about display. ``to_dict()`` is the JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

# A shape is a tuple of ints/None; a layer with several outputs has a tuple of shapes.
Shape = tuple
OutputShape = Union[Shape, tuple[Shape, ...], None]  # noqa: UP007 - a runtime alias, evaluated on 3.10


def shape_to_json(shape: OutputShape) -> Any:
    """Shapes become lists (``None`` dims become ``null``); several outputs a list of lists."""
    if shape is None:
        return None
    if shape and all(isinstance(s, tuple) for s in shape):
        return [list(s) for s in shape]
    return list(shape)


@dataclass(frozen=True)
class InputSpec:
    """One model input (or one argument of a SavedModel signature)."""

    name: str
    shape: Shape | None
    dtype: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": shape_to_json(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class ModelInfo:
    """Where a model came from and what it takes."""

    path: str
    format: str
    name: str | None
    inputs: tuple[InputSpec, ...]
    loader: str | None = None
    keras_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "name": self.name,
            "keras_version": self.keras_version,
            "loader": self.loader,
            "inputs": [i.to_dict() for i in self.inputs],
        }


@dataclass(frozen=True)
class VariableInfo:
    """A variable of a layer (or of a name scope, for SavedModels without Keras metadata)."""

    name: str
    shape: Shape
    dtype: str | None
    trainable: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "trainable": self.trainable}


@dataclass(frozen=True)
class LayerRow:
    """One layer of the listing. ``name`` is the path (``outer/inner`` inside nested models)."""

    name: str
    class_name: str
    output_shape: OutputShape
    params: int
    trainable_params: int
    trainable: bool
    depth: int = 0
    is_container: bool = False
    variables: tuple[VariableInfo, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "class": self.class_name,
            "output_shape": shape_to_json(self.output_shape),
            "params": self.params,
            "trainable_params": self.trainable_params,
            "trainable": self.trainable,
            "depth": self.depth,
        }
        if self.variables:
            d["variables"] = [v.to_dict() for v in self.variables]
        return d


@dataclass(frozen=True)
class Signature:
    """A SavedModel signature: its key, its inputs and its outputs."""

    key: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[InputSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "inputs": [i.to_dict() for i in self.inputs],
            "outputs": [o.to_dict() for o in self.outputs],
        }


@dataclass(frozen=True)
class LayersReport:
    """What ``gradinspect layers`` shows. Totals count every variable once."""

    model: ModelInfo
    layers: tuple[LayerRow, ...]
    total_params: int
    trainable_params: int
    signatures: tuple[Signature, ...] = field(default=())

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model": self.model.to_dict(),
            "layers": [row.to_dict() for row in self.layers],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
        }
        if self.signatures:
            d["signatures"] = [s.to_dict() for s in self.signatures]
        return d


@dataclass(frozen=True)
class OutputGradient:
    """d loss / d one output tensor of one call of a layer. ``stats`` is None when there is no
    gradient, and ``missing`` then says why."""

    layer: str
    call: int
    tensor: int
    shape: Shape
    stats: Any
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "call": self.call,
            "tensor": self.tensor,
            "shape": list(self.shape),
            "stats": self.stats.to_dict() if self.stats else None,
            "missing": self.missing,
        }


@dataclass(frozen=True)
class WeightGradient:
    """d loss / d one trainable variable of a layer; ``variable`` is its path inside the layer."""

    layer: str
    variable: str
    shape: Shape
    stats: Any
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "variable": self.variable,
            "shape": list(self.shape),
            "stats": self.stats.to_dict() if self.stats else None,
            "weight_norm": self.weight_norm,
            "ratio": self.ratio,
            "missing": self.missing,
        }


@dataclass(frozen=True)
class Stage2Weight:
    """d stage2 / d one variable, compared with the same variable's plain gradient (d loss / d var)."""

    layer: str
    variable: str
    shape: Shape
    stats: Any
    plain_norm: float | None
    cosine: float | None
    norm_ratio: float | None
    missing: str | None = None

    @property
    def key(self) -> str:
        return f"stage2/weight/{self.layer}/{self.variable}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "variable": self.variable,
            "shape": list(self.shape),
            "stats": self.stats.to_dict() if self.stats else None,
            "plain_norm": self.plain_norm,
            "cosine": self.cosine,
            "norm_ratio": self.norm_ratio,
            "missing": self.missing,
        }


@dataclass(frozen=True)
class Stage2Report:
    """A gradient-conditioned second-stage loss: g = d stage1 / d act feeds stage2.

    ``through`` says whether g was differentiated through (double backprop) or held constant.
    """

    stage1_expr: str
    stage1_value: float
    grad_shape: Shape
    grad_stats: Any
    expr: str
    through: bool
    value: float
    weights: tuple[Stage2Weight, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage1": {
                "expr": self.stage1_expr,
                "value": self.stage1_value,
                "grad_shape": list(self.grad_shape),
                "grad_stats": self.grad_stats.to_dict() if self.grad_stats else None,
            },
            "expr": self.expr,
            "through": self.through,
            "value": self.value,
            "weights": [w.to_dict() for w in self.weights],
        }


@dataclass(frozen=True)
class PairReport:
    """The gradients for one ``--from A --to B`` pair: outputs and weights of both layers."""

    from_layer: str
    to_layer: str
    outputs: tuple[OutputGradient, ...]
    weights: tuple[WeightGradient, ...]
    stage2: Stage2Report | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "from": self.from_layer,
            "to": self.to_layer,
            "outputs": [o.to_dict() for o in self.outputs],
            "weights": [w.to_dict() for w in self.weights],
        }
        if self.stage2 is not None:
            d["stage2"] = self.stage2.to_dict()
        return d


@dataclass(frozen=True)
class GradReport:
    """What ``gradinspect grad`` shows. ``arrays`` holds the raw gradients by ``--save-npz`` key."""

    model: ModelInfo
    loss_spec: str
    loss_value: float
    input_source: str
    batch_size: int
    training: bool
    pairs: tuple[PairReport, ...]
    notes: tuple[str, ...] = ()
    arrays: Any = field(default=None, compare=False, repr=False)
    input_fingerprint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "loss": {"spec": self.loss_spec, "value": self.loss_value},
            "inputs": {
                "source": self.input_source,
                "batch_size": self.batch_size,
                "training": self.training,
                "fingerprint": self.input_fingerprint,
            },
            "pairs": [p.to_dict() for p in self.pairs],
            "notes": list(self.notes),
        }


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
class RuleResult:
    """One rule applied to one gradient (``target`` is its ``--save-npz`` key)."""

    rule: str
    target: str
    passed: bool
    value: float | None
    threshold: float | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "target": self.target,
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
        }


@dataclass(frozen=True)
class CheckReport:
    """Every rule result of one ``check`` run, with the gradient report they were computed from."""

    grad: GradReport
    results: tuple[RuleResult, ...]
    rules: Rules = field(default_factory=Rules)

    @property
    def failures(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """``12 checks, 2 failed`` — the last line gradinspect writes to stderr."""
        return f"{len(self.results)} checks, {len(self.failures)} failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.grad.model.to_dict(),
            "loss": {"spec": self.grad.loss_spec, "value": self.grad.loss_value},
            "inputs": {
                "source": self.grad.input_source,
                "batch_size": self.grad.batch_size,
                "fingerprint": self.grad.input_fingerprint,
            },
            "passed": self.passed,
            "checks": len(self.results),
            "failed": len(self.failures),
            "results": [r.to_dict() for r in self.results],
        }


@dataclass(frozen=True)
class VerifyEntry:
    """One variable (or the layer's output): how far the tape is from finite differences.

    ``max_error`` is max |tape - fd| / max(1, |fd|) over the checked entries: absolute for small
    gradients, relative for large ones. It is compared with ``tol``.
    """

    target: str
    shape: tuple
    checked: int
    max_abs_error: float
    max_rel_error: float
    max_error: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "shape": list(self.shape),
            "checked": self.checked,
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "max_error": self.max_error,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class VerifyReport:
    """The result of ``verify`` for one layer."""

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "layer": self.layer,
            "loss": self.loss_spec,
            "inputs": {"source": self.input_source, "batch_size": self.batch_size},
            "eps": self.eps,
            "tol": self.tol,
            "passed": self.passed,
            "entries": [e.to_dict() for e in self.entries],
        }
