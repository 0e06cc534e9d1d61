"""Derive a layer's output shape from its config and input shapes, for the layers we know.

Used by the no-TensorFlow ``layers`` listing when the file does not record a shape. For any
layer or configuration not handled here the answer is ``None`` (shown empty), never a guess.
"""

from __future__ import annotations

import math
from typing import Any

Shape = tuple[Any, ...]  # tuple[int | None, ...]

_SAME_SHAPE = frozenset(
    """Activation Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D GaussianNoise
    GaussianDropout AlphaDropout BatchNormalization SyncBatchNormalization LayerNormalization
    GroupNormalization UnitNormalization Normalization ReLU LeakyReLU PReLU ELU Softmax
    ThresholdedReLU ActivityRegularization Masking Rescaling""".split()
)
_MERGE_SAME = frozenset("Add Subtract Multiply Average Maximum Minimum".split())


def infer(class_name: str, config: dict[str, Any], inputs: list[Shape | None]) -> Any:
    """Output shape (a tuple, or a list of tuples for several outputs) or ``None`` if unknown."""
    if not inputs or any(s is None for s in inputs):
        return None
    try:
        return _infer(class_name, config, [tuple(s) for s in inputs])  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError):
        return None


def _infer(cls: str, c: dict[str, Any], ins: list[Shape]) -> Any:
    x = ins[0]
    if cls in _SAME_SHAPE:
        return x
    if cls in _MERGE_SAME:
        return x if all(len(s) == len(x) for s in ins) else None
    if cls == "Dense":
        return x[:-1] + (int(c["units"]),)
    if cls == "Flatten":
        rest = x[1:]
        return (x[0], math.prod(rest)) if all(d is not None for d in rest) else (x[0], None)
    if cls == "Reshape":
        target = list(c["target_shape"])
        if -1 in target:
            known = math.prod(d for d in target if d != -1)
            total = math.prod(x[1:]) if all(d is not None for d in x[1:]) else None
            target[target.index(-1)] = total // known if total is not None else None
        return (x[0], *target)
    if cls == "Permute":
        return (x[0], *(x[d] for d in c["dims"]))
    if cls == "RepeatVector":
        return (x[0], int(c["n"]), *x[1:])
    if cls == "Embedding":
        return x + (int(c["output_dim"]),)
    if cls == "Concatenate":
        axis = int(c.get("axis", -1)) % len(x)
        dims = [s[axis] for s in ins]
        total = sum(dims) if all(d is not None for d in dims) else None
        return x[:axis] + (total,) + x[axis + 1 :]
    if cls in (
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "DepthwiseConv2D",
        "SeparableConv2D",
        "SeparableConv1D",
        "DepthwiseConv1D",
    ):
        return _conv(cls, c, x)
    if cls.startswith(("MaxPooling", "AveragePooling", "MaxPool", "AvgPool")):
        return _pool(c, x)
    if cls.startswith(("GlobalAveragePooling", "GlobalMaxPooling")):
        channels_last = c.get("data_format", "channels_last") != "channels_first"
        if c.get("keepdims"):
            spatial = (1,) * (len(x) - 2)
            return (x[0], *spatial, x[-1]) if channels_last else (x[0], x[1], *spatial)
        return (x[0], x[-1] if channels_last else x[1])
    if cls in ("LSTM", "GRU", "SimpleRNN"):
        return _rnn(c, x, int(c["units"]), states=2 if cls == "LSTM" else 1)
    if cls == "Bidirectional":
        return _bidirectional(c, x)
    if cls == "TimeDistributed":
        inner = c["layer"]
        out = infer(inner["class_name"], inner["config"], [(x[0],) + x[2:]])
        return (out[0], x[1], *out[1:]) if isinstance(out, tuple) else None
    if cls in ("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "UpSampling1D", "UpSampling2D", "UpSampling3D"):
        return _resize(cls, c, x)
    return None


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    return tuple(int(v) for v in value)


def _spatial(x: Shape, c: dict[str, Any]) -> tuple[bool, Shape]:
    channels_last = c.get("data_format", "channels_last") != "channels_first"
    return channels_last, (x[1:-1] if channels_last else x[2:])


def _out_len(size: int | None, k: int, s: int, d: int, padding: str) -> int | None:
    if size is None:
        return None
    if padding == "same":
        return -(-size // s)
    if padding == "causal":
        return -(-size // s)
    eff = (k - 1) * d + 1
    return (size - eff) // s + 1


def _conv(cls: str, c: dict[str, Any], x: Shape) -> Shape:
    channels_last, spatial = _spatial(x, c)
    n = len(spatial)
    ks = _tuple(c["kernel_size"], n)
    st = _tuple(c.get("strides", 1), n)
    dl = _tuple(c.get("dilation_rate", 1), n)
    pad = str(c.get("padding", "valid")).lower()
    out_sp = tuple(_out_len(spatial[i], ks[i], st[i], dl[i], pad) for i in range(n))
    in_ch = x[-1] if channels_last else x[1]
    if cls.startswith("Depthwise"):
        ch = None if in_ch is None else in_ch * int(c.get("depth_multiplier", 1))
    else:
        ch = int(c["filters"])
    return (x[0], *out_sp, ch) if channels_last else (x[0], ch, *out_sp)


def _pool(c: dict[str, Any], x: Shape) -> Shape:
    channels_last, spatial = _spatial(x, c)
    n = len(spatial)
    ks = _tuple(c["pool_size"], n)
    strides = c.get("strides") or c["pool_size"]
    st = _tuple(strides, n)
    pad = str(c.get("padding", "valid")).lower()
    out_sp = tuple(_out_len(spatial[i], ks[i], st[i], 1, pad) for i in range(n))
    return (x[0], *out_sp, x[-1]) if channels_last else (x[0], x[1], *out_sp)


def _rnn(c: dict[str, Any], x: Shape, units: int, states: int) -> Any:
    out = (x[0], x[1], units) if c.get("return_sequences") else (x[0], units)
    if c.get("return_state"):
        return [out] + [(x[0], units)] * states
    return out


def _bidirectional(c: dict[str, Any], x: Shape) -> Any:
    inner = c["layer"]
    if inner["class_name"] not in ("LSTM", "GRU", "SimpleRNN") or inner["config"].get("return_state"):
        return None
    one = _rnn(inner["config"], x, int(inner["config"]["units"]), 1)
    mode = c.get("merge_mode", "concat")
    if mode == "concat":
        return one[:-1] + (one[-1] * 2,)
    if mode in ("sum", "mul", "ave"):
        return one
    return None


def _resize(cls: str, c: dict[str, Any], x: Shape) -> Shape:
    channels_last, spatial = _spatial(x, c)
    n = len(spatial)
    if cls.startswith("UpSampling"):
        size = _tuple(c.get("size", 2), n)
        out_sp = tuple(None if d is None else d * f for d, f in zip(spatial, size))
    else:
        pad = c.get("padding", 1)
        if isinstance(pad, int):
            pairs = [(pad, pad)] * n
        else:
            pairs = [(p, p) if isinstance(p, int) else tuple(p) for p in pad]
            if n == 1 and len(pairs) == 2 and all(isinstance(p, int) for p in pad):
                pairs = [tuple(pad)]
        out_sp = tuple(None if d is None else d + a + b for d, (a, b) in zip(spatial, pairs))
    return (x[0], *out_sp, x[-1]) if channels_last else (x[0], x[1], *out_sp)
