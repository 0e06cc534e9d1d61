"""Seeded mutations of real model and data files, for the reader fuzz tests (test_fuzz_readers.py)."""

from __future__ import annotations

import json
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

# Values a mutated config may hold where Keras expects something else.
_PALETTE: list[Any] = [
    None, True, 0, -1, 3, 2**70, 1e308, -1e-308, "", "x", "/dev/zero", "$\\frac{$", "a:b", "../../etc/passwd",
    "\x1b[31m", [], [1, 2], [[[]]], {}, {"class_name": "Lambda"}, {"class_name": {"x": 1}}, {"config": []},
    "Dense", "Sequential", "float64", [None, None], {"shape": "x"},
]  # fmt: skip


def _nodes(tree: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every value of a JSON tree (dict keys and list indices)."""
    out = [path]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _nodes(v, (*path, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _nodes(v, (*path, i))
    return out


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def mutate_json(text: str, rng: random.Random) -> str:
    """One structural change: a value replaced (another type, a huge number, deep nesting), a key
    removed or duplicated, or a class renamed."""
    tree = json.loads(text)
    path = rng.choice(_nodes(tree)[1:] or [()])
    kind = rng.randrange(5)
    if not path:
        return json.dumps(rng.choice(_PALETTE))
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if kind == 0 or kind == 1:
        parent[last] = rng.choice(_PALETTE)
    elif kind == 2:
        parent[last] = _deep(rng.choice([50, 500, 5000]))
    elif kind == 3 and isinstance(parent, dict):
        del parent[last]
    elif isinstance(parent, list):
        parent.insert(last, parent[last])
    else:
        parent[last] = str(parent[last]) * rng.randrange(1, 4)
    try:
        return json.dumps(tree)
    except (RecursionError, ValueError):
        return text[: len(text) // 2]


def flip_bytes(data: bytes, rng: random.Random, start: int, count: int) -> bytes:
    out = bytearray(data)
    for _ in range(count):
        i = rng.randrange(start, len(out))
        out[i] = rng.randrange(256)
    return bytes(out)


def mutated_model(src: Path, dst_dir: Path, rng: random.Random, i: int) -> Path:
    """A mutated copy of the model file ``src`` in ``dst_dir``."""
    if src.is_dir():
        return _mutated_savedmodel(src, dst_dir / f"m{i}", rng)
    data = src.read_bytes()
    dst = dst_dir / f"m{i}{src.suffix}"
    if data.startswith(b"PK"):
        dst.write_bytes(_mutated_zip(data, src, rng))
    elif rng.random() < 0.6:
        shutil.copyfile(src, dst)
        _mutate_h5_attrs(dst, rng)
    else:
        cut = data[: rng.randrange(len(data))]
        dst.write_bytes(flip_bytes(data, rng, 512, rng.choice([1, 4, 32])) if rng.random() < 0.8 else cut)
    return dst


def _mutated_zip(data: bytes, src: Path, rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.15:
        return data[: rng.randrange(len(data))]
    if roll < 0.3:
        return flip_bytes(data, rng, 4, rng.choice([1, 8]))
    import io

    out = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for name in zin.namelist():
            member = zin.read(name)
            if name in ("config.json", "metadata.json"):
                member = mutate_json(member.decode(), rng).encode()
            elif name == "model.weights.h5" and rng.random() < 0.3:
                member = flip_bytes(member, rng, 512, 4)
            zout.writestr(name, member)
    return out.getvalue()


def _mutate_h5_attrs(path: Path, rng: random.Random) -> None:
    import h5py

    with h5py.File(path, "r+") as h5:
        key = "model_config" if "model_config" in h5.attrs and rng.random() < 0.8 else "training_config"
        raw = h5.attrs.get(key)
        if raw is None:
            return
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        h5.attrs[key] = mutate_json(text, rng)


def _mutated_savedmodel(src: Path, dst: Path, rng: random.Random) -> Path:
    shutil.copytree(src, dst)
    meta = dst / "keras_metadata.pb"
    if meta.is_file() and rng.random() < 0.5:
        from tf_keras.protobuf import saved_metadata_pb2

        msg = saved_metadata_pb2.SavedMetadata.FromString(meta.read_bytes())
        node = rng.choice(list(msg.nodes))
        if node.metadata:
            node.metadata = mutate_json(node.metadata, rng)
        meta.chmod(0o600)
        meta.write_bytes(msg.SerializeToString())
    else:
        pb = dst / "saved_model.pb"
        pb.chmod(0o600)
        pb.write_bytes(flip_bytes(pb.read_bytes(), rng, 0, rng.choice([1, 3])))
    return dst


def mutated_input(kind: str, d: Path, rng: random.Random, i: int, good: Any) -> Path:
    """A mutated input file of ``kind`` (npy, npz, csv, json, h5) derived from the array ``good``."""
    import numpy as np

    path = d / f"in{i}.{kind}"
    if kind == "npy":
        np.save(path, good)
        data = path.read_bytes()
        path.write_bytes(flip_bytes(data, rng, 0, 2) if rng.random() < 0.7 else data[: rng.randrange(len(data))])
    elif kind == "npz":
        np.savez(path, x=good)
        path.write_bytes(flip_bytes(path.read_bytes(), rng, 0, rng.choice([1, 4])))
    elif kind == "csv":
        lines = [",".join(map(str, row)) for row in good.tolist()]
        j = rng.randrange(len(lines))
        lines[j] = rng.choice(["", "a,b", "1,2,3,4", "nan,inf", "1e999,2", ",", "\x00"])
        path.write_text("\n".join(lines))
    elif kind == "json":
        path.write_text(mutate_json(json.dumps(good.tolist()), rng))
    else:
        import h5py

        with h5py.File(path, "w") as h5:
            h5["x"] = good
        path.write_bytes(flip_bytes(path.read_bytes(), rng, 512, rng.choice([1, 8])))
    return path
