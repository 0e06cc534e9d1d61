"""Results of a gradient run: statistics, output and weight gradients, stage 2, pairs, the grad report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from gradinspect.jsonform import JsonMixin, Layout, ReportMixin
from gradinspect.report.listing import ModelInfo, Shape


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
class Noise(JsonMixin):
    """The gradient noise scale of McCandlish et al. (2018), the "simple" estimator, over ``batches``
    full batches of ``batch_size``: ``b_simple`` = B·S/|G|², ``snr`` = |G|²/S; None with a ``reason``
    where it cannot be estimated (fewer than 2 full batches, or |G|² ≤ 0)."""

    JSON: ClassVar[Layout] = ("b_simple", "snr", "batches", "batch_size", "reason?")

    b_simple: float | None
    snr: float | None
    batches: int
    batch_size: int
    reason: str | None = None


@dataclass(frozen=True)
class ActivationStats(JsonMixin):
    """A layer output's own values (``--activations``): their mean and std, the share of exact zeros
    (dead ReLU units) and, after a sigmoid or tanh, the share of saturated values (sigmoid outside
    [0.01, 0.99], |tanh| above 0.99), where gradients vanish."""

    JSON: ClassVar[Layout] = ("mean", "std", "zero_fraction", "saturated_fraction?", "saturating?")

    mean: float | None
    std: float | None
    zero_fraction: float | None
    saturated_fraction: float | None = None
    saturating: str | None = None  # sigmoid | tanh: the activation whose saturation is counted


@dataclass(frozen=True)
class OutputGradient(JsonMixin):
    """d loss / d one output tensor of one call of a layer. ``stats`` is None when there is no
    gradient, and ``missing`` then says why; ``activation`` holds the tensor's own values' statistics
    when ``--activations`` asked for them."""

    JSON: ClassVar[Layout] = ("layer", "call", "tensor", "shape", "stats", "missing", "activation?")

    layer: str
    call: int
    tensor: int
    shape: Shape
    stats: TensorStats | None
    missing: str | None = None
    tensors: int = 1  # how many tensors that call returned
    activation: ActivationStats | None = None

    @property
    def key(self) -> str:
        """The ``--save-npz`` key: ``output/<layer>``, ``#<n>`` for the n-th further call of a shared
        layer, ``.<j>`` for the j-th tensor (from 0) of a call that returns several."""
        return output_key(self.layer, self.call, self.tensor, self.tensors)

    @property
    def activation_key(self) -> str:
        """The ``--save-npz`` key of the tensor's own values (``--activations``): ``activation/<layer>…``."""
        return "activation/" + self.key.removeprefix("output/")


def output_key(layer: str, call: int, tensor: int, tensors: int) -> str:
    """The ``--save-npz``/``--save-h5`` key of ``layer``'s ``call``-th call's ``tensor``-th of ``tensors`` outputs."""
    key = f"output/{layer}"
    if call:
        key += f"#{call}"
    if tensors > 1:
        key += f".{tensor}"
    return key


@dataclass(frozen=True)
class WeightGradient(JsonMixin):
    """d loss / d one trainable variable of a layer; ``variable`` is its path inside the layer."""

    JSON: ClassVar[Layout] = ("layer", "variable", "shape", "stats", "weight_norm", "ratio", "missing", "noise?")

    layer: str
    variable: str
    shape: Shape
    stats: TensorStats | None
    weight_norm: float
    missing: str | None = None
    noise: Noise | None = None

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
    Over several batches (``batches``) the values and gradients are sums of the per-batch ones.
    """

    JSON: ClassVar[Layout] = (
        ("stage1", (("expr", "stage1_expr"), ("value", "stage1_value"), "grad_shape", "grad_stats")),
        "expr",
        "through",
        "value",
        "weights",
        "batches?",
    )

    stage1_expr: str
    stage1_value: float
    grad_shape: Shape
    grad_stats: TensorStats | None
    expr: str
    through: bool
    value: float
    weights: tuple[Stage2Weight, ...]
    batches: int | None = None  # over several batches: the sum of the per-batch stage-2 losses


@dataclass(frozen=True)
class PairReport(JsonMixin):
    """The gradients for one ``--from A --to B`` pair: outputs and weights of both layers."""

    JSON: ClassVar[Layout] = (("from", "from_layer"), ("to", "to_layer"), "outputs", "weights", "stage2?")

    from_layer: str
    to_layer: str
    outputs: tuple[OutputGradient, ...]
    weights: tuple[WeightGradient, ...]
    stage2: Stage2Report | None = None


@dataclass(frozen=True, repr=False)
class GradReport(ReportMixin):
    """What ``gradinspect grad`` shows. ``arrays`` holds the raw gradients by ``--save-npz`` key."""

    JSON: ClassVar[Layout] = (
        "model",
        ("loss", (("spec", "loss_spec"), ("value", "loss_value"))),
        (
            "inputs",
            (("source", "input_source"), "batch_size", "batches?", "training", ("fingerprint", "input_fingerprint")),
        ),
        "pairs",
        "noise?",
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
    batches: int | None = None  # set when the data ran in several batches
    noise: Noise | None = None  # the whole model's noise scale, over several batches

    @property
    def batches_text(self) -> str:
        """How the data ran, for headers: ``20 batches of 32`` or ``batch 32``."""
        return f"{self.batches} batches of {self.batch_size}" if self.batches else f"batch {self.batch_size}"
