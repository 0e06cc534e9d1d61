"""The operations of the ``--stage1``/``--stage2`` expression language on two kinds of array:
TensorFlow tensors (the run) and numpy arrays (the shape check before the run, which must refuse
what TensorFlow refuses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class Backend:
    """The operations an expression needs, on one kind of array."""

    def __init__(self, ops: dict[str, Callable[..., Any]]) -> None:
        self.ops = ops


def tf_backend() -> Backend:
    import tensorflow as tf

    def red(fn: Callable[..., Any]) -> Callable[..., Any]:
        return lambda x, axis=None: fn(x, axis=axis)

    def norm(x: Any, axis: Any = None) -> Any:
        # The L2 norm over all entries (or along `axis`), written out so that its gradient at 0
        # is defined the same way as sqrt's.
        return tf.sqrt(tf.reduce_sum(tf.square(x), axis=axis))

    return Backend(
        {
            "sum": red(tf.reduce_sum),
            "mean": red(tf.reduce_mean),
            "norm": norm,
            "square": tf.square,
            "sqrt": tf.sqrt,
            "abs": tf.abs,
            "exp": tf.exp,
            "log": tf.math.log,
            "tanh": tf.tanh,
            "relu": tf.nn.relu,
            "stop_gradient": tf.stop_gradient,
            "matmul": tf.matmul,
            "maximum": tf.maximum,
            "minimum": tf.minimum,
            "transpose": tf.transpose,
            "add": tf.add,
            "sub": tf.subtract,
            "mul": tf.multiply,
            "div": tf.divide,
            "pow": tf.pow,
            "neg": tf.negative,
            "const": lambda v: tf.constant(v, tf.float32),
        }
    )


def np_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # tf.matmul needs rank >= 2 on both sides; the shape check must refuse what TF refuses.
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError("matmul needs matrices (rank 2 or more)")
    return np.asarray(np.matmul(a, b))


NUMPY = Backend(
    {
        "sum": lambda x, axis=None: np.sum(x, axis=axis),
        "mean": lambda x, axis=None: np.mean(x, axis=axis),
        "norm": lambda x, axis=None: np.sqrt(np.sum(np.square(x), axis=axis)),
        "square": np.square,
        "sqrt": np.sqrt,
        "abs": np.abs,
        "exp": np.exp,
        "log": np.log,
        "tanh": np.tanh,
        "relu": lambda x: np.maximum(x, 0),
        "stop_gradient": lambda x: x,
        "matmul": np_matmul,
        "maximum": np.maximum,
        "minimum": np.minimum,
        "transpose": np.transpose,
        "add": np.add,
        "sub": np.subtract,
        "mul": np.multiply,
        "div": np.divide,
        "pow": np.power,
        "neg": np.negative,
        "const": lambda v: np.float32(v),
    }
)
