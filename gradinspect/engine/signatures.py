"""Gradients of a SavedModel without Keras structure, through one of its signatures."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradinspect.artifacts.live import dtype_name, savedmodel_variables, shape_of
from gradinspect.artifacts.loading import LoadedModel
from gradinspect.artifacts.savedmodel_static import split_scope
from gradinspect.engine.entries import (
    INTEGER,
    NO_PATH,
    NON_DIFFERENTIABLE,
    UNUSED_VARIABLE,
    output_entry,
    weight_entry,
)
from gradinspect.engine.passes import Front, PassResult
from gradinspect.engine.request import GradientRequest
from gradinspect.engine.subjects import SignatureSubject, flatten
from gradinspect.errors import GradientError, LayerNameError
from gradinspect.report import InputSpec, ModelInfo, PairReport


@dataclass(frozen=True)
class LiveSignature:
    """A loaded SavedModel's signature the pass runs: its ``key``, the concrete ``function``, and
    its inputs' ``specs`` (sorted by name, as the function takes them as keywords)."""

    key: str
    function: Any
    specs: tuple[InputSpec, ...]

    @property
    def output_names(self) -> list[str]:
        """The output names, in the order the pass sees them (sorted keys of its result)."""
        outputs = self.function.structured_outputs
        return sorted(outputs) if isinstance(outputs, dict) else [f"output_{i}" for i in range(len(flatten(outputs)))]


def savedmodel_signature(loaded: LoadedModel, key: str | None = None) -> LiveSignature:
    """The signature gradients flow through: ``key``, else ``serving_default``, else the first one."""
    sigs = dict(getattr(loaded.model, "signatures", {}) or {})
    if not sigs:
        raise GradientError(f"{loaded.artifact.path}: the SavedModel has no signatures to run")
    if key is not None and key not in sigs:
        raise LayerNameError(
            f"{loaded.artifact.path}: no signature {key!r}; the SavedModel has {', '.join(sorted(sigs))}"
        )
    key = key or ("serving_default" if "serving_default" in sigs else sorted(sigs)[0])
    fn = sigs[key]
    _, kwargs = fn.structured_input_signature
    specs = tuple(InputSpec(n, shape_of(spec.shape), dtype_name(spec.dtype)) for n, spec in sorted(kwargs.items()))
    return LiveSignature(key, fn, specs)


def signature_front(request: GradientRequest, signature: LiveSignature) -> Front:
    """A SavedModel without Keras structure: d loss / d each input and d loss / d each variable.

    Layers do not exist here; name scopes stand in for them (`gradinspect layers` lists them), and
    a pair selects the variables of its two scopes (no pairs: every variable). Output gradients are
    those of the inputs.
    """
    key, fn, specs = signature.key, signature.function, signature.specs
    scoped = tuple((*split_scope(v.name), v) for v in savedmodel_variables(request.loaded.model))
    pairs = _checked_pairs(request.pairs, scoped, specs)
    subject = SignatureSubject(fn, scoped, label=f"the signature {key!r}")

    def reports(result: PassResult, arrays: dict[str, np.ndarray]) -> tuple[PairReport, ...]:
        return _signature_reports(result, arrays, fn, pairs)

    loaded = request.loaded
    info = ModelInfo(str(loaded.artifact.path), loaded.artifact.format.value, None, specs, loader=loaded.loader)
    return Front(subject, reports, info, (f"SavedModel without Keras layers: gradients through signature {key!r}",))


def _signature_reports(
    result: PassResult, arrays: dict[str, np.ndarray], fn: Any, pairs: list[tuple[str, str]]
) -> tuple[PairReport, ...]:
    """Output entries are the inputs'; a pair holds the variables of its two name scopes."""
    captured = {id(t) for t in getattr(fn, "captured_inputs", ())}
    outs = tuple(
        output_entry(tg, INTEGER if not tg.tensor.dtype.is_floating else NO_PATH, arrays) for tg in result.tensors
    )
    weights = []
    for vg in result.variables:
        unused = captured and id(getattr(vg.variable, "handle", None)) not in captured
        weights.append(weight_entry(vg, UNUSED_VARIABLE if unused else NON_DIFFERENTIABLE, arrays))
    return tuple(
        PairReport(a, b, outs, tuple(weights if (a, b) == _EVERYTHING else [w for w in weights if w.layer in (a, b)]))
        for a, b in pairs
    )


_EVERYTHING = ("(inputs)", "(variables)")


def _checked_pairs(
    pairs: tuple[Any, ...], scoped: tuple[Any, ...], specs: tuple[InputSpec, ...]
) -> list[tuple[str, str]]:
    """The pairs to report; every name must be a name scope or an input (the closest are suggested)."""
    if not pairs:
        return [_EVERYTHING]
    scopes = list(dict.fromkeys(scope for scope, _, _ in scoped))
    known = scopes + [s.name for s in specs]
    for name in (n for pair in pairs for n in pair):
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
            hint = f"; closest: {', '.join(close)}" if close else f"; name scopes: {', '.join(scopes)}"
            raise LayerNameError(f"no name scope or input {name!r} in the SavedModel{hint}")
    return list(pairs)
