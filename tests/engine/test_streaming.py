"""Many batches, one answer: every batch runs and merges into the numbers of one giant batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli, stream_grad


@pytest.fixture(scope="module")
def data(stream_mlp):
    """A small tanh MLP and 70 samples: batches of 16 leave a short last batch of 6."""
    return stream_mlp


@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_streamed_batches_equal_one_giant_batch(data, loss):
    d, _ = data
    giant, giant_arrays = stream_grad(d, "--loss", loss, "--batch-size", "70")
    streamed, streamed_arrays = stream_grad(d, "--loss", loss, "--batch-size", "16")
    assert giant["inputs"].get("batches") is None and streamed["inputs"]["batches"] == 5
    assert streamed["loss"]["value"] == pytest.approx(giant["loss"]["value"], rel=1e-5)
    for key in ("weight/hidden/kernel", "weight/hidden/bias", "weight/out/kernel", "weight/out/bias"):
        np.testing.assert_allclose(streamed_arrays[key], giant_arrays[key], rtol=1e-4, atol=1e-7, err_msg=key)
    for a, b in zip(giant["pairs"][0]["outputs"], streamed["pairs"][0]["outputs"]):
        assert a["shape"] == b["shape"] == [70, a["shape"][1]]
        for stat, value in a["stats"].items():
            assert b["stats"][stat] == pytest.approx(value, rel=1e-4, abs=1e-9), (a["layer"], stat)


def test_noise_scale_against_a_direct_computation(data):
    """b_simple = B·S/|G|² and snr = |G|²/S over the full batches (the short last one left out)."""
    import tensorflow as tf

    d, model = data
    report, _ = stream_grad(d, "--loss", "sum", "--batch-size", "16")
    x = np.load(d / "x.npy")
    kernel = model.get_layer("out").kernel
    per_batch = []
    for start in range(0, 64, 16):  # the 4 full batches
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x[start : start + 16]))
        per_batch.append(tape.gradient(loss, kernel).numpy().astype(np.float64) / 16)
    g = np.stack(per_batch)
    mean = g.mean(axis=0)
    spread = np.sum((g - mean) ** 2) / (len(g) - 1)
    signal = np.sum(mean**2) - spread / len(g)
    noise = next(w["noise"] for w in report["pairs"][0]["weights"] if w["layer"] == "out" and w["variable"] == "kernel")
    assert noise["batches"] == 4 and noise["batch_size"] == 16
    assert noise["b_simple"] == pytest.approx(16 * spread / signal, rel=1e-4)
    assert noise["snr"] == pytest.approx(signal / spread, rel=1e-4)
    assert report["noise"]["batches"] == 4


def test_max_batches_and_the_default_batch(data):
    d, _ = data
    stopped, _ = stream_grad(d, "--batch-size", "16", "--max-batches", "2")
    assert stopped["inputs"]["batches"] == 2 and stopped["pairs"][0]["outputs"][0]["shape"][0] == 32
    default, _ = stream_grad(d)  # 70 samples: batches of 32
    assert default["inputs"]["batch_size"] == 32 and default["inputs"]["batches"] == 3
    assert default["noise"]["batches"] == 2  # two full batches of 32; the last 6 samples are left out of it


def test_noise_needs_two_full_batches(data):
    d, _ = data
    report, _ = stream_grad(d, "--batch-size", "40")  # one full batch and a short one
    weight = report["pairs"][0]["weights"][0]
    assert weight["noise"]["b_simple"] is None and "at least 2 full batches" in weight["noise"].get("reason", "")


def test_noise_at_float32_rounding_is_not_a_measurement(data, tmp_path):
    """Batches of near-copies of one sample (1e-6 apart) give gradients that agree to float32
    rounding: no SNR (it read ~1e12 before), a reason in JSON, and the table's notes say why the
    Noise B and SNR cells are empty."""
    import json

    d, _ = data
    base = np.load(d / "x.npy")[:1]
    near = np.repeat(base, 64, axis=0) + 1e-6 * np.random.default_rng(0).normal(size=(64, base.shape[1]))
    np.save(tmp_path / "near.npy", near.astype("float32"))
    args = ("grad", d / "m.keras", "--from", "hidden", "--to", "out", "--input", tmp_path / "near.npy")
    result = run_cli(*args, "--batch-size", "16", "-f", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    kernel = next(w for w in report["pairs"][0]["weights"] if (w["layer"], w["variable"]) == ("hidden", "kernel"))
    assert kernel["noise"]["snr"] is None and "float32 rounding" in kernel["noise"]["reason"]
    table = run_cli(*args, "--batch-size", "16").stdout
    assert "Noise B and SNR are — for" in table and "float32 rounding" in table


def test_hdf5_and_npy_inputs_stream_to_the_same_numbers(data, tmp_path):
    import h5py

    d, _ = data
    x = np.load(d / "x.npy")
    with h5py.File(tmp_path / "x.h5", "w") as h5:
        h5["x"] = x
    from_npy, npy_arrays = stream_grad(d, "--batch-size", "16")
    result = run_cli(
        "grad", d / "m.keras", "--from", "hidden", "--to", "out", "--input", f"{tmp_path / 'x.h5'}:x",
        "--batch-size", "16", "--save-npz", tmp_path / "h.npz", "-f", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    with np.load(tmp_path / "h.npz") as saved:
        np.testing.assert_array_equal(saved["weight/out/kernel"], npy_arrays["weight/out/kernel"])
    assert json.loads(result.stdout)["inputs"]["fingerprint"] == from_npy["inputs"]["fingerprint"]


def test_a_memory_mapped_npy_is_never_read_whole(keras, tmp_path):
    """200 MB of samples through batches of 500: peak memory stays far below the file's size,
    while the same data as .npz (read whole) takes it all."""
    import subprocess
    import sys

    x = keras.Input((1000,), name="x")
    keras.Model(x, keras.layers.Dense(2, name="d")(x)).save(tmp_path / "wide.keras")
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(50_000, 1000))
    big[:] = 0.5
    big.flush()
    del big
    np.savez(tmp_path / "big.npz", x=np.load(tmp_path / "big.npy", mmap_mode="r"))
    # The child warms up (TensorFlow, the model), resets its peak RSS (/proc/self/clear_refs), runs
    # the command and reports the new peak: what the run itself needed.
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom gradinspect.cli import main\n"
        "def run(path):\n"
        "    r = CliRunner().invoke(main, ['grad', sys.argv[1], '--all', '--input', path, '--batch-size', '500',"
        " '-f', 'json'])\n    assert r.exit_code == 0, r.output\n"
        "run(sys.argv[3])\nopen('/proc/self/clear_refs', 'w').write('5')\nrun(sys.argv[2])\n"
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
    )
    np.save(tmp_path / "small.npy", np.zeros((4, 1000), dtype=np.float32))

    def peak_kib(path):
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "wide.keras"), str(path), str(tmp_path / "small.npy")],
            capture_output=True, text=True, check=True, timeout=300,
        )  # fmt: skip
        return int(out.stdout.strip().splitlines()[-1])

    lazy, whole = peak_kib(tmp_path / "big.npy"), peak_kib(tmp_path / "big.npz")
    assert whole - lazy > 150 * 1024, (lazy, whole)  # the 200 MB file was never held in memory


def test_bad_data_in_a_later_batch_is_one_error_line(data, tmp_path):
    """A file cut short after its header promised more rows, and a later slice of another shape."""
    from conftest import assert_one_error_line

    d, _ = data
    full = (d / "x.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(full[: len(full) - 5 * 20])  # the last 5 rows gone
    line = assert_one_error_line(
        run_cli("grad", d / "m.keras", "--all", "--input", tmp_path / "cut.npy", "--batch-size", "16")
    )
    assert "needed, but the file holds only" in line
    import h5py

    with h5py.File(tmp_path / "ragged.h5", "w") as h5:
        h5["x"] = np.load(d / "x.npy")[:, :4]  # 4 features where the model takes 5
    line = assert_one_error_line(
        run_cli("grad", d / "m.keras", "--all", "--input", f"{tmp_path / 'ragged.h5'}:x", "--batch-size", "16")
    )
    assert "expects shape (None, 5)" in line


def test_progress_is_reported_after_every_batch(data):
    import gradinspect

    d, _ = data
    calls = []
    gradinspect.inspect_gradients(
        d / "m.keras", str(d / "x.npy"), all_layers=True, batch_size=16, progress=lambda *a: calls.append(a)
    )
    assert calls == [(1, 5, 16), (2, 5, 32), (3, 5, 48), (4, 5, 64), (5, 5, 70)]
    calls.clear()
    gradinspect.inspect_gradients(
        d / "m.keras",
        str(d / "x.npy"),
        all_layers=True,
        batch_size=16,
        max_batches=2,
        progress=lambda *a: calls.append(a),
    )
    assert calls == [(1, 2, 16), (2, 2, 32)]


def _stderr_on_a_terminal(d, *args):
    """Run the real CLI with stderr on a pseudo-terminal (stdout a pipe); return (stdout, terminal text)."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    cmd = [sys.executable, "-m", "gradinspect", "grad", str(d / "m.keras"), "--all", "--input", str(d / "x.npy")]
    proc = subprocess.Popen(
        [*cmd, "--batch-size", "8", "-f", "json", *args], stdout=subprocess.PIPE, stderr=follower, env=os.environ
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out = proc.stdout.read()
    assert proc.wait() == 0, seen
    os.close(leader)
    return out, seen.decode(errors="replace")


def test_a_terminal_sees_progress_on_stderr_and_quiet_silences_it(data):
    d, _ = data
    out, terminal = _stderr_on_a_terminal(d)
    assert json.loads(out)["inputs"]["batches"] == 9  # stdout stays pure data
    # The display names the step running (loading, forward pass, batches, …) once the job has run a second.
    steps = ("loading the model", "reading the inputs", "forward pass", "backward pass", "batches", "statistics")
    assert any(step in terminal for step in steps) and "9/9" in terminal and "samples/s" in terminal
    out, terminal = _stderr_on_a_terminal(d, "--quiet")
    assert json.loads(out)["inputs"]["batches"] == 9 and "9/9" not in terminal


def test_save_h5_holds_the_giant_batch_per_sample_gradients(data, tmp_path):
    import h5py

    d, _ = data
    _, giant = stream_grad(d, "--loss", "mean", "--batch-size", "70")
    stream_grad(d, "--loss", "mean", "--batch-size", "16", "--save-h5", tmp_path / "g.h5")
    with h5py.File(tmp_path / "g.h5", "r") as h5:
        assert sorted(h5["output"]) == ["hidden", "out"]  # the pair --from hidden --to out
        for key in ("output/hidden", "output/out"):
            assert h5[key].shape == giant[key].shape == (70, h5[key].shape[1])
            # mean loss: each batch's per-sample gradients scaled by its share, as in the giant batch
            np.testing.assert_allclose(h5[key][:], giant[key], rtol=1e-5, atol=1e-9, err_msg=key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.h5"]  # no temporary file left


def test_a_failed_run_leaves_no_h5_file(data, tmp_path):
    from conftest import assert_one_error_line

    d, _ = data
    full = (d / "x.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(full[: len(full) - 5 * 20])  # fails in the 5th batch
    out = tmp_path / "g.h5"
    args = ("grad", d / "m.keras", "--all", "--input", tmp_path / "cut.npy", "--batch-size", "16", "--save-h5", out)
    assert_one_error_line(run_cli(*args))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.npy"]  # neither g.h5 nor a temporary file
    out.write_bytes(b"mine")
    line = assert_one_error_line(run_cli(*args[:4], d / "x.npy", *args[5:]))
    assert "--save-h5" in line and "--force" in line and out.read_bytes() == b"mine"


def test_the_readme_dataset_run_equals_one_tape_over_all_samples(keras):
    """The README's run on sample_models/mlp_dataset.h5: 20 batches, the numbers of one whole-data tape."""
    import h5py
    import tensorflow as tf
    from conftest import SAMPLES

    model = keras.saving.load_model(SAMPLES / "mlp.keras")
    with h5py.File(SAMPLES / "mlp_dataset.h5", "r") as h5:
        x = h5["x"][:]
    result = run_cli(
        "grad", SAMPLES / "mlp.keras", "--from", "dense_1", "--to", "dense_2",
        "--input", f"{SAMPLES / 'mlp_dataset.h5'}:x", "-f", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["inputs"]["batches"] == 20 and report["inputs"]["batch_size"] == 32
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x))
    bias = model.get_layer("dense_2").bias
    expected = tape.gradient(loss, bias).numpy().astype(np.float64)
    weight = next(w for w in report["pairs"][0]["weights"] if w["layer"] == "dense_2" and w["variable"] == "bias")
    assert report["loss"]["value"] == pytest.approx(float(loss), rel=1e-5)
    assert weight["stats"]["norm"] == pytest.approx(np.linalg.norm(expected), rel=1e-5)


@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_the_compiled_step_gives_the_eager_numbers(data, loss):
    """--compile always (one tf.function for batches 2..5, the short last one included) = --compile never."""
    d, _ = data
    eager, eager_arrays = stream_grad(d, "--loss", loss, "--batch-size", "16", "--compile", "never")
    compiled, compiled_arrays = stream_grad(d, "--loss", loss, "--batch-size", "16", "--compile", "always")
    assert compiled["loss"]["value"] == pytest.approx(eager["loss"]["value"], rel=1e-6)
    # Grappler fuses and reorders float32 ops in the graph: agreement to a few float32 ulps of the
    # largest entry (the sums over 16 rows each differ by some rounding), not bit for bit.
    for key, value in eager_arrays.items():
        scale = float(np.abs(value).max())
        np.testing.assert_allclose(compiled_arrays[key], value, rtol=1e-5, atol=2e-6 * scale, err_msg=key)
    for a, b in zip(eager["pairs"][0]["outputs"], compiled["pairs"][0]["outputs"]):
        for stat, value in a["stats"].items():
            assert b["stats"][stat] == pytest.approx(value, rel=1e-5, abs=1e-9), (a["layer"], stat)
    assert compiled["noise"]["b_simple"] == pytest.approx(eager["noise"]["b_simple"], rel=1e-5)


def test_the_compiled_step_with_a_target_and_an_embedding(keras, tmp_path):
    """Integer token inputs and a Keras loss with targets: compiled = eager = one giant batch."""
    keras.utils.set_random_seed(3)
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(20, 4, name="embed")(tokens)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    keras.Model(tokens, keras.layers.Dense(2, name="head")(h)).save(tmp_path / "e.keras")
    rng = np.random.default_rng(1)
    np.save(tmp_path / "t.npy", rng.integers(0, 20, size=(50, 6)).astype("int32"))
    np.save(tmp_path / "y.npy", rng.normal(size=(50, 2)).astype("float32"))
    runs = {}
    for mode, batch in (("never", "50"), ("never", "8"), ("always", "8")):
        npz = tmp_path / f"{mode}{batch}.npz"
        result = run_cli(
            "grad", tmp_path / "e.keras", "--all", "--input", tmp_path / "t.npy", "--target", tmp_path / "y.npy",
            "--loss", "mse", "--batch-size", batch, "--compile", mode, "--save-npz", npz, "-f", "json",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        with np.load(npz) as saved:
            runs[mode, batch] = json.loads(result.stdout)["loss"]["value"], dict(saved)
    giant_loss, giant = runs["never", "50"]
    for mode in ("never", "always"):
        loss, arrays = runs[mode, "8"]
        assert loss == pytest.approx(giant_loss, rel=1e-5)
        for key in ("weight/embed/embeddings", "weight/head/kernel", "weight/head/bias"):
            np.testing.assert_allclose(arrays[key], giant[key], rtol=1e-4, atol=1e-7, err_msg=(mode, key))


def test_two_logical_cpu_devices_give_the_single_device_numbers(data, tmp_path):
    """--devices 2 in a fresh process (TensorFlow fixes its devices when it starts) = one device."""
    import os
    import subprocess
    import sys

    d, _ = data
    single, single_arrays = stream_grad(d, "--loss", "mean", "--batch-size", "16", "--compile", "always")
    npz = tmp_path / "two.npz"
    args = ["grad", str(d / "m.keras"), "--all", "--input", str(d / "x.npy"), "--loss", "mean", "--batch-size", "16"]
    proc = subprocess.run(
        [sys.executable, "-m", "gradinspect", *args, "--devices", "2", "--save-npz", str(npz), "-f", "json"],
        capture_output=True, text=True, env=os.environ, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    two = json.loads(proc.stdout)
    assert any("--devices 2" in n and "CPU:0, CPU:1" in n for n in two["notes"])
    assert two["loss"]["value"] == pytest.approx(single["loss"]["value"], rel=1e-5)
    with np.load(npz) as saved:
        for key in ("weight/hidden/kernel", "weight/hidden/bias", "weight/out/kernel", "weight/out/bias"):
            scale = float(np.abs(single_arrays[key]).max())
            np.testing.assert_allclose(saved[key], single_arrays[key], rtol=1e-5, atol=2e-6 * scale, err_msg=key)
    out = next(p for p in two["pairs"] if p["from"] == "hidden")["outputs"][0]
    ref = single["pairs"][0]["outputs"][0]
    assert out["layer"] == ref["layer"] == "hidden"
    for stat, value in ref["stats"].items():
        assert out["stats"][stat] == pytest.approx(value, rel=1e-5, abs=1e-9), stat
    assert two["noise"]["b_simple"] == pytest.approx(single["noise"]["b_simple"], rel=1e-4)


def test_devices_beyond_the_machine_or_after_tensorflow_started_are_one_error_line(data):
    import os

    from conftest import assert_one_error_line

    d, _ = data
    args = ("grad", d / "m.keras", "--all", "--input", d / "x.npy", "--batch-size", "16", "--devices")
    line = assert_one_error_line(run_cli(*args, str((os.cpu_count() or 1) + 1)))
    assert "give at most" in line
    line = assert_one_error_line(run_cli(*args, "2"))  # this test process started TensorFlow long ago
    assert "TensorFlow already started" in line
    line = assert_one_error_line(run_cli(*args, "2", "--compile", "never"))
    assert "drop --compile never" in line
    line = assert_one_error_line(run_cli(*args, "2", "--stage2", "seed"))
    assert "--stage2 runs eagerly" in line


@pytest.mark.parametrize("kind", ["npy", "h5"])
def test_targets_stream_aligned_with_the_inputs(data, tmp_path, kind):
    """--target read batch by batch, --samples applied to it as to the inputs: one giant batch's mse."""
    import h5py
    import tensorflow as tf

    d, model = data
    y = np.random.default_rng(4).normal(size=(70, 3)).astype("float32")
    if kind == "npy":
        np.save(tmp_path / "y.npy", y)
        spec = str(tmp_path / "y.npy")
    else:
        with h5py.File(tmp_path / "y.h5", "w") as h5:
            h5["y"] = y
        spec = f"{tmp_path / 'y.h5'}:y"
    report, arrays = stream_grad(d, "--loss", "mse", "--target", spec, "--samples", "10:60", "--batch-size", "16")
    assert report["inputs"]["batches"] == 4  # 50 samples: 16, 16, 16, 2
    x = np.load(d / "x.npy")[10:60]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x) - y[10:60]))  # mse over the 50 selected rows
    expected = tape.gradient(loss, model.get_layer("out").kernel).numpy()
    assert report["loss"]["value"] == pytest.approx(float(loss), rel=1e-5)
    np.testing.assert_allclose(arrays["weight/out/kernel"], expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("batch", [None, "16"])
@pytest.mark.parametrize("rows", [64, 71, 5000])
def test_a_target_with_other_samples_than_the_inputs_is_refused(data, tmp_path, rows, batch):
    """A longer --target was cut to the inputs' 70 samples without a word; now, like a shorter one,
    it is refused, and --samples selecting the same window of both is the way to use part of it."""
    from conftest import assert_one_error_line

    d, _ = data
    np.save(tmp_path / "y.npy", np.zeros((rows, 3), "float32"))
    args = ("grad", d / "m.keras", "--all", "--input", d / "x.npy", "--loss", "mse", "--target", tmp_path / "y.npy")
    args += ("--batch-size", batch) if batch else ()
    line = assert_one_error_line(run_cli(*args))
    assert f"has {rows} samples, the input has 70; they must match" in line and "--samples" in line
    if rows > 70:
        result = run_cli(*args, "--samples", "0:70", "--format", "json")
        assert result.exit_code == 0, result.stderr


def test_a_target_larger_than_max_memory_is_read_a_batch_at_a_time(keras, tmp_path):
    """Input and target each declare more than --max-memory: read whole they would be refused."""
    keras.utils.set_random_seed(5)
    x_in = keras.Input((5,), name="x")
    model = keras.Model(x_in, keras.layers.Dense(3, name="out")(x_in))
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(80_000, 5)).astype("float32"), rng.normal(size=(80_000, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)  # 0.9 MiB
    result = run_cli(
        "grad", tmp_path / "m.keras", "--all", "--input", tmp_path / "x.npy", "--target", tmp_path / "y.npy",
        "--loss", "mse", "--batch-size", "8000", "--max-memory", "900K", "-f", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    expected = np.mean(
        (x.astype(np.float64) @ model.get_layer("out").kernel.numpy() + model.get_layer("out").bias.numpy() - y) ** 2
    )
    assert report["inputs"]["batches"] == 10
    assert report["loss"]["value"] == pytest.approx(expected, rel=1e-5)
    from conftest import assert_one_error_line

    np.savez(tmp_path / "y.npz", target=y)  # an .npz is read whole: refused, naming --target
    line = assert_one_error_line(
        run_cli(
            "grad",
            tmp_path / "m.keras",
            "--all",
            "--input",
            tmp_path / "x.npy",
            "--target",
            tmp_path / "y.npz",
            "--loss",
            "mse",
            "--batch-size",
            "8000",
            "--max-memory",
            "900K",
        )  # fmt: skip
    )
    assert line.startswith(f"Error: --target {tmp_path / 'y.npz'}: ") and "--max-memory" in line


def test_check_says_how_many_batches_ran(data):
    d, _ = data
    args = ("check", d / "m.keras", "--input", d / "x.npy", "--batch-size", "16")
    result = run_cli(*args, "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["inputs"]["batches"] == 5
    for fmt in ("table", "markdown"):
        result = run_cli(*args, "-f", fmt)
        assert result.exit_code == 0 and "5 batches of 16" in result.stdout, (fmt, result.stdout[:300])
