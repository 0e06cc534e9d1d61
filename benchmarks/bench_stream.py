"""Streaming many batches: gradinspect against a hand-tuned `tf.function` loop, side by side.

    python benchmarks/bench_stream.py [--model mlp|mobilenet] [--reps 3] [--batch 32]

Builds its own model (an MLP, or MobileNetV2 96x96 from keras.applications with weights=None)
and two HDF5 datasets, one of 50 batches and one of 500, in a temp folder. Then, alternating
rounds so that load on the machine hits every mode alike, times over the 50-batch dataset:

- tuned: a `tf.function(reduce_retracing=True)` forward+backward step per batch, reading the
  HDF5 dataset slice by slice, summing the weight gradients on the host in float64;
- tuned, sums in the step: the same step adding the gradients (cast to float64) into float64
  variables inside the `tf.function`, read on the host once at the end: the other place the
  accumulation could live, at the same precision; and the same traced anew in each run, as a
  script run once pays for its trace (every gradinspect run traces its step);
- eager: the same loop without `tf.function`, for contrast;
- gradinspect, one pair: `inspect_gradients(model, "data.h5:x", [pair], batch_size=B)`: every
  batch, merged as one giant batch (weight gradients, streamed output statistics, noise scale);
- gradinspect --all: the same for every layer.

Peak RSS of gradinspect (one pair) over 50 and over 500 batches is each run's max RSS in a fresh
subprocess. Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build(kind: str, folder: Path, batch: int) -> tuple[Path, Path, Path]:
    """The model and its 50- and 500-batch HDF5 datasets (dataset ``x``)."""
    import h5py
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    if kind == "mobilenet":
        model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=10)
    else:
        x = keras.Input((256,), name="x")
        h = x
        for i in range(4):
            h = keras.layers.Dense(512, activation="relu", name=f"dense_{i}")(h)
        model = keras.Model(x, keras.layers.Dense(10, name="head")(h))
    path = folder / f"{kind}.keras"
    model.save(path)
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    sets = []
    for batches in (50, 500):
        data = folder / f"data{batches}.h5"
        with h5py.File(data, "w") as h5:
            ds = h5.create_dataset("x", shape=(batches * batch, *shape), dtype="float32", chunks=(batch, *shape))
            for b in range(batches):  # written a batch at a time: the 500-batch file may not fit in memory
                ds[b * batch : (b + 1) * batch] = rng.normal(size=(batch, *shape)).astype("float32")
        sets.append(data)
    return path, sets[0], sets[1]


def host_loop(model, data: Path, batch: int, step) -> float:
    """Sum of the batch losses; the weight gradients summed on the host in float64 (as gradinspect does)."""
    import h5py
    import numpy as np

    total, sums = 0.0, None
    with h5py.File(data, "r") as h5:
        ds = h5["x"]
        for start in range(0, ds.shape[0], batch):
            loss, grads = step(ds[start : start + batch])
            arrays = [np.asarray(g, dtype=np.float64) for g in grads]
            sums = arrays if sums is None else [s + a for s, a in zip(sums, arrays)]
            total += float(loss)
    return total


def graph_loop(model, data: Path, batch: int, accumulate) -> float:
    """The same loop, with the weight gradients summed in float64 inside the compiled step."""
    import h5py

    total = 0.0
    import tensorflow as tf

    sums = [tf.Variable(tf.zeros(v.shape, tf.float64), trainable=False) for v in model.trainable_variables]
    with h5py.File(data, "r") as h5:
        ds = h5["x"]
        for start in range(0, ds.shape[0], batch):
            total += float(accumulate(ds[start : start + batch], sums))
    [s.numpy() for s in sums]  # the sums reach the host once, at the end
    return total


def make_accumulating(model):
    """A tf.function step adding each batch's gradients, cast to float64, into float64 variables."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def accumulate(x, sums):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=False))
        for s, g in zip(sums, tape.gradient(loss, model.trainable_variables)):
            s.assign_add(tf.cast(g, tf.float64))
        return loss

    return accumulate


def make_steps(model):
    import tensorflow as tf

    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=False))
        return loss, tape.gradient(loss, model.trainable_variables)

    return step, tf.function(step, reduce_retracing=True)


def modes(model_path: Path, batch: int):
    from gradinspect.artifacts.live import leaf_paths
    from gradinspect.artifacts.loading import load_model
    from gradinspect.commands.grad import inspect_gradients

    loaded = load_model(model_path)
    paths = leaf_paths(loaded.model)
    pair = (paths[len(paths) // 2 - 1], paths[len(paths) // 2])
    eager, tuned = make_steps(loaded.model)
    accumulating = make_accumulating(loaded.model)
    return {
        "tuned tf.function loop": lambda data: host_loop(loaded.model, data, batch, tuned),
        "tuned loop, sums in float64 inside the step": lambda data: graph_loop(loaded.model, data, batch, accumulating),
        "tuned loop, sums in the step, traced in the run": lambda data: graph_loop(
            loaded.model, data, batch, make_accumulating(loaded.model)
        ),
        "eager loop": lambda data: host_loop(loaded.model, data, batch, eager),
        "gradinspect, one pair": lambda data: inspect_gradients(
            loaded, f"{data}:x", [pair], batch_size=batch, loss="sum"
        ),
        "gradinspect --all": lambda data: inspect_gradients(
            loaded, f"{data}:x", all_layers=True, batch_size=batch, loss="sum"
        ),
    }


def peak_rss(model: Path, data: Path, batch: int) -> float:
    cmd = [sys.executable, __file__, "--child", str(model), str(data), "--batch", str(batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("mlp", "mobilenet"), default="mlp")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "DATA"))
    args = ap.parse_args()
    if args.child:  # one gradinspect run over the data, then its max RSS in MiB
        modes(Path(args.child[0]), args.batch)["gradinspect, one pair"](Path(args.child[1]))
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model, data50, data500 = build(args.model, Path(tmp), args.batch)
        runs = modes(model, args.batch)
        for fn in runs.values():  # warm-up: kernels, the tf.function trace
            fn(data50)
        times: dict[str, list[float]] = {m: [] for m in runs}
        for _ in range(args.reps):
            for mode, fn in runs.items():
                start = time.perf_counter()
                fn(data50)
                times[mode].append(time.perf_counter() - start)
        rss50, rss500 = peak_rss(model, data50, args.batch), peak_rss(model, data500, args.batch)
    base = statistics.median(times["tuned tf.function loop"])
    print(f"{args.model}, 50 batches of {args.batch}, {args.reps} rounds, median seconds; {os.cpu_count()} CPUs")
    print()
    print("| mode | median s | ratio to tuned loop |")
    print("|---|--:|--:|")
    for mode, ts in times.items():
        med = statistics.median(ts)
        print(f"| {mode} | {med:.3f} | {med / base:.2f} |")
    print()
    print(
        f"peak RSS, gradinspect one pair: 50 batches {rss50:.0f} MiB, 500 batches {rss500:.0f} MiB "
        f"({rss500 / rss50:.2f}x)"
    )


if __name__ == "__main__":
    main()
