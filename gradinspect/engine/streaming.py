"""Many batches, one answer: the passes of every batch merged as if one batch held every sample.

Weight gradients are those of the loss over the whole data: the sum of the batch gradients for
sum-type losses (``sum``, ``sumsq``, ``unit:K``, ``logprob:*``), the sample-weighted mean for
mean-type ones (``mean``, Keras losses, which average over samples). Output gradients are per
sample; their statistics are streamed (:class:`StreamingStats`), and for a mean-type loss each
batch's are scaled by its share of the samples, as the giant batch's would be. Over the k full
batches of size B, per variable, the "simple" gradient noise scale of McCandlish et al. (2018).
Stage-2 losses are summed over the batches (see :class:`StageSums`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from gradinspect.engine.compiled import CompiledStep, Summing, VariableSums, compilable, wants_compiled
from gradinspect.engine.distributed import DistributedStep
from gradinspect.engine.losses import BUILTIN, KERAS_LOSSES
from gradinspect.engine.objective import Objective
from gradinspect.engine.passes import PassRequest, PassResult, TensorGradient, VariableGradient, run_pass
from gradinspect.engine.plans import BatchPlan
from gradinspect.engine.stages import StageSums
from gradinspect.engine.stats import ActivationSums, StreamingStats
from gradinspect.errors import GradientError
from gradinspect.report import Noise, output_key

_MEAN_TYPE = frozenset({"mean", *KERAS_LOSSES})

# Receives each batch's per-sample output gradients by --save-h5 key, the batch's first row, all rows.
OutputSink = Callable[[dict[str, np.ndarray], int, int], None]
Progress = Callable[[int, int, int], None]


def is_mean_type(objective: Objective) -> bool:
    """True when every term averages over samples, False when every one sums; mixed is refused."""
    kinds = {spec in _MEAN_TYPE for spec in objective.ran}
    kinds |= {t.spec in _MEAN_TYPE for t in objective.terms if t.spec not in ("auto", *BUILTIN)}
    if len(kinds) > 1:
        raise GradientError(
            "a loss that sums over samples and one that averages cannot be merged over several batches; "
            "give --batch-size large enough for one batch"
        )
    return kinds == {True}


def execute(
    make: Callable[[int, int], PassRequest],
    n: int,
    plan: BatchPlan | None,
    progress: Progress | None = None,
    sink: OutputSink | None = None,
    compile_mode: str = "auto",
    strategy: Any = None,
) -> tuple[PassResult, int | None, Noise | None]:
    """One pass over all ``n`` samples, or (with a plan of several batches) every batch merged.

    ``sink`` gets the per-sample output gradients of each batch as it is done.
    Returns the result, the number of batches (None for one pass) and the model's noise scale."""
    if plan is None or plan.n <= plan.batch_size:
        result = run_pass(make(0, n))
        if sink is not None:
            sink(output_arrays(result.tensors, 1.0), 0, n)
        return result, None, None
    return run_batches(make, plan, progress, sink, (compile_mode, strategy))


def run_batches(
    make: Callable[[int, int], PassRequest],
    plan: BatchPlan,
    progress: Progress | None = None,
    sink: OutputSink | None = None,
    compiled: tuple[str, Any] = ("auto", None),
) -> tuple[PassResult, int, Noise | None]:
    """Run every batch of ``plan`` (``make(start, stop)`` builds its request) and merge the results.

    The first batch runs eagerly; by ``compiled`` = (``--compile`` mode, a tf.distribute strategy
    or None; see :func:`wants_compiled`) the others run as one compiled step, on one device or
    across the strategy's. Returns the merged result, the number of batches, and the whole
    model's noise scale.
    """
    merged: _Merged | None = None
    step: Callable[[PassRequest], PassResult] = run_pass
    total = len(list(plan.ranges()))
    for start, stop in plan.ranges():
        request = make(start, stop)
        result = step(request)
        if merged is None:
            merged = _Merged(result, plan, is_mean_type(request.loss), request.activations)
            step = _later_step(request, result, compiled, total, merged)
        merged.add(result, stop - start)
        if sink is not None:
            sink(output_arrays(result.tensors, merged.share(stop - start)), start, merged.used)
        if progress is not None:
            progress(merged.batches, total, stop)  # (batches done, total, samples done)
    assert merged is not None
    if isinstance(step, CompiledStep):
        merged.absorb(step.sums.collect())
    return merged.result(), merged.batches, merged.total_noise()


def _later_step(
    request: PassRequest, first: PassResult, compiled: tuple[str, Any], batches: int, merged: _Merged
) -> Callable[[PassRequest], PassResult]:
    mode, strategy = compiled
    if strategy is not None:
        if not compilable(request):
            raise GradientError("--devices runs the compiled step, which needs a Keras model without --stage2")
        return DistributedStep(request, first, strategy, merged.mean_type)
    if request.activations is None and wants_compiled(mode, request, batches):  # it keeps no activations
        return CompiledStep(request, first, Summing(merged.mean_type, merged.plan.batch_size, merged.used))
    return run_pass


def output_arrays(tensors: tuple[TensorGradient, ...], scale: float) -> dict[str, np.ndarray]:
    """Each tensor's per-sample gradient (times ``scale``) by its ``--save-h5`` key; none without one."""
    calls: dict[tuple[str, int], int] = {}
    for tg in tensors:
        calls[tg.name, tg.call] = calls.get((tg.name, tg.call), 0) + 1
    return {
        output_key(tg.name, tg.call, tg.index, calls[tg.name, tg.call]): tg.grad if scale == 1.0 else tg.grad * scale
        for tg in tensors
        if tg.grad is not None
    }


class _Merged:
    def __init__(
        self, first: PassResult, plan: BatchPlan, mean_type: bool, activations: Mapping[str, str] | None = None
    ) -> None:
        self.first, self.plan, self.mean_type = first, plan, mean_type
        self.acts = [
            ActivationSums(activations.get(tg.name)) if activations is not None else None for tg in first.tensors
        ]
        self.used = plan.samples
        self.loss = 0.0
        self.batches = 0
        self.stats = [StreamingStats() for _ in first.tensors]
        self.grads: list[np.ndarray | None] = [None for _ in first.variables]
        self.noise = [_NoiseSums() for _ in first.variables]
        self.stages = [StageSums(out) for out in first.staged]

    def share(self, rows: int) -> float:
        """A batch's weight in the giant batch: its share of the samples for a mean-type loss, else 1."""
        return rows / self.used if self.mean_type else 1.0

    def add(self, result: PassResult, rows: int) -> None:
        if len(result.tensors) != len(self.first.tensors) or len(result.variables) != len(self.first.variables):
            raise GradientError("a later batch recorded other layers or calls than the first; the model is not static")
        share = self.share(rows)
        self.batches += 1
        for sums, out in zip(self.stages, result.staged):
            sums.add(out)
        self.loss += result.loss_value * share
        for stats, acts, tg in zip(self.stats, self.acts, result.tensors):
            if tg.grad is not None:
                stats.update(tg.grad * share if self.mean_type else tg.grad)
            if acts is not None and tg.tensor.dtype.is_floating:
                acts.update(tg.tensor)
        for i, vg in enumerate(result.variables):
            if vg.grad is None or result.variables_summed:
                continue
            g = vg.grad.astype(np.float64)
            held = self.grads[i]
            self.grads[i] = g * share if held is None else held + g * share
            if rows == self.plan.batch_size:
                # g_b: the gradient of the batch's per-sample-mean loss.
                self.noise[i].add(g if self.mean_type else g / rows)

    def absorb(self, sums: list[VariableSums | None]) -> None:
        """Add the weight-gradient sums a compiled step kept (see :class:`GraphSums`)."""
        for i, vs in enumerate(sums):
            if vs is not None:
                self.grads[i] = vs.total if self.grads[i] is None else self.grads[i] + vs.total
                self.noise[i].absorb(vs)

    def result(self) -> PassResult:
        tensors = tuple(
            TensorGradient(
                tg.name,
                tg.call,
                tg.index,
                tg.tensor,
                None,
                s.result() if s.count else None,
                self.used,
                None if a is None else a.result(),
            )
            for tg, s, a in zip(self.first.tensors, self.stats, self.acts)
        )
        b = self.plan.batch_size
        variables = tuple(
            VariableGradient(vg.group, vg.name, vg.variable, None if g is None else g.astype(np.float32), n.estimate(b))
            for vg, g, n in zip(self.first.variables, self.grads, self.noise)
        )
        staged = tuple(sums.result() for sums in self.stages)
        return replace(self.first, loss_value=self.loss, tensors=tensors, variables=variables, staged=staged)

    def total_noise(self) -> Noise | None:
        return _NoiseSums.combined(self.noise, self.plan.batch_size)


class _NoiseSums:
    """Σ g_b and Σ |g_b|² over the full batches: enough for S and |G|² without keeping each g_b."""

    def __init__(self) -> None:
        self.k = 0
        self.total: np.ndarray | None = None
        self.squares = 0.0

    def add(self, g: np.ndarray) -> None:
        self.k += 1
        self.total = g.copy() if self.total is None else self.total + g
        self.squares += float(np.dot(g.ravel(), g.ravel()))

    def absorb(self, sums: VariableSums) -> None:
        if sums.full_batches:
            self.k += sums.full_batches
            self.total = sums.noise.copy() if self.total is None else self.total + sums.noise
            self.squares += sums.squares

    def parts(self) -> tuple[float, float] | None:
        """(S, |G|²) for this tensor, or None with fewer than two full batches."""
        if self.k < 2 or self.total is None:
            return None
        mean = self.total / self.k
        mean_sq = float(np.dot(mean.ravel(), mean.ravel()))
        spread = (self.squares - self.k * mean_sq) / (self.k - 1)
        return spread, mean_sq - spread / self.k

    def estimate(self, batch_size: int) -> Noise | None:
        if self.k == 0:
            return None
        return _noise(self.parts(), self.k, batch_size)

    @staticmethod
    def combined(sums: list[_NoiseSums], batch_size: int) -> Noise | None:
        parts = [s.parts() for s in sums if s.k]
        if not parts:
            return None
        k = max(s.k for s in sums)
        known = [p for p in parts if p is not None]
        if len(known) < len(parts):
            return _noise(None, k, batch_size)
        return _noise((sum(p[0] for p in known), sum(p[1] for p in known)), k, batch_size)


# Float32 rounding (2**-23, with a margin for the sums of a backward pass) squared: a spread S below
# this share of |G|² is what rounding alone makes of identical gradients, not noise.
_ROUNDING_SHARE = (64 * 2.0**-23) ** 2


def _noise(parts: tuple[float, float] | None, k: int, batch_size: int) -> Noise:
    if parts is None:
        return Noise(None, None, k, batch_size, "needs at least 2 full batches")
    spread, signal = parts
    if signal <= 0 or spread <= 0:
        why = "|G|² ≤ 0: the batches disagree more than they agree" if signal <= 0 else "the batches agree exactly"
        return Noise(None, None, k, batch_size, why)
    if spread <= _ROUNDING_SHARE * signal:  # an SNR of 1e10 and more would be rounding, not a measurement
        return Noise(None, None, k, batch_size, "the batches agree to float32 rounding: no noise to measure")
    return Noise(batch_size * spread / signal, signal / spread, k, batch_size)
