"""Make the small, deterministic sample models and inputs in this folder.

Run from the repository root:  python sample_models/make_samples.py
Weights come from fixed seeds, so the models (and every gradient computed on them) are the
same on every run; the archives differ only in the save date Keras writes into them.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent


def mlp(keras):
    """The article's two-layer model grown by one layer: x(2) -> dense_1(3) -> dense_2(2) -> dense_3(1)."""
    keras.utils.set_random_seed(0)
    x = keras.Input((2,), name="x")
    h = keras.layers.Dense(3, activation="tanh", name="dense_1")(x)
    h = keras.layers.Dense(2, activation="tanh", name="dense_2")(h)
    y = keras.layers.Dense(1, name="dense_3")(h)
    return keras.Model(x, y, name="mlp")


def article(keras):
    """The article's model: x(2) -> dense_1 = Dense(3, no bias) -> dense_2 = Dense(2, no bias)."""
    keras.utils.set_random_seed(4)
    x = keras.Input((2,), name="x")
    h = keras.layers.Dense(3, use_bias=False, name="dense_1")(x)
    y = keras.layers.Dense(2, use_bias=False, name="dense_2")(h)
    return keras.Model(x, y, name="article")


def cnn(keras):
    """A small Sequential CNN with BatchNormalization, input 8x8x1, 3 classes."""
    keras.utils.set_random_seed(1)
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            L.Conv2D(4, 3, padding="same", name="conv1"),
            L.BatchNormalization(name="bn1"),
            L.ReLU(name="relu1"),
            L.MaxPooling2D(2, name="pool1"),
            L.Conv2D(8, 3, name="conv2"),
            L.Flatten(name="flatten"),
            L.Dense(3, activation="softmax", name="head"),
        ],
        name="cnn",
    )
    # Give the batch-norm layer non-trivial statistics, as a trained model would have.
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(1)
    bn.moving_mean.assign(rng.normal(0.0, 0.1, 4).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 1.5, 4).astype("float32"))
    return model


def multi_input(keras):
    """Two named inputs joined by a Concatenate: features(4) and context(3) -> hidden(5) -> out(2)."""
    keras.utils.set_random_seed(2)
    L = keras.layers
    a = keras.Input((4,), name="features")
    b = keras.Input((3,), name="context")
    h = L.Concatenate(name="concat")([L.Dense(4, activation="relu", name="feat_dense")(a), b])
    h = L.Dense(5, activation="tanh", name="hidden")(h)
    y = L.Dense(2, name="out")(h)
    return keras.Model({"features": a, "context": b}, y, name="multi_input")


def tf_keras_mlp(tf_keras):
    """The mlp architecture in tf.keras (Keras 2), for the SavedModel sample."""
    tf_keras.utils.set_random_seed(3)
    L = tf_keras.layers
    x = tf_keras.Input((2,), name="x")
    h = L.Dense(3, activation="tanh", name="dense_1")(x)
    h = L.Dense(2, activation="tanh", name="dense_2")(h)
    y = L.Dense(1, name="dense_3")(h)
    return tf_keras.Model(x, y, name="mlp_tf_keras")


def mlp_dataset(path: Path) -> None:
    """640 samples for mlp (HDF5 dataset ``x``): 20 batches of 32, the streamed example."""
    import h5py

    rng = np.random.default_rng(5)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("x", data=rng.normal(size=(640, 2)).astype("float32"))


def cnn_export(keras) -> None:
    """cnn.keras exported with model.export(): a SavedModel without Keras metadata, same weights."""
    exported = HERE / "cnn_export"
    shutil.rmtree(exported, ignore_errors=True)
    keras.saving.load_model(HERE / "cnn.keras").export(exported, verbose=False)


def main() -> None:
    import keras
    import tf_keras

    rng = np.random.default_rng(0)
    model = mlp(keras)
    model.save(HERE / "mlp.keras")
    model.save(HERE / "mlp.h5")
    np.save(HERE / "mlp_input.npy", rng.normal(size=(4, 2)).astype("float32"))
    mlp_dataset(HERE / "mlp_dataset.h5")

    article(keras).save(HERE / "article.keras")
    np.save(HERE / "article_input.npy", np.array([[1, 2], [3, 4]], dtype="float32"))

    cnn(keras).save(HERE / "cnn.keras")
    np.save(HERE / "cnn_input.npy", rng.normal(size=(4, 8, 8, 1)).astype("float32"))

    multi_input(keras).save(HERE / "multi_input.keras")
    np.savez(
        HERE / "multi_input.npz",
        features=rng.normal(size=(4, 4)).astype("float32"),
        context=rng.normal(size=(4, 3)).astype("float32"),
    )

    saved = HERE / "mlp_savedmodel"
    shutil.rmtree(saved, ignore_errors=True)
    tf_keras_mlp(tf_keras).save(saved, save_format="tf")
    np.save(HERE / "mlp_savedmodel_input.npy", rng.normal(size=(4, 2)).astype("float32"))

    exported = HERE / "mlp_export"
    shutil.rmtree(exported, ignore_errors=True)
    mlp(keras).export(exported, verbose=False)
    cnn_export(keras)
    print("wrote", ", ".join(sorted(p.name for p in HERE.iterdir() if p.name != Path(__file__).name)))


if __name__ == "__main__":
    main()
