"""Stage-2 losses over several batches: the sum of the per-batch stage-2 losses and gradients."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli, stream_grad


@pytest.fixture(scope="module")
def data(stream_mlp):
    """A tanh MLP, 70 samples and targets: batches of 16 leave a short last batch of 6."""
    return stream_mlp[0]


def _run(d, *args):
    report, arrays = stream_grad(d, *args)
    return report["pairs"][0]["stage2"], {k: v for k, v in arrays.items() if "stage" in k}


@pytest.mark.parametrize(
    "args",
    [
        ("--stage2", "seed"),
        ("--stage2", "seed", "--through"),
        ("--target", "t.npy", "--stage1", "sum(square(y - target))", "--stage2", "sum(grad * act)", "--through"),
    ],
    ids=["seed", "seed-through", "target"],
)
def test_stage2_summing_over_samples_is_the_giant_batch(data, args):
    """Expressions that sum over samples give, summed over batches, the one-batch numbers: rtol 1e-5,
    and for entries that cancel to near zero an absolute 1e-6 of the tensor's largest entry (float32
    sums of 70 terms taken in another order)."""
    args = tuple(str(data / a) if a == "t.npy" else a for a in args)
    giant, giant_arrays = _run(data, "--batch-size", "70", *args)
    streamed, streamed_arrays = _run(data, "--batch-size", "16", *args)
    assert "batches" not in giant and streamed["batches"] == 5
    assert streamed["value"] == pytest.approx(giant["value"], rel=1e-5)
    assert streamed["stage1"]["value"] == pytest.approx(giant["stage1"]["value"], rel=1e-5)
    assert streamed["stage1"]["grad_shape"] == giant["stage1"]["grad_shape"] == [70, 4]
    for stat, value in giant["stage1"]["grad_stats"].items():
        assert streamed["stage1"]["grad_stats"][stat] == pytest.approx(value, rel=1e-5, abs=1e-9), stat
    weights = [k for k in giant_arrays if k.startswith("stage2/weight/")]
    assert weights and sorted(weights) == sorted(k for k in streamed_arrays if k.startswith("stage2/weight/"))
    for key in weights:
        scale = float(np.abs(giant_arrays[key]).max())
        np.testing.assert_allclose(streamed_arrays[key], giant_arrays[key], rtol=1e-5, atol=1e-6 * scale, err_msg=key)
    assert "stage1/grad/hidden" in giant_arrays and "stage1/grad/hidden" not in streamed_arrays
    for a, b in zip(giant["weights"], streamed["weights"]):
        assert b["plain_norm"] == pytest.approx(a["plain_norm"], rel=1e-5)


def test_a_per_batch_penalty_is_summed_over_the_batches(data, keras):
    """grad-penalty takes a norm over the batch, so over batches it is Σ_b (|g_b| - 1)², computed
    here directly with two tapes per batch in float64."""
    import tensorflow as tf

    streamed, arrays = _run(data, "--batch-size", "16", "--stage2", "grad-penalty", "--through")
    model = keras.saving.load_model(data / "m.keras")
    hidden = model.get_layer("hidden")
    kernel = tf.constant(hidden.kernel.numpy(), tf.float64)
    bias = tf.constant(hidden.bias.numpy(), tf.float64)
    x = np.load(data / "x.npy").astype(np.float64)
    total, dk, db = 0.0, np.zeros(kernel.shape), np.zeros(bias.shape)
    for start in range(0, 70, 16):
        with tf.GradientTape() as outer:
            outer.watch([kernel, bias])
            act = tf.tanh(x[start : start + 16] @ kernel + bias)
            g = 2.0 * act  # d sum(square(act)) / d act
            penalty = (tf.norm(g) - 1.0) ** 2
        k, b = outer.gradient(penalty, [kernel, bias])
        total, dk, db = total + float(penalty), dk + k.numpy(), db + b.numpy()
    assert streamed["batches"] == 5 and streamed["value"] == pytest.approx(total, rel=1e-5)
    np.testing.assert_allclose(arrays["stage2/weight/hidden/kernel"], dk, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(arrays["stage2/weight/hidden/bias"], db, rtol=1e-4, atol=1e-6)
    out = {w["layer"]: w for w in streamed["weights"]}["out"]
    assert out["stats"] is None and "does not depend" in out["missing"]


def test_the_table_says_the_stage2_value_is_summed_over_batches(data):
    result = run_cli(
        "grad", data / "m.keras", "--from", "hidden", "--to", "out", "--input", data / "x.npy",
        "--batch-size", "16", "--stage2", "seed",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "g held constant (no --through); summed over 5 batches" in result.stdout


def test_bad_data_for_a_streamed_run_is_one_line_and_writes_nothing(data, tmp_path):
    """A truncated HDF5 input, targets of another sample count, --max-batches 0: exit 2, one line,
    and no --save-h5 file (nor a temporary one) left behind."""
    import h5py
    from conftest import assert_one_error_line

    x = np.load(data / "x.npy")
    with h5py.File(tmp_path / "full.h5", "w") as h5:
        h5["x"] = np.tile(x, (20, 1))  # 1400 samples, so the cut falls inside the data
    whole = (tmp_path / "full.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(whole[: len(whole) * 6 // 10])
    np.save(tmp_path / "t69.npy", np.zeros((69, 3), "float32"))
    base = ("grad", data / "m.keras", "--all", "--batch-size", "16", "--save-h5", tmp_path / "out.h5")
    cases = [
        (("--input", f"{tmp_path / 'cut.h5'}:x"), "truncated file"),
        (("--input", data / "x.npy", "--loss", "mse", "--target", tmp_path / "t69.npy"), "has 69 samples"),
        (("--input", data / "x.npy", "--max-batches", "0"), "'--max-batches': 0 is not in the range"),
    ]
    for args, needle in cases:
        line = assert_one_error_line(run_cli(*base, *args))
        assert needle in line, line
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.h5", "full.h5", "t69.npy"]
