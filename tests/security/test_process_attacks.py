"""A graph that attacks the process: loops forever, aborts, or fills memory. The TensorFlow work runs
in a supervised child; gradinspect itself reports one line, writes nothing and leaves nothing.

These tests run the installed ``gradinspect`` executable (the child process is the default there),
each with a private TMPDIR that must be empty afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import SAMPLES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def attacks(keras, tmp_path_factory):
    """tf.Module SavedModels whose serving function loops forever, aborts, or allocates 3.6 GB."""
    import tensorflow as tf

    d = tmp_path_factory.mktemp("attacks")
    spec = [tf.TensorSpec([None, 2], tf.float32, name="x")]

    class Loop(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(2.0)

        @tf.function(input_signature=spec)
        def serve(self, x):
            n = tf.while_loop(lambda i: tf.constant(True), lambda i: i + 1, [tf.constant(0)])
            return {"y": x * self.w + tf.cast(n, tf.float32)}

    class Abort(Loop):
        @tf.function(input_signature=spec)
        def serve(self, x):
            abort = tf.raw_ops.Abort(error_msg="gradinspect test abort")
            with tf.control_dependencies([abort]):  # the output needs it: every pipeline runs it
                return {"y": tf.identity(x * self.w)}

    class Hog(Loop):
        @tf.function(input_signature=spec)
        def serve(self, x):
            big = tf.fill(tf.stack([tf.shape(x)[0] * 450_000_000]), 1.0)  # 3.6 GB for 2 samples
            return {"y": x * self.w + tf.reduce_sum(big)}

    for name, cls in (("loop", Loop), ("abort", Abort), ("hog", Hog)):
        module = cls()
        tf.saved_model.save(module, str(d / name), signatures={"serving_default": module.serve})
    return d


def _cli(*args, tmp, timeout=120, **popen):
    """Run the gradinspect executable with the TensorFlow child on and a private TMPDIR."""
    env = {k: v for k, v in os.environ.items() if k != "GRADINSPECT_IN_PROCESS"}
    env["TMPDIR"] = str(tmp)
    cmd = [sys.executable, "-m", "gradinspect", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **popen)


def _one_error_line(result, code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("gradinspect: --unsafe")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def scratch(tmp_path):
    """(a private TMPDIR, an output directory): both must hold nothing after a failed run."""
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    yield tmp, out
    assert list(tmp.iterdir()) == [], "the run left files in TMPDIR"
    assert list(out.iterdir()) == [], "a failed run wrote an output"


def _outputs(out):
    return ("-o", out / "report.json", "-f", "json", "--save-npz", out / "g.npz")


def test_a_graph_that_loops_forever_is_stopped_at_the_timeout(attacks, scratch):
    tmp, out = scratch
    start = time.monotonic()
    result = _cli("grad", attacks / "loop", "--all", "--random", "2", "--timeout", "8", *_outputs(out), tmp=tmp)
    _one_error_line(result, 2, "passed --timeout 8s", "--timeout 0 for no limit")
    assert time.monotonic() - start < 60


def test_the_loop_really_never_ends_in_plain_tensorflow(attacks, tmp_path):
    code = (
        f"import tensorflow as tf; m = tf.saved_model.load({str(attacks / 'loop')!r}); "
        "m.signatures['serving_default'](x=tf.ones([2, 2])); print('returned')"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=10)


def test_abort_is_refused_and_under_unsafe_kills_only_the_child(attacks, scratch):
    tmp, out = scratch
    refused = _cli("grad", attacks / "abort", "--all", "--random", "2", tmp=tmp)
    _one_error_line(refused, 2, "refused to load", "'Abort'")
    result = _cli("grad", attacks / "abort", "--all", "--random", "2", "--unsafe", *_outputs(out), tmp=tmp)
    _one_error_line(result, 2, "killed by signal 6 (SIGABRT) inside TensorFlow")


def test_a_graph_that_allocates_past_max_memory_is_stopped(attacks, scratch):
    tmp, out = scratch
    result = _cli("grad", attacks / "hog", "--all", "--random", "2", "--max-memory", "1G", *_outputs(out), tmp=tmp)
    line = _one_error_line(result, 2)
    assert "memory" in line, line


def test_the_hog_allocates_that_much_without_the_limit(attacks, tmp_path):
    """Run in plain TensorFlow, the graph's peak resident memory passes 3 GB (the limit is what stops it)."""
    code = (
        f"import resource, tensorflow as tf; m = tf.saved_model.load({str(attacks / 'hog')!r}); "
        "m.signatures['serving_default'](x=tf.ones([2, 2])); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout.split()[-1]) * 1024 > 3 * 1024**3


@pytest.mark.parametrize("signum,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_stops_the_run_with_one_line_and_leaves_nothing(attacks, scratch, signum, code, word):
    tmp, out = scratch
    env = {k: v for k, v in os.environ.items() if k != "GRADINSPECT_IN_PROCESS"}
    env["TMPDIR"] = str(tmp)
    args = ["grad", attacks / "loop", "--all", "--random", "2", "--timeout", "0", *_outputs(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradinspect", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not any(tmp.glob("gradinspect-run-*/gradinspect-*")) and time.monotonic() < deadline:
        time.sleep(0.2)  # wait until the child has made its private model copy
    time.sleep(3)  # ... and is inside the loop
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    assert stdout == ""
    assert stderr.strip().splitlines() == [f"Error: {word}"]


def test_a_normal_run_through_the_child_writes_its_outputs(scratch, tmp_path):
    """The default path end to end: the child computes, the parent writes, TMPDIR is left clean."""
    import json

    import numpy as np

    tmp, out = scratch
    result = _cli(
        "grad",
        SAMPLES / "mlp.keras",
        "--from",
        "dense_1",
        "--to",
        "dense_2",
        "--input",
        SAMPLES / "mlp_input.npy",
        "--save-npz",
        tmp_path / "g.npz",
        "--save-h5",
        tmp_path / "g.h5",
        "-f",
        "json",
        tmp=tmp,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    saved = np.load(tmp_path / "g.npz")
    kernel = saved["weight/dense_2/kernel"]
    assert kernel.shape == (3, 2)
    entry = next(
        w for p in report["pairs"] for w in p["weights"] if (w["layer"], w["variable"]) == ("dense_2", "kernel")
    )
    assert entry["stats"]["norm"] == pytest.approx(float(np.linalg.norm(kernel)), rel=1e-6)
    import h5py

    with h5py.File(tmp_path / "g.h5") as h5:
        assert h5["output/dense_1"].shape[0] == len(np.load(SAMPLES / "mlp_input.npy"))


def test_layers_of_a_model_only_a_loader_can_list_runs_in_the_child(scratch):
    import json

    tmp, _ = scratch
    result = _cli("layers", SAMPLES / "mlp_savedmodel", "-f", "json", tmp=tmp)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"]["loader"] == "tf_keras"
    assert [layer["name"] for layer in report["layers"]][-1] == "dense_3"
