"""Cost of running the TensorFlow work in the supervised child process, as whole CLI runs.

Alternates `gradinspect grad …` with the child (the default) and with GRADINSPECT_IN_PROCESS=1,
on the same model and input, and prints the medians and their ratio.

    python benchmarks/bench_isolation.py --reps 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"


def _run(in_process: bool, args: list[str]) -> float:
    env = {**os.environ, "GRADINSPECT_IN_PROCESS": "1" if in_process else "0"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gradinspect", *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--model", default=str(SAMPLES / "cnn.keras"))
    parser.add_argument("--input", default=str(SAMPLES / "cnn_input.npy"))
    opts = parser.parse_args()
    args = ["grad", opts.model, "--all", "--input", opts.input, "-f", "json"]
    child, inproc = [], []
    for _ in range(opts.reps):
        child.append(_run(False, args))
        inproc.append(_run(True, args))
    c, i = statistics.median(child), statistics.median(inproc)
    print(f"child process: median {c:.2f} s; in-process: median {i:.2f} s; ratio {c / i:.2f} ({opts.reps} reps each)")


if __name__ == "__main__":
    main()
