"""Results of ``layers``: inputs, layers, variables, signatures, the listing report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from gradinspect.jsonform import JsonMixin, Layout, ReportMixin

# A shape is a tuple of ints/None; a layer with several outputs has a tuple of shapes.
Shape = tuple[Any, ...]  # dimensions: ints, None where unknown
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
        "dtype?",
        "note?",
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
    dtype: str | None = None  # layers recovered from a graph: the output's dtype
    note: str | None = None  # ... and why one is not recoverable


@dataclass(frozen=True)
class Signature(JsonMixin):
    """A SavedModel signature: its key, its inputs and its outputs."""

    JSON: ClassVar[Layout] = ("key", "inputs", "outputs")

    key: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[InputSpec, ...]


@dataclass(frozen=True, repr=False)
class LayersReport(ReportMixin):
    """What ``gradinspect layers`` shows. Totals count every variable once."""

    JSON: ClassVar[Layout] = (
        "model",
        "layers",
        "total_params",
        "trainable_params",
        "non_trainable_params",
        "signatures?",
        "source?",
        ("graph_signature?", "graph_signature"),
    )

    model: ModelInfo
    layers: tuple[LayerRow, ...]
    total_params: int
    trainable_params: int
    signatures: tuple[Signature, ...] = field(default=())
    source: str | None = None  # "graph": the layers were recovered from a SavedModel signature's graph
    graph_signature: str | None = None  # ... that signature

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params
