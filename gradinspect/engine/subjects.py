"""What a pass calls: a Keras model recording its chosen layers' outputs by shadowing ``call`` on the
instance (:class:`KerasSubject`, see :func:`recording`), or a SavedModel signature without layers
(:class:`SignatureSubject`); both follow :class:`gradinspect.engine.passes.Subject`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gradinspect.engine.passes import INPUT_PREFIX, Recorded


def keras_regularization(model: Any) -> tuple[Any, int]:
    """A Keras model's ``model.losses`` summed: its layers' weight penalties at the current weights
    (differentiable under the tape) and the activity penalties of its last call."""
    import tensorflow as tf

    losses = [tf.convert_to_tensor(x) for x in (getattr(model, "losses", None) or [])]
    if not losses:
        return None, 0
    return tf.add_n([tf.cast(x, losses[0].dtype) for x in losses]), len(losses)


@dataclass(frozen=True)
class KerasSubject:
    """A Keras model called on its inputs; ``record`` layers' outputs are recorded at every call and
    ``differentiate`` layers' trainable variables get gradients. An InputLayer records its feed."""

    model: Any
    layers: Mapping[str, Any]  # path -> layer, for every recorded or differentiated layer
    record: tuple[str, ...]
    differentiate: tuple[str, ...]
    input_names: tuple[str, ...]
    training: bool = False
    # (layer path, variable name, variable) for every trainable variable of ``differentiate``, named
    # when the subject is made (see :func:`gradinspect.artifacts.live.named_variables`).
    named_variables: tuple[tuple[str, str, Any], ...] = field(default=(), compare=False)
    label: str = "the forward pass"
    watch_variables: bool = False
    # Also record each call's input, under INPUT_PREFIX + path (verify checks d loss / d a layer's input).
    record_inputs: bool = False
    # Layers whose final softmax runs as linear (--loss logit:K): their output is then the logits.
    linear: tuple[Any, ...] = ()

    def variables(self) -> list[tuple[str, str, Any]]:
        return list(self.named_variables)

    def regularization(self) -> tuple[Any, int]:
        return keras_regularization(self.model)

    def forward(self, feeds: dict[str, Any], tapes: list[Any]) -> tuple[list[Any], Recorded]:
        inputs = {p for p in self.record if type(self.layers[p]).__name__ in ("InputLayer", "ModelInput")}
        called = {p: self.layers[p] for p in self.record if p not in inputs}
        # A nested model's InputLayer is never called: the tensor entering it is what its model was
        # called with, recorded at each call of that model (``outer/inner/x`` -> ``outer/inner``).
        nested = {p.rpartition("/")[0] for p in inputs if "/" in p}
        entering: Recorded = {}
        feed = feeds[self.input_names[0]] if len(self.input_names) == 1 else feeds
        given: Recorded | None = {} if self.record_inputs else None
        with linear_softmax(self.linear), recording(called, tapes, given) as calls:
            with recording({m: self.layers[m] for m in nested}, tapes, entering):
                y = self.model(feed, training=self.training)
        for p in inputs:
            if "/" in p:
                calls[p] = _entering(
                    self.layers[p.rpartition("/")[0]], self.layers[p], entering.get(p.rpartition("/")[0])
                )
            else:
                calls[p] = [[feeds.get(self.layers[p].name, feeds[self.input_names[0]])]]
        recorded = {p: calls[p] for p in self.record}
        recorded.update({INPUT_PREFIX + p: calls for p, calls in (given or {}).items()})
        return flatten(y), recorded


def _entering(model: Any, input_layer: Any, calls: list[list[Any]] | None) -> list[list[Any]]:
    """Per call of nested ``model``, the tensor it received for ``input_layer`` (the flattened call
    argument lines up with the flattened ``model.inputs``, as Keras maps them)."""
    names = [_tensor_layer(t) for t in flatten(getattr(model, "inputs", None) or [])]
    index = names.index(input_layer.name) if input_layer.name in names else 0
    return [[given[index]] for given in calls or [] if index < len(given)]


def _tensor_layer(tensor: Any) -> str:
    history = getattr(tensor, "_keras_history", None)
    layer = getattr(history, "operation", None) or getattr(history, "layer", None)
    return str(getattr(layer, "name", None) or getattr(tensor, "name", ""))


@dataclass(frozen=True)
class SignatureSubject:
    """A SavedModel signature called with keyword inputs; the inputs are recorded, and ``scoped``
    variables (``(scope, name, variable)``) get gradients."""

    fn: Any
    scoped: tuple[tuple[str, str, Any], ...]
    label: str = "the signature"
    watch_variables: bool = True

    def variables(self) -> list[tuple[str, str, Any]]:
        return list(self.scoped)

    def regularization(self) -> tuple[Any, int]:
        return None, 0  # a signature has no Keras layers

    def forward(self, feeds: dict[str, Any], tapes: list[Any]) -> tuple[list[Any], Recorded]:
        result = self.fn(**feeds)
        outputs = [result[k] for k in sorted(result)] if isinstance(result, dict) else flatten(result)
        return outputs, {name: [[t]] for name, t in feeds.items()}


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


@contextlib.contextmanager
def linear_softmax(layers: tuple[Any, ...]) -> Iterator[None]:
    """While active, each layer's final softmax is the identity (tf-keras-vis's ``ReplaceToLinear``):
    a ``Softmax`` layer passes its input through, a layer with ``activation=softmax`` is linear."""
    swapped: list[tuple[Any, Any]] = []
    try:
        for layer in layers:
            if type(layer).__name__ == "Softmax":
                object.__setattr__(layer, "call", lambda inputs, *args, **kwargs: inputs)
                swapped.append((layer, None))
            else:
                swapped.append((layer, layer.activation))
                layer.activation = _identity
        yield
    finally:
        for layer, activation in swapped:
            if activation is None:
                with contextlib.suppress(AttributeError):
                    object.__delattr__(layer, "call")
            else:
                layer.activation = activation


def _identity(x: Any) -> Any:
    return x
