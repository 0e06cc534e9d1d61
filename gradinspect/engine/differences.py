"""Central finite differences of one layer, against the tape, on a float64 copy of the model.

What is checked: d loss / d the layer's output at every call (a shared layer has several), d loss /
d its input at every call (where the layer's own backward function shows itself), and d loss / d
each of its variables. Each checked entry gets the central difference and both one-sided ones:
where the one-sided differences disagree (a ReLU or max-pool kink within ``eps``) the entry is a
``kink``, not a failure; where the gradient is below what differences of a float64 loss can
resolve, it is ``unresolved``, not ``ok``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradinspect.artifacts.live import named_variables
from gradinspect.engine.objective import Objective
from gradinspect.engine.passes import INPUT_PREFIX, PassRequest, PassResult, run_pass
from gradinspect.engine.subjects import KerasSubject, flatten, keras_regularization
from gradinspect.errors import GradientError
from gradinspect.report import EntryDetail, VerifyEntry

# float64 rounding of the loss, amplified by 1/eps in a difference, times a safety margin.
_ROUNDING = 8 * 2.0**-52


@dataclass(frozen=True)
class Settings:
    """``entries`` per tensor (seeded by ``rng``), step ``eps``, tolerance ``tol``, ``progress(done, total)``."""

    entries: int
    eps: float
    tol: float
    rng: np.random.Generator
    progress: Callable[[int, int], None] | None = None


@dataclass(frozen=True)
class _Probe:
    """One tensor or variable to check: its name in the report, its tape gradient, how to perturb it."""

    target: str
    tape: np.ndarray
    perturb: Callable[[tuple[Any, ...], float], None]


class LayerDifferences:
    """The float64 copy, its inputs and objective, and the layer under test."""

    def __init__(
        self, copy: Any, input_names: list[str], feeds: dict[str, Any], objective: Objective, settings: Settings
    ):
        self.copy, self.input_names, self.feeds, self.loss, self.settings = (
            copy,
            input_names,
            feeds,
            objective,
            settings,
        )
        self._shift: tuple[str, int, Any] | None = None  # ("in" | "out", call, delta tensor)
        self._calls = 0
        self.done = self.total = 0

    def check(self, path: str, layer: Any) -> list[VerifyEntry]:
        """Every entry for ``layer``: outputs and inputs per call, then variables."""
        named = named_variables({path: layer}, (path,))
        subject = KerasSubject(
            self.copy, {path: layer}, (path,), (path,), tuple(self.input_names), False, named, record_inputs=True
        )
        result = run_pass(PassRequest(subject, self.feeds, self.loss))
        if not result.recorded[path]:
            raise GradientError(f"layer {path!r} was not called in the forward pass")
        probes = self._probes(path, result)
        plans = [_indices(p.tape.shape, self.settings.entries, self.settings.rng) for p in probes]
        self.total = sum(len(p) for p in plans)
        with self._shadowed(layer):
            base = self._loss()
            resolution = _ROUNDING * max(1.0, abs(base)) / self.settings.eps
            return [self._entry(p, plan, base, resolution) for p, plan in zip(probes, plans)]

    def _probes(self, path: str, result: PassResult) -> list[_Probe]:
        probes = []
        for tg in result.tensors:
            if tg.index != 0 or not tg.tensor.dtype.is_floating:
                continue  # the first tensor of each call (what the shadowed call can perturb)
            kind = "in" if tg.name.startswith(INPUT_PREFIX) else "out"
            suffix = f"#{tg.call}" if tg.call else ""
            label = f"{'input' if kind == 'in' else 'output'}/{path}{suffix}"
            tape = np.zeros(tuple(tg.tensor.shape)) if tg.grad is None else tg.grad
            probes.append(_Probe(label, tape, self._tensor_perturbation(kind, tg.call, tape.shape)))
        for vg in result.variables:
            tape = np.zeros(tuple(vg.variable.shape)) if vg.grad is None else vg.grad
            probes.append(_Probe(f"weight/{path}/{vg.name}", tape, _variable_perturbation(vg.variable)))
        order = {"output": 0, "input": 1, "weight": 2}
        return sorted(probes, key=lambda p: order[p.target.split("/", 1)[0]])

    def _entry(self, probe: _Probe, plan: list[tuple[Any, ...]], base: float, resolution: float) -> VerifyEntry:
        measured = {}
        for idx in plan:
            probe.perturb(idx, self.settings.eps)
            plus = self._loss()
            probe.perturb(idx, -self.settings.eps)
            minus = self._loss()
            probe.perturb(idx, 0.0)
            eps = self.settings.eps
            measured[idx] = ((plus - minus) / (2 * eps), (plus - base) / eps, (base - minus) / eps)
            self._step()
        return judge(probe.target, probe.tape, measured, self.settings.tol, resolution)

    def _step(self) -> None:
        self.done += 1
        if self.settings.progress is not None:
            self.settings.progress(self.done, self.total)

    def _loss(self) -> float:
        import tensorflow as tf

        self._calls = 0
        feed = self.feeds[self.input_names[0]] if len(self.input_names) == 1 else self.feeds
        loss = self.loss(flatten(self.copy(feed, training=False)))
        if self.loss.regularizers:  # the same loss the pass differentiates (see with_regularization)
            penalty, _ = keras_regularization(self.copy)
            loss = loss if penalty is None else loss + tf.cast(penalty, loss.dtype)
        return float(loss.numpy())

    def _tensor_perturbation(
        self, kind: str, call: int, shape: tuple[Any, ...]
    ) -> Callable[[tuple[Any, ...], float], None]:
        import tensorflow as tf

        def perturb(idx: tuple[Any, ...], step: float) -> None:
            if step == 0.0:
                self._shift = None
                return
            change = np.zeros(shape, dtype=np.float64)
            change[idx] = step
            self._shift = (kind, call, tf.constant(change))

        return perturb

    @contextlib.contextmanager
    def _shadowed(self, layer: Any) -> Iterator[None]:
        """While active, the layer adds the current shift to the input or output of the chosen call."""
        original = layer.call

        def call(*args: Any, **kwargs: Any) -> Any:
            shift, index = self._shift, self._calls
            self._calls += 1
            if shift is not None and shift[1] == index and shift[0] == "in" and args:
                args = (_add_first(args[0], shift[2]), *args[1:])
            out = original(*args, **kwargs)
            if shift is not None and shift[1] == index and shift[0] == "out":
                out = _add_first(out, shift[2])
            return out

        object.__setattr__(layer, "call", call)
        try:
            yield
        finally:
            self._shift = None
            with contextlib.suppress(AttributeError):
                object.__delattr__(layer, "call")


def _add_first(value: Any, delta: Any) -> Any:
    """``value`` with ``delta`` added to its first tensor (a layer may take or return several)."""
    if isinstance(value, (list, tuple)):
        return type(value)([_add_first(value[0], delta), *value[1:]])
    return value + delta


def _variable_perturbation(var: Any) -> Callable[[tuple[Any, ...], float], None]:
    base = var.numpy().copy()

    def perturb(idx: tuple[Any, ...], step: float) -> None:
        changed = base.copy()
        changed[idx] += step
        var.assign(changed)

    return perturb


def _indices(shape: tuple[Any, ...], k: int, rng: np.random.Generator) -> list[tuple[Any, ...]]:
    size = int(np.prod(shape)) if shape else 1
    flat = np.arange(size) if size <= k else np.sort(rng.choice(size, size=k, replace=False))
    return [tuple(int(i) for i in np.unravel_index(f, shape)) for f in flat]


def judge(
    target: str, tape: np.ndarray, measured: dict[tuple[Any, ...], Any], tol: float, resolution: float
) -> VerifyEntry:
    """Compare the tape with ``measured[idx] = (central, forward, backward)`` at each checked index.

    An entry fails when |tape - central| / max(1, |central|) exceeds ``tol``, unless the one-sided
    differences disagree by more than ``tol`` too (a kink within eps); below ``resolution`` nothing
    can be told apart from rounding.
    """
    errors, details, unresolved = [], [], 0
    for idx, (central, forward, backward) in measured.items():
        t = float(tape[idx])
        if max(abs(t), abs(central)) < resolution:
            unresolved += 1
            continue
        err = abs(t - central)
        errors.append((err, err / max(abs(central), abs(t), 1e-300) if err else 0.0, err / max(1.0, abs(central))))
        if errors[-1][2] > tol:
            kind = "kink" if abs(forward - backward) > tol * max(1.0, abs(central)) else "FAIL"
            details.append(EntryDetail(tuple(idx), kind, t, central, forward, backward))
    failed = [d for d in details if d.kind == "FAIL"]
    status = "FAIL" if failed else "kink" if details else "unresolved" if unresolved == len(measured) else "ok"
    worst = max((e[2] for e in errors), default=0.0)
    return VerifyEntry(
        target,
        tuple(tape.shape),
        len(measured),
        max((e[0] for e in errors), default=0.0),
        max((e[1] for e in errors), default=0.0),
        worst,
        not failed,
        status,
        unresolved,
        tuple(details),
    )
