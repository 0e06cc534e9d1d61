"""What a model's config says, as one value: its layers, nesting, edges, inputs and outputs.

Built once per file by :func:`gradinspect.artifacts.config_walk.walk_config`, in the same pass that
reads the config and opens the weights (:mod:`gradinspect.artifacts.formats`), and kept on the
``Artifact``. The static listing, the safety bounds, the ``--random`` draw (declared shapes, token
vocabularies) and the reasons a layer has no gradient all read it; nothing re-walks the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradinspect.report import InputSpec, LayerRow

Shape = tuple[Any, ...]


@dataclass(frozen=True)
class ConfigGraph:
    """A Sequential or Functional model's config, walked the way Keras walks ``model.layers``.

    ``rows`` are the listing (nested layers as ``outer/inner``; parameter counts from the weights
    file, 0 when the walk had none). ``parents`` maps each top-level layer to the top-level layers
    whose tensors it consumes; ``output_layers`` names the layers behind the model's outputs, in
    order. ``input_shapes`` are the shapes (batch included) the inputs take: declared, or where a
    tf.keras SavedModel declares unknown dimensions, the shape its first layer was built on.
    ``vocabularies`` gives each input that feeds an ``Embedding`` (directly or through shape-only
    layers) that Embedding's ``input_dim``; for a Sequential the key is ``""`` (its one input).
    """

    name: str | None
    sequential: bool
    rows: tuple[LayerRow, ...]
    inputs: tuple[InputSpec, ...]
    input_shapes: tuple[Shape | None, ...]
    parents: dict[str, frozenset[str]] = field(default_factory=dict)
    output_layers: tuple[str, ...] = ()
    vocabularies: dict[str, int] = field(default_factory=dict)

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows if not r.is_container)

    @property
    def trainable_params(self) -> int:
        return sum(r.trainable_params for r in self.rows if not r.is_container)

    def feeding(self, outputs: list[int] | None) -> set[str]:
        """Top-level layers on a path to the chosen outputs (indices; None: all); for a Sequential, all."""
        if self.sequential:
            return set(self.parents)
        chosen = [
            self.output_layers[i]
            for i in (outputs if outputs is not None else range(len(self.output_layers)))
            if i < len(self.output_layers)
        ]
        seen: set[str] = set()
        stack = list(chosen)
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.add(name)
                stack.extend(self.parents.get(name, ()))
        return seen
