"""Record the outputs of chosen layers during one forward pass, by shadowing ``call`` on the instance."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def flatten(value: Any) -> list[Any]:
    """The tensors of a layer output, in order (an LSTM with return_state returns several)."""
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in flatten(item)]
    if isinstance(value, dict):
        return [t for key in sorted(value) for t in flatten(value[key])]
    return [value]


@contextlib.contextmanager
def recording(
    layers: dict[str, Any], tapes: Any, inputs: dict[str, list[list[Any]]] | None = None
) -> Iterator[dict[str, list[list[Any]]]]:
    """While active, every call of each layer appends its flattened outputs to ``calls[name]``.

    Each output is watched by every tape in ``tapes`` (one tape or a list) so that its gradient
    exists even when the layer returns a tensor the tape would not otherwise track (an identity
    in inference mode). With ``inputs``, each call's (flattened) first argument is recorded there
    and watched too, for d loss / d a layer's input. Shadowing the
    instance's ``call`` sees every call of a shared layer and works inside nested and subclassed
    models, where ``keras.Model(inputs, layer.output)`` does not; it is undone in ``finally``.
    """
    tape_list = list(tapes) if isinstance(tapes, (list, tuple)) else [tapes]
    calls: dict[str, list[list[Any]]] = {name: [] for name in layers}
    patched = []
    try:
        for name, layer in layers.items():
            original = layer.call

            def wrapper(*args: Any, __original: Any = original, __name: str = name, **kwargs: Any) -> Any:
                if inputs is not None:
                    given = flatten(args[0] if args else kwargs.get("inputs"))
                    _watch(given, tape_list)
                    inputs.setdefault(__name, []).append(given)
                out = __original(*args, **kwargs)
                tensors = flatten(out)
                _watch(tensors, tape_list)
                calls[__name].append(tensors)
                return out

            object.__setattr__(layer, "call", wrapper)
            patched.append(layer)
        yield calls
    finally:
        for layer in patched:
            with contextlib.suppress(AttributeError):
                object.__delattr__(layer, "call")


def _watch(tensors: list[Any], tapes: list[Any]) -> None:
    for t in tensors:
        if hasattr(t, "dtype") and getattr(t.dtype, "is_floating", False):
            for tape in tapes:
                tape.watch(t)
