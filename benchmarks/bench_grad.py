"""Speed and memory of `inspect_gradients` against a hand-written GradientTape, side by side.

    python benchmarks/bench_grad.py [--reps 5] [--batch 16] [--size 96]

Builds MobileNetV2 (weights=None, offline) and saves it as .keras in a temp folder, then times,
alternating rounds so that load on the machine hits all modes alike:

- baseline: one hand-written `tf.GradientTape`, one `tape.gradient(loss, all trainable variables)`;
- gradinspect --all: `inspect_gradients(..., all_layers=True)` (every layer's output and
  variables, consecutive pairs), on the already-loaded model: one forward, one backward, plus
  the statistics of every gradient;
- gradinspect, one pair: one layer pair from the middle of the network;
- per-pair tapes: what the article's recipe costs for the same pairs (a new tape per pair),
  measured on the first 8 pairs and scaled, for reference.

Peak memory is each mode's max RSS in a fresh subprocess (`--mode`). Prints a Markdown table.
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


def build(path: Path, size: int) -> None:
    import keras

    keras.utils.set_random_seed(0)
    keras.applications.MobileNetV2(input_shape=(size, size, 3), weights=None, classes=10).save(path)


def setup(path: Path, batch: int, size: int):
    import numpy as np

    from gradinspect.artifacts.live import leaf_paths
    from gradinspect.artifacts.loading import load_model

    loaded = load_model(path)
    x = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    paths = leaf_paths(loaded.model)
    return loaded, x, list(zip(paths[:-1], paths[1:]))


def run_baseline(loaded, x, pairs) -> None:
    import tensorflow as tf

    model = loaded.model
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=False))
    tape.gradient(loss, model.trainable_variables)


def run_gradinspect(loaded, x, pairs) -> None:
    from gradinspect.commands.grad import inspect_gradients

    inspect_gradients(loaded, x, all_layers=True)


def run_gradinspect_one_pair(loaded, x, pairs) -> None:
    from gradinspect.commands.grad import inspect_gradients

    inspect_gradients(loaded, x, [pairs[len(pairs) // 2]])


def run_per_pair(loaded, x, pairs, limit: int = 8) -> float:
    """Seconds for the article's recipe over ``limit`` pairs (a tape and a forward per pair)."""
    from gradinspect.commands.grad import inspect_gradients

    start = time.perf_counter()
    for pair in pairs[:limit]:
        inspect_gradients(loaded, x, [pair])
    return time.perf_counter() - start


MODES = {
    "baseline": run_baseline,
    "gradinspect --all": run_gradinspect,
    "gradinspect, one pair": run_gradinspect_one_pair,
}


def peak_rss(mode: str, path: Path, batch: int, size: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--mode", mode, "--model", str(path), "--batch", str(batch), "--size", str(size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--mode")
    ap.add_argument("--model")
    args = ap.parse_args()
    if args.mode:  # child: one warm-up and one measured call, then report max RSS in MiB
        loaded, x, pairs = setup(Path(args.model), args.batch, args.size)
        MODES[args.mode](loaded, x, pairs)
        MODES[args.mode](loaded, x, pairs)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mobilenetv2.keras"
        build(path, args.size)
        loaded, x, pairs = setup(path, args.batch, args.size)
        for fn in MODES.values():  # warm-up: first calls build kernels
            fn(loaded, x, pairs)
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.reps):
            for mode, fn in MODES.items():
                start = time.perf_counter()
                fn(loaded, x, pairs)
                times[mode].append(time.perf_counter() - start)
        per_pair = run_per_pair(loaded, x, pairs) / 8 * len(pairs)
        rss = {m: peak_rss(m, path, args.batch, args.size) for m in MODES}
    base = statistics.median(times["baseline"])
    print(
        f"MobileNetV2 {args.size}x{args.size}, batch {args.batch}, {len(pairs)} layer pairs, "
        f"{args.reps} rounds, median seconds; {os.cpu_count()} CPUs"
    )
    print()
    print("| mode | median s | ratio to baseline | peak RSS MiB |")
    print("|---|--:|--:|--:|")
    for mode in MODES:
        med = statistics.median(times[mode])
        print(f"| {mode} | {med:.3f} | {med / base:.2f} | {rss[mode]:.0f} |")
    print(f"| per-pair tapes (article recipe, scaled from 8 pairs) | {per_pair:.1f} | {per_pair / base:.0f} | — |")


if __name__ == "__main__":
    main()
