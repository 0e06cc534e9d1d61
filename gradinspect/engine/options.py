"""The options every gradient command shares, as typed values, and their checks before any work."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from gradinspect.engine.losses import check_loss_spec
from gradinspect.engine.readers import data_file
from gradinspect.engine.stages import parse_stages
from gradinspect.errors import InputDataError, UsageProblem

T = TypeVar("T")


# One sample's shape for inputs with unknown dimensions: one shape for every input, or shapes by
# input name (``"*"``: every other input), as ``--input-shape D1,D2`` / ``--input-shape NAME=D1,D2``.
InputShape = tuple[int, ...] | Mapping[str, tuple[int, ...]] | None


@dataclass(frozen=True)
class DataOptions:
    """Where the inputs come from and which loss is differentiated (``--input`` … ``--training``).

    ``inputs`` is a file spec (as ``--input``), an array, a dict of arrays by input name, or None
    for ``random`` seeded samples; ``samples`` is ``START:STOP``; ``batch_size`` keeps the first N.
    ``outputs`` aims the loss at named model outputs (``--model-output NAME`` or ``NAME=TARGETFILE``).
    """

    inputs: Any = None
    random: int = 4
    seed: int = 0
    input_shape: InputShape = None
    samples: str | None = None
    batch_size: int | None = None
    loss: str = "auto"
    target: Any = None
    training: bool = False
    regularizers: bool = True  # --loss compiled adds the model's regularization losses
    outputs: tuple[str, ...] = ()
    max_batches: int | None = None
    compile: str = "auto"  # the batches after the first as one tf.function: auto|always|never
    devices: int | None = None  # the compiled step across N devices (tf.distribute.MirroredStrategy)


@dataclass(frozen=True)
class ModelOptions:
    """How the model is opened: a trusted ``--custom-objects`` file, and ``--unsafe``."""

    custom_objects: str | Path | None = None
    unsafe: bool = False


def split_options(kwargs: dict[str, Any], *kinds: type) -> list[Any]:
    """One instance of each dataclass in ``kinds`` from the keyword options that name its fields.

    An option no kind has is a TypeError naming it, as for any Python call.
    """
    known = {f.name for kind in kinds for f in dataclasses.fields(kind)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unexpected option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [kind(**{f.name: kwargs[f.name] for f in dataclasses.fields(kind) if f.name in kwargs}) for kind in kinds]


def check_data_options(data: DataOptions) -> None:
    """Checks that need no model: counts, seeds, and that ``--input``/``--target`` files exist
    (raise UsageProblem or InputDataError)."""
    files = [("--model-output", o.partition("=")[2]) for o in data.outputs if "=" in o]
    for option, spec in (("--input", data.inputs), ("--target", data.target), *files):
        if isinstance(spec, (str, Path)):
            path = data_file(spec)[0]
            if not path.exists():
                raise InputDataError(f"{option} {spec}: no such file")
    if data.random < 1:
        raise UsageProblem(f"--random {data.random}: need at least one sample")
    if data.seed < 0:
        raise UsageProblem(f"--seed {data.seed}: must be 0 or more")
    if data.batch_size is not None and data.batch_size < 1:
        raise UsageProblem(f"--batch-size {data.batch_size}: must be at least 1")
    if data.max_batches is not None and data.max_batches < 1:
        raise UsageProblem(f"--max-batches {data.max_batches}: must be at least 1")
    if data.compile not in ("auto", "always", "never"):
        raise UsageProblem(f"--compile {data.compile}: choose auto, always or never")
    if data.devices is not None and data.devices < 1:
        raise UsageProblem(f"--devices {data.devices}: must be at least 1")
    if data.devices is not None and data.compile == "never":
        raise UsageProblem("--devices runs the compiled step; drop --compile never")
    shapes = data.input_shape.values() if isinstance(data.input_shape, Mapping) else [data.input_shape]
    for shape in shapes:
        if shape is not None and (not shape or any(not isinstance(d, int) or d < 1 for d in shape)):
            raise UsageProblem(f"--input-shape {shape}: every dimension must be a positive integer")


@dataclass(frozen=True)
class GradOptions:
    """What ``grad`` reports besides the pairs: every consecutive layer pair, and stage 2."""

    all_layers: bool = False
    activations: bool = False  # the recorded outputs' own values' statistics too
    saliency: bool = False  # per-sample saliency maps of the inputs (saliency/<input> arrays)
    smooth: int = 0  # SmoothGrad: noisy copies per sample (0: plain gradients)
    noise: float = 0.2  # SmoothGrad's noise, a share of each sample's value range
    stage1: str | None = None
    stage2: str | None = None
    through: bool = False
    signature: str | None = None  # a SavedModel's signature (default: serving_default, else the first)
    progress: Callable[[int, int, int], None] | None = None  # (batches done, batches, samples done)
    sink: Callable[[dict[str, Any], int, int], None] | None = None  # (arrays by key, first row, rows): --save-h5


# Any number of model outputs, for checking expressions before the model is loaded.
_ANY_OUTPUTS = 1024


def checked_options(inputs: Any, options: dict[str, Any]) -> tuple[GradOptions, DataOptions, ModelOptions]:
    """The keyword options of a gradient run as typed values, with every check that needs no model done."""
    grad_opts, data, model_opts = split_options(options, GradOptions, DataOptions, ModelOptions)
    data = replace(data, inputs=inputs)
    check_data_options(data)
    check_loss_spec(data.loss, data.target is not None or any("=" in o for o in data.outputs))
    # The expressions' syntax and names, before loading; y0..yN are checked again once N is known.
    parse_stages(grad_opts.stage1, grad_opts.stage2, grad_opts.through, _ANY_OUTPUTS, data.target is not None)
    if data.devices and grad_opts.stage2 is not None:
        raise UsageProblem("--devices runs the compiled step; --stage2 runs eagerly on one device: drop one of them")
    return grad_opts, data, model_opts
