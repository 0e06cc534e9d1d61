"""saved_model.pb is read exactly as TensorFlow reads it: no encoding trick hides an op from the scan.

The hostile SavedModel's serving function writes a marker file (``tf.io.write_file``). Each test
shows the payload fires in plain TensorFlow, then that gradinspect refuses the file, naming the
op, and the marker is absent. The differential test mutates real exports at the wire level
(duplicate, split, empty, unknown and reordered fields, last-wins scalars, truncations, flipped
bytes) and checks that what gradinspect's scan sees equals TensorFlow's own parse, or the file
is refused.
"""

from __future__ import annotations

import random
import shutil

import pytest
from conftest import REAL_MODELS, SAMPLES, assert_one_error_line, run_cli, tf_reachable

pytestmark = pytest.mark.slow


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _with_graph_def_suffix(raw: bytes, suffix: bytes) -> bytes:
    """saved_model.pb whose one meta graph's graph_def has ``suffix`` appended to its bytes."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel.FromString(raw)
    meta = sm.meta_graphs[0]
    graph = meta.graph_def.SerializeToString() + suffix
    meta.ClearField("graph_def")
    sm.ClearField("meta_graphs")
    return sm.SerializeToString() + _field(2, meta.SerializeToString() + _field(2, graph))


@pytest.fixture
def writer(hostile_savedmodels):
    """The SavedModel whose serving function writes MARKER, and the marker."""
    d, marker = hostile_savedmodels
    return d / "serve_writes", marker


def _fires_in_tensorflow(path, marker) -> bool:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    loaded.signatures["serving_default"](x=tf.ones([1, 2]))
    fired = marker.exists()
    if fired:
        marker.unlink()
    return fired


def _hidden_copy(writer, tmp_path, suffix: bytes):
    path, _ = writer
    dst = tmp_path / "hidden"
    shutil.copytree(path, dst)
    raw = (dst / "saved_model.pb").read_bytes()
    (dst / "saved_model.pb").write_bytes(_with_graph_def_suffix(raw, suffix))
    return dst


@pytest.mark.parametrize("command", [("layers",), ("grad", "--all", "--random", "2"), ("check", "--random", "2")])
def test_a_graph_that_writes_a_file_is_refused(writer, command):
    path, marker = writer
    line = assert_one_error_line(run_cli(command[0], path, *command[1:]), "refused to load")
    assert "'WriteFile'" in line
    assert not marker.exists()


def test_the_writer_fixture_fires_in_plain_tensorflow(writer):
    assert _fires_in_tensorflow(*writer)


@pytest.mark.parametrize(
    "suffix",
    [
        _field(2, b""),  # an empty `library` (the two bytes 0x12 0x00): merged into the real one
        _field(2, _field(2, b"")),  # a `library` holding one empty gradient
        _field(4, b""),  # an empty `versions`
    ],
    ids=["empty-library", "library-with-empty-gradient", "empty-versions"],
)
def test_an_empty_repeated_singular_field_hides_nothing(writer, tmp_path, suffix):
    path, marker = writer
    hidden = _hidden_copy(writer, tmp_path, suffix)
    # TensorFlow merges the two occurrences: the write is still there, and still runs.
    assert _fires_in_tensorflow(hidden, marker)
    line = assert_one_error_line(run_cli("grad", hidden, "--all", "--random", "2"), "refused to load")
    assert "'WriteFile'" in line
    assert not marker.exists()


def test_a_signature_naming_the_checkpoint_machinery_is_scanned(keras, tmp_path):
    """The save node that saver_def names, exposed as a signature output, is scanned like any node."""
    from tensorflow.core.protobuf import saved_model_pb2

    dst = tmp_path / "sm"
    shutil.copytree(SAMPLES / "mlp_export", dst)
    sm = saved_model_pb2.SavedModel.FromString((dst / "saved_model.pb").read_bytes())
    meta = sm.meta_graphs[0]
    sig = meta.signature_def["serving_default"]
    sig.outputs["output_0"].name = meta.saver_def.save_tensor_name
    (dst / "saved_model.pb").write_bytes(sm.SerializeToString())
    line = assert_one_error_line(run_cli("grad", dst, "--all", "--random", "2"), "refused to load")
    assert any(op in line for op in ("'SaveV2'", "'MergeV2Checkpoints'", "'ShardedFilename'", "'StringJoin'"))


def test_a_savedmodel_with_two_meta_graphs_is_refused(keras, tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    dst = tmp_path / "sm"
    shutil.copytree(SAMPLES / "mlp_export", dst)
    sm = saved_model_pb2.SavedModel.FromString((dst / "saved_model.pb").read_bytes())
    sm.meta_graphs.add().CopyFrom(sm.meta_graphs[0])
    (dst / "saved_model.pb").write_bytes(sm.SerializeToString())
    assert_one_error_line(run_cli("layers", dst), "holds 2 meta graphs")


@pytest.mark.parametrize("name", ["mlp_savedmodel", "mlp_export", "cnn_export"])
def test_the_scan_sees_what_tensorflow_parses(keras, name):
    from tensorflow.core.protobuf import saved_model_pb2

    from gradinspect.artifacts import protos
    from gradinspect.artifacts.graphscan import scan_savedmodel

    raw = (SAMPLES / name / "saved_model.pb").read_bytes()
    facts = scan_savedmodel(protos.decode_saved_model(raw), name)
    functions, ops = tf_reachable(saved_model_pb2.SavedModel.FromString(raw))
    assert (set(facts.functions), set(facts.ops)) == (functions, ops)
    # The checkpoint machinery is in the file but outside what the loader and the signatures run.
    assert not facts.ops & {"SaveV2", "RestoreV2", "MergeV2Checkpoints"}


# --- the differential test -------------------------------------------------------------------


def _split_fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """(number, wire type, the field's whole encoding) of each field of a message; ValueError if malformed."""
    out, i = [], 0
    while i < len(data):
        start = i
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _read_varint(data, i)
        elif wire == 2:
            n, i = _read_varint(data, i)
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError("wire type")
        if i > len(data):
            raise ValueError("truncated")
        out.append((number, wire, data[start:i]))
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _payload(encoded: bytes) -> bytes:
    _, i = _read_varint(encoded, 0)
    _, i = _read_varint(encoded, i)
    return encoded[i:]


def _mutate(data: bytes, descriptor, rng: random.Random, depth: int = 0) -> bytes:
    """One mutation somewhere in ``data`` (a message of ``descriptor``): here, or inside a sub-message."""
    fields = _split_fields(data)
    by_number = {f.number: f for f in descriptor.fields}
    nested = [
        i
        for i, (number, wire, _) in enumerate(fields)
        if wire == 2 and number in by_number and by_number[number].message_type is not None
    ]
    if nested and depth < 12 and rng.random() < 0.75:
        i = rng.choice(nested)
        number, _, encoded = fields[i]
        inner = _mutate(_payload(encoded), by_number[number].message_type, rng, depth + 1)
        fields[i] = (number, 2, _field(number, inner))
        return b"".join(f[2] for f in fields)
    return _mutate_here(fields, by_number, rng)


def _mutate_here(fields, by_number, rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    encoded = [f[2] for f in fields]
    if kind == 0 and fields:  # a field again (repeated: one more; singular message: merged; scalar: last wins)
        encoded.insert(rng.randrange(len(encoded) + 1), rng.choice(encoded))
    elif kind == 1:  # an empty occurrence of a sub-message field
        messages = [n for n, f in by_number.items() if f.message_type is not None] or [1]
        encoded.insert(rng.randrange(len(encoded) + 1), _field(rng.choice(messages), b""))
    elif kind == 2:  # a field no schema knows
        number = rng.randrange(1000, 5000)
        wire = rng.choice([0, 2, 5])
        body = {0: _varint(rng.randrange(1 << 20)), 2: _varint(3) + b"abc", 5: b"\0\0\0\0"}[wire]
        encoded.append(_varint(number << 3 | wire) + body)
    elif kind == 3:  # another order
        rng.shuffle(encoded)
    elif kind == 4 and fields:  # a sub-message split into two occurrences of its field
        splittable = [f for f in fields if f[1] == 2 and f[0] in by_number and by_number[f[0]].message_type]
        if splittable:
            number, _, whole = rng.choice(splittable)
            parts = [f[2] for f in _split_fields(_payload(whole))]
            cut = rng.randrange(len(parts) + 1)
            encoded.remove(whole)
            encoded += [_field(number, b"".join(parts[:cut])), _field(number, b"".join(parts[cut:]))]
    elif kind == 5 and fields:  # a string field of this message given another value after it
        strings = [n for n, f in by_number.items() if f.type == f.TYPE_STRING]
        if strings:
            encoded.append(_field(rng.choice(strings), b"WriteFile" if rng.random() < 0.5 else b"x"))
    return b"".join(encoded)


def _corrupt(data: bytes, rng: random.Random) -> bytes:
    """Now and then, also a truncation or a flipped byte."""
    roll = rng.random()
    if roll < 0.05:
        return data[: rng.randrange(len(data))]
    if roll < 0.10:
        i = rng.randrange(len(data))
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]
    return data


def _sources(writer):
    paths = [SAMPLES / "mlp_export", SAMPLES / "cnn_export", SAMPLES / "mlp_savedmodel", writer[0]]
    paths += sorted(REAL_MODELS.glob("savedmodel_*")) if REAL_MODELS.is_dir() else []
    return [(p.name, (p / "saved_model.pb").read_bytes()) for p in paths]


def test_mutated_savedmodels_are_seen_as_tensorflow_sees_them_or_refused(writer):
    """1,200 seeded mutations: gradinspect's scan either refuses the file or sees exactly the functions
    and ops TensorFlow's own parse reaches; a file TensorFlow cannot parse is always refused."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    from gradinspect.artifacts import protos
    from gradinspect.artifacts.graphscan import scan_savedmodel
    from gradinspect.errors import GradinspectError

    descriptor = saved_model_pb2.SavedModel.DESCRIPTOR
    rng = random.Random(20261203)
    outcomes = {"refused": 0, "accepted": 0}
    hidden_writes = 0
    sources = _sources(writer)
    for name, raw in sources:
        for _ in range(-(-1200 // len(sources))):
            data = _corrupt(_mutate(raw, descriptor, rng), rng)
            try:
                tf_parse = saved_model_pb2.SavedModel.FromString(data)
                expected = tf_reachable(tf_parse) if len(tf_parse.meta_graphs) == 1 else None
            except DecodeError:
                expected = None
            try:
                facts = scan_savedmodel(protos.decode_saved_model(data), name, unsafe=True)
            except (ValueError, GradinspectError):
                outcomes["refused"] += 1
                continue
            outcomes["accepted"] += 1
            assert expected is not None, f"{name}: accepted a file TensorFlow cannot load"
            assert (set(facts.functions), set(facts.ops)) == expected, name
            hidden_writes += "WriteFile" in expected[1] and "WriteFile" not in facts.ops
    assert hidden_writes == 0
    assert sum(outcomes.values()) >= 1000
    assert outcomes["accepted"] > 500, outcomes  # the mutations mostly keep files TensorFlow reads


def _library_edit(tmp_path, edit):
    """A copy of mlp_export whose serving function (and library) went through ``edit(library, serving)``."""
    from tensorflow.core.protobuf import saved_model_pb2

    dst = tmp_path / "sm"
    shutil.copytree(SAMPLES / "mlp_export", dst)
    sm = saved_model_pb2.SavedModel.FromString((dst / "saved_model.pb").read_bytes())
    library = sm.meta_graphs[0].graph_def.library
    serving = next(f for f in library.function if f.signature.name.startswith("__inference___call__"))
    edit(library, serving)
    (dst / "saved_model.pb").write_bytes(sm.SerializeToString())
    return dst


def _chain(library, serving, length: int, fanout: int):
    """Functions f0 .. f{length-1}, each calling the next ``fanout`` times; the serving function calls f0."""
    for i in range(length):
        fn = library.function.add()
        fn.signature.name = f"f{i}"
        for j in range(fanout if i + 1 < length else 0):
            fn.node_def.add(name=f"call{j}", op="PartitionedCall").attr["f"].func.name = f"f{i + 1}"
        fn.node_def.add(name="noop", op="NoOp")
    serving.node_def.add(name="bomb", op="PartitionedCall").attr["f"].func.name = "f0"


@pytest.mark.parametrize("command", [("layers",), ("grad", "--all", "--random", "2")])
def test_a_call_chain_that_doubles_thirty_times_is_refused_before_expansion(keras, tmp_path, command):
    dst = _library_edit(tmp_path, lambda lib, serving: _chain(lib, serving, 30, 2))
    assert_one_error_line(run_cli(command[0], dst, *command[1:]), "inlines to more than 2,000,000 nodes")


def test_calls_nested_past_the_depth_bound_are_refused(keras, tmp_path):
    dst = _library_edit(tmp_path, lambda lib, serving: _chain(lib, serving, 40, 1))
    assert_one_error_line(run_cli("grad", dst, "--all", "--random", "2"), "nest more than 32 deep")


def test_a_keras_archive_with_two_members_of_one_name_is_refused(tmp_path):
    import warnings
    import zipfile

    dst = tmp_path / "dup.keras"
    with zipfile.ZipFile(SAMPLES / "mlp.keras") as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate: that is the point
            zout.writestr("config.json", b'{"class_name": "Lambda"}')
    assert_one_error_line(run_cli("layers", dst), "two members named 'config.json'")


def test_json_duplicate_keys_are_read_as_keras_reads_them(keras, tmp_path):
    """Python's json (Keras's reader too) keeps the last of two keys: so does the scan."""
    import json
    import zipfile

    dst = tmp_path / "dupkey.keras"
    with zipfile.ZipFile(SAMPLES / "mlp.keras") as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "config.json":
                cfg = json.loads(data)
                layer = json.dumps(cfg["config"]["layers"][-1])
                # The first class_name is harmless, the last (the one Keras would use) is a Lambda.
                hostile = layer.replace('"class_name": "Dense"', '"class_name": "Dense", "class_name": "Lambda"', 1)
                data = json.dumps(cfg).replace(layer, hostile).encode()
                assert '"class_name": "Lambda"' in data.decode()
            zout.writestr(name, data)
    assert_one_error_line(run_cli("layers", dst), "refused to load", "Lambda")


def test_a_library_of_too_many_functions_is_refused(keras, tmp_path):
    def many(library, serving):
        for i in range(20_001):
            library.function.add().signature.name = f"g{i}"

    dst = _library_edit(tmp_path, many)
    assert_one_error_line(run_cli("layers", dst), "holds 20,006 functions", "more than the 20,000 functions")
