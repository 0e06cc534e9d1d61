"""TensorFlow's SavedModel messages, decoded by the protobuf runtime, without importing TensorFlow.

TensorFlow reads ``saved_model.pb`` with the protobuf library, whose rules decide what a file
means: a repeated occurrence of a singular sub-message is merged into the first, a repeated
scalar keeps the last value, unknown fields are skipped. gradinspect decodes the file once, with
the same runtime and TensorFlow's own schema (``data/tf_protos.desc``, a ``FileDescriptorSet``
written by ``tools/make_protos.py`` from the installed TensorFlow and checked against it by a
test), in a private descriptor pool. The scan, the listing, the graph recovery and the rewrite
all read that one decoded message; the copy TensorFlow loads is re-serialized from it, so the
bytes that are loaded are the bytes that were scanned.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

# DataType numbers (tensorflow/core/framework/types.proto) used by the graph code.
DT_FLOAT = 1
DT_STRING = 7
DT_RESOURCE = 20


@cache
def _pool() -> descriptor_pool.DescriptorPool:
    raw = resources.files("gradinspect.artifacts").joinpath("data").joinpath("tf_protos.desc").read_bytes()
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(raw).file:
        pool.Add(file)
    return pool


@cache
def message_class(full_name: str) -> Any:
    """The message class of ``full_name`` (``tensorflow.FunctionDef``), built from TensorFlow's schema."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(full_name))


def new(type_name: str, /, **fields: Any) -> Any:
    """A new ``tensorflow.<type_name>`` message (``new("NodeDef", name="x", op="Identity")``)."""
    return message_class(f"tensorflow.{type_name}")(**fields)


def decode(full_name: str, data: bytes) -> Any:
    """``data`` parsed as ``full_name``; raises ValueError (with the runtime's reason) when it is not one."""
    msg = message_class(full_name)()
    try:
        msg.ParseFromString(data)
    except (message.DecodeError, RecursionError) as exc:
        raise ValueError(str(exc) or "not a valid protocol buffer") from None
    return msg


def decode_saved_model(data: bytes) -> Any:
    """``saved_model.pb`` as a ``tensorflow.SavedModel`` message with exactly one meta graph (the
    one ``tf.saved_model.load`` takes without tags); ValueError otherwise."""
    saved_model = decode("tensorflow.SavedModel", data)
    count = len(saved_model.meta_graphs)
    if count != 1:
        raise ValueError(
            f"it holds {count} meta graphs; gradinspect reads SavedModels with exactly one "
            "(tf.saved_model.save and model.export write one)"
        )
    return saved_model


def decode_keras_metadata(data: bytes) -> Any:
    """``keras_metadata.pb`` as tf_keras's ``SavedMetadata`` message (ValueError when it is not one)."""
    return decode("third_party.py.tf_keras.protobuf.SavedMetadata", data)


def encode(msg: Any) -> bytes:
    """The canonical serialization of ``msg`` (what TensorFlow is handed)."""
    return bytes(msg.SerializeToString(deterministic=True))
