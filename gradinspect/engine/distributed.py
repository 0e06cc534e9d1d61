"""``--devices N``: the compiled step under ``tf.distribute.MirroredStrategy``.

Each batch is split by rows into N parts, one per device; every device runs the compiled step
(:func:`~gradinspect.engine.compiled.step_function`) on its part with the model's variables, and
the host adds the parts back together: losses and weight gradients summed, per-sample output
gradients concatenated in row order. A mean-type loss averages over the device's rows, so each
part's loss is scaled by its share of the batch's rows: the sums are then the batch's own numbers.

Devices are the first N GPUs, or, without a GPU, N logical devices carved out of the CPU (what
the tests use on a CPU-only machine). TensorFlow fixes its devices when it starts, so they are
set up before the model is loaded.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from gradinspect.artifacts.loading import quiet_tensorflow
from gradinspect.engine.compiled import as_result, batch_tensors, failed, step_function
from gradinspect.engine.passes import PassRequest, PassResult, run_pass, to_numpy
from gradinspect.errors import UsageProblem


def device_strategy(n: int) -> Any:
    """A MirroredStrategy over ``n`` devices (GPUs, else logical CPU devices); UsageProblem if there are fewer.

    Call before the model is loaded: logical CPU devices can only be made before TensorFlow starts."""
    cores = os.cpu_count() or 1

    def carve(tf: Any) -> None:
        if tf.config.list_physical_devices("GPU") or n > cores:
            return
        cpu = tf.config.list_physical_devices("CPU")[0]
        with contextlib.suppress(RuntimeError):  # already started: checked below
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)

    quiet_tensorflow(setup=carve)
    import tensorflow as tf

    carve(tf)  # when TensorFlow was imported before (the Python API after other TensorFlow work)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if n > len(gpus):
            raise UsageProblem(f"--devices {n}: this machine has {len(gpus)} GPU(s); give at most {len(gpus)}")
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(n)])
    if n > cores:
        raise UsageProblem(f"--devices {n}: this machine has no GPU and {cores} CPU core(s); give at most {cores}")
    have = len(tf.config.list_logical_devices("CPU"))
    if have < n:
        raise UsageProblem(
            f"--devices {n}: TensorFlow already started with {have} CPU device(s) in this process; "
            "ask for devices before any other TensorFlow work"
        )
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])


def devices_note(strategy: Any) -> str:
    """What the report says about ``--devices``."""
    devices = ", ".join(d.rsplit("device:", 1)[-1] for d in strategy.extended.worker_devices)
    return (
        f"--devices {strategy.num_replicas_in_sync}: over several batches, those after the first run compiled "
        f"across {devices} (MirroredStrategy), each split by rows"
    )


class DistributedStep:
    """Callable on a batch's :class:`PassRequest`: its :class:`PassResult`, computed across devices."""

    def __init__(self, first_request: PassRequest, first: PassResult, strategy: Any, mean_type: bool) -> None:
        import tensorflow as tf

        self.first, self.strategy, self.mean_type = first, strategy, mean_type
        step = step_function(first_request, first)
        self._fn = tf.function(lambda f, t, s: strategy.run(step, args=(f, t, s)), reduce_retracing=True)

    def __call__(self, request: PassRequest) -> PassResult:
        import tensorflow as tf

        n = self.strategy.num_replicas_in_sync
        feeds, targets = batch_tensors(request)
        rows = int(next(iter(feeds.values())).shape[0])
        if rows < n:  # a last batch smaller than the devices: not worth splitting
            return run_pass(request)
        bounds = np.linspace(0, rows, n + 1).astype(int)
        parts = list(zip(bounds[:-1], bounds[1:]))

        def per_device(values: Any) -> Any:
            return self.strategy.experimental_distribute_values_from_function(
                lambda ctx: tf.nest.map_structure(lambda v: v[slice(*parts[ctx.replica_id_in_sync_group])], values)
            )

        scales = [float(b - a) / rows if self.mean_type else 1.0 for a, b in parts]
        scale = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(scales[ctx.replica_id_in_sync_group], tf.float32)
        )
        try:
            loss, grads = self._fn(per_device(feeds), per_device(targets), scale)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise failed(request, exc) from exc
        return as_result(self.first, self._total(loss), self._gathered(grads))

    def _total(self, loss: Any) -> float:
        return float(sum(np.float64(v.numpy()) for v in self.strategy.experimental_local_results(loss)))

    def _gathered(self, grads: list[Any]) -> list[np.ndarray | None]:
        n_tensors = len(self.first.tensors)
        out: list[np.ndarray | None] = []
        for i, g in enumerate(grads):
            results = [] if g is None else self.strategy.experimental_local_results(g)
            local = [to_numpy(x) for x in results]
            if not local:
                out.append(None)
            elif i < n_tensors:  # per-sample: the devices' rows, in order
                out.append(np.concatenate(local, axis=0))
            else:
                out.append(np.sum(local, axis=0, dtype=np.float64).astype(local[0].dtype))
        return out
