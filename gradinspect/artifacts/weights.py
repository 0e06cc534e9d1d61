"""Parameter shapes of a `.keras` or `.h5` model, read from its weights file with h5py (nothing loaded).

Keras 3 names weight groups by the snake_case class name (``layers/dense_1``), with the layer name
on the group since 3.10; legacy `.h5` files keep ``model_weights/<layer>`` with ``weight_names``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from gradinspect.formatting import without_output_index

# Variables that Keras creates as non-trainable, by layer class: how many of the layer's own
# variables, counted from the end, are non-trainable (None: all of them).
_NON_TRAINABLE_TAIL: dict[str, int | None] = {
    "BatchNormalization": 2,  # moving_mean, moving_variance
    "SyncBatchNormalization": 2,
    "Normalization": None,  # mean, variance, count
}


_NON_TRAINABLE_NAMES = frozenset({"moving_mean", "moving_variance"})


@dataclass
class LayerVariables:
    """The weight arrays of one layer: (name, shape) and which are trainable."""

    shapes: list[tuple[str, tuple[int, ...]]]
    trainable: list[bool]

    @property
    def params(self) -> int:
        return sum(math.prod(s) for _, s in self.shapes)

    @property
    def trainable_params(self) -> int:
        return sum(math.prod(s) for (_, s), t in zip(self.shapes, self.trainable) if t)


def snake_case(name: str) -> str:
    # keras.src.utils.naming.to_snake_case: how Keras 3 names weight groups in model.weights.h5.
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _is_stat_name(name: str) -> bool:
    leaf = without_output_index(name.split("/")[-1])
    return leaf in _NON_TRAINABLE_NAMES


def _trainable_flags(cls: str, names: list[str], trainable: bool, own_count: int) -> list[bool]:
    if not trainable:
        return [False] * len(names)
    if cls in _NON_TRAINABLE_TAIL:
        tail = _NON_TRAINABLE_TAIL[cls]
        cut = 0 if tail is None else max(own_count - tail, 0)
        return [i < cut for i in range(len(names))]
    return [True] * len(names)


class WeightShapes:
    """The weights file of one model (``weights`` is an open h5py group, or None when there is none);
    ``keras3``: laid out as Keras 3 writes ``model.weights.h5`` (else as a legacy ``.h5``)."""

    def __init__(self, weights: Any, keras3: bool) -> None:
        self.weights = weights
        self.keras3 = keras3

    def group(self, container: str, cls: str, lname: str, used: dict[str, int]) -> str:
        base = snake_case(cls)
        if base in used:
            used[base] += 1
            base = f"{base}_{used[base]}"
        else:
            used[base] = 0
        path = f"{container}/{base}" if container else f"layers/{base}"
        if self.weights is not None:
            # Keras >= 3.10 also writes the layer name on each group; trust it when present.
            vars_group = self.weights.get(f"{path}/vars")
            stored = vars_group.attrs.get("name") if vars_group is not None else None
            if stored is not None and stored != lname:
                parent = self.weights.get(container or "layers")
                for key in parent or []:
                    v = parent[key].get("vars")
                    if v is not None and v.attrs.get("name") == lname:
                        return f"{container or 'layers'}/{key}"
        return path

    def h5_group(self, lname: str) -> Any:
        return self.weights.get(lname) if self.weights is not None else None

    def variables(self, cls: str, lname: str, group: str | None, trainable: bool, h5_group: Any) -> LayerVariables:
        import h5py

        found: list[tuple[str, tuple[int, ...]]] = []
        if self.weights is None:
            return LayerVariables([], [])
        if self.keras3:
            node = self.weights.get(group) if group else None
            own = node.get("vars") if node is not None else None
            own_names = set()
            if own is not None:
                for key in sorted(own.keys(), key=lambda k: int(k) if k.isdigit() else 0):
                    found.append((f"vars/{key}", tuple(own[key].shape)))
                    own_names.add(f"vars/{key}")
            if node is not None:
                extra: list[tuple[str, tuple[int, ...]]] = []
                node.visititems(
                    lambda n, o: (
                        extra.append((n, tuple(o.shape)))
                        if isinstance(o, h5py.Dataset) and n not in own_names
                        else None
                    )
                )
                found.extend(extra)
            flags = _trainable_flags(cls, [n for n, _ in found], trainable, own_count=len(own_names))
            return LayerVariables(found, flags)
        # legacy .h5: model_weights/<layer>/ with a weight_names attribute; inside a nested
        # model the weights sit in the nested model's group, prefixed by the inner layer name.
        grp = h5_group if h5_group is not None else self.h5_group(lname)
        if grp is None:
            return LayerVariables([], [])
        for wname in grp.attrs.get("weight_names", []):
            wname = wname.decode("utf-8") if isinstance(wname, bytes) else str(wname)
            if h5_group is not None and lname not in wname.split("/"):
                continue
            ds = grp.get(wname)
            if ds is not None:
                found.append((wname, tuple(ds.shape)))
        flags = [trainable and not _is_stat_name(n) for n, _ in found]
        return LayerVariables(found, flags)
