"""Regenerate gradinspect/artifacts/data/tf_protos.desc from the installed TensorFlow and tf_keras.

The file is a serialized ``FileDescriptorSet``: TensorFlow's own descriptors of ``SavedModel``
(and every ``.proto`` it depends on) and tf_keras's ``SavedMetadata``. gradinspect builds message
classes from it in a private descriptor pool, so ``saved_model.pb`` is decoded by the protobuf
runtime, with the very schema TensorFlow loads it with, without importing TensorFlow.
``tests/artifacts/test_protos.py`` fails when the installed TensorFlow's descriptors differ.

    python tools/make_protos.py
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

OUT = Path(__file__).resolve().parent.parent / "gradinspect" / "artifacts" / "data" / "tf_protos.desc"


def descriptor_set() -> bytes:
    """The FileDescriptorSet of SavedModel and SavedMetadata with their dependencies, dependencies first."""
    from google.protobuf import descriptor_pb2
    from tensorflow.core.protobuf import saved_model_pb2
    from tf_keras.protobuf import saved_metadata_pb2

    out = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dep in file.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        out.file.append(proto)

    add(saved_model_pb2.DESCRIPTOR)
    add(saved_metadata_pb2.DESCRIPTOR)
    return out.SerializeToString(deterministic=True)


if __name__ == "__main__":
    OUT.write_bytes(descriptor_set())
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")
