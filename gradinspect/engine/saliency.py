"""Saliency maps (``grad --saliency``): per sample, where the input moves the loss.

As tf-keras-vis's ``Saliency`` computes them by default: the gradient of the loss w.r.t. each input,
its absolute value, the maximum over the channel axis (the last axis of an input with 3 or more
dimensions per batch, an image's), then scaled per sample to [0, 1]. With ``smooth`` N > 0 the
gradient is SmoothGrad's: the mean over N copies of the input with Gaussian noise of standard
deviation ``noise`` times the sample's value range. Every sample of the run is mapped, batch by
batch; each map needs one pass (N with SmoothGrad).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradinspect.artifacts.live import input_ends, named_variables
from gradinspect.engine.objective import Objective
from gradinspect.engine.passes import PassRequest, run_pass
from gradinspect.engine.request import GradientRequest
from gradinspect.engine.subjects import KerasSubject
from gradinspect.errors import GradientError

KEY = "saliency/"


@dataclass(frozen=True)
class SaliencyOptions:
    """``smooth``: SmoothGrad's number of noisy copies (0: plain gradients); ``noise``: their noise
    level, a share of each sample's value range; ``seed``: the noise's seed."""

    smooth: int = 0
    noise: float = 0.2
    seed: int = 0


def saliency_maps(request: GradientRequest, options: SaliencyOptions) -> dict[str, np.ndarray]:
    """``saliency/<input>`` -> the maps of every sample, for each floating-point input of a Keras model,
    and ``input/<input>`` -> those samples."""
    model = request.loaded.model
    if request.loaded.loader == "tf.saved_model":
        raise GradientError(f"{request.loaded.artifact.path}: --saliency needs a Keras model (its inputs as layers)")
    ends = input_ends(model)
    names = tuple(s.name for s in request.specs)
    floating = [p for p, end in ends.items() if np.issubdtype(request.arrays[end.name].dtype, np.floating)]
    if not floating:
        raise GradientError("--saliency: the model has no floating-point input to differentiate (token ids have none)")
    subject = KerasSubject(model, ends, tuple(floating), (), names, request.training, named_variables(ends, ()))
    rng = np.random.default_rng(options.seed)
    chunks: dict[str, list[np.ndarray]] = {p: [] for p in floating}
    size = request.plan.batch_size if request.plan else request.inputs.n
    for start in range(0, request.inputs.n, size):
        feeds, objective = request.batch(start, min(start + size, request.inputs.n))
        grads = _mean_gradient(subject, feeds, objective, floating, options, rng)
        for p in floating:
            chunks[p].append(_maps(grads[p]))
    maps = {KEY + ends[p].name: np.concatenate(chunks[p]) for p in floating}
    # The inputs beside their maps (the PNG grid draws both; --save-npz keeps them together).
    inputs = {f"input/{ends[p].name}": request.inputs.rows(0, request.inputs.n)[ends[p].name] for p in floating}
    return {**maps, **inputs}


def _mean_gradient(
    subject: KerasSubject,
    feeds: dict[str, np.ndarray],
    objective: Objective,
    paths: list[str],
    options: SaliencyOptions,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """d loss / d each input (averaged over SmoothGrad's noisy copies)."""
    copies = max(1, options.smooth)
    total: dict[str, np.ndarray] = {}
    for _ in range(copies):
        noisy = dict(feeds)
        if options.smooth:
            for p in paths:
                x = feeds[p.removeprefix("input:")]
                axes = tuple(range(1, x.ndim))
                spread = (x.max(axis=axes, keepdims=True) - x.min(axis=axes, keepdims=True)) * options.noise
                noisy[p.removeprefix("input:")] = (x + rng.normal(size=x.shape) * spread).astype(x.dtype)
        result = run_pass(PassRequest(subject, noisy, objective))
        for tg in result.tensors:
            if tg.grad is not None:
                total[tg.name] = tg.grad.astype(np.float64) + total.get(tg.name, 0.0)
    missing = [p for p in paths if p not in total]
    if missing:
        raise GradientError(f"--saliency: the loss has no gradient w.r.t. {missing[0]}")
    return {p: total[p] / copies for p in paths}


def _maps(grad: np.ndarray) -> np.ndarray:
    """|g|, the maximum over channels for inputs of 3+ dimensions per sample, scaled per sample to [0, 1]."""
    a = np.abs(grad)
    if a.ndim >= 4:
        a = a.max(axis=-1)
    axes = tuple(range(1, a.ndim))
    lo, hi = a.min(axis=axes, keepdims=True), a.max(axis=axes, keepdims=True)
    return np.asarray((a - lo) / np.where(hi > lo, hi - lo, 1.0), np.float32)
