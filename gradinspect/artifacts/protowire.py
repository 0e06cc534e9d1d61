"""A minimal protobuf wire-format reader, so SavedModel files are scanned without importing TensorFlow.

TensorFlow's generated message classes live inside the ``tensorflow`` package, and importing
any of them imports all of TensorFlow (seconds). The scan only needs a few fields of a few
messages, read by field number; a test compares what this reader finds with TensorFlow's own
parse of the same files.
"""

from __future__ import annotations

from collections.abc import Iterator


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Each ``(field number, value)`` of a message: an int (varint, fixed) or bytes (length-delimited)."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, i = _varint(buf, i)
        elif wire_type == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("field runs past the end of the message")
            value, i = buf[i : i + n], i + n
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            if i + width > len(buf):
                raise ValueError("field runs past the end of the message")
            value, i = int.from_bytes(buf[i : i + width], "little"), i + width
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        yield number, value


def messages(buf: bytes, number: int) -> Iterator[bytes]:
    """Every length-delimited value of field ``number`` (a repeated sub-message, string or map entry)."""
    for n, value in fields(buf):
        if n == number and isinstance(value, bytes):
            yield value


def first(buf: bytes, number: int, default: bytes = b"") -> bytes:
    """The last length-delimited value of field ``number`` (protobuf: the last one wins)."""
    found = default
    for value in messages(buf, number):
        found = value
    return found


def text(buf: bytes, number: int) -> str:
    """A string field, decoded as UTF-8 (undecodable bytes replaced)."""
    return first(buf, number).decode("utf-8", "replace")


def varints(buf: bytes, number: int) -> list[int]:
    """Every integer value of field ``number``, packed or not."""
    out: list[int] = []
    for n, value in fields(buf):
        if n != number:
            continue
        if isinstance(value, int):
            out.append(value)
        else:
            i = 0
            while i < len(value):
                v, i = _varint(value, i)
                out.append(v)
    return out


def map_entries(buf: bytes, number: int) -> Iterator[tuple[str, bytes]]:
    """The ``(key, value message)`` pairs of a ``map<string, Message>`` field."""
    for entry in messages(buf, number):
        yield text(entry, 1), first(entry, 2)


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint (for packed repeated fields)."""
    return _encode_varint(value)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode(items: list[tuple[int, int | bytes | str]]) -> bytes:
    """A message from ``(field number, value)`` pairs: ints as varints, bytes and str length-delimited."""
    out = bytearray()
    for number, value in items:
        if isinstance(value, int):
            out += _encode_varint(number << 3) + _encode_varint(value)
        else:
            data = value.encode("utf-8") if isinstance(value, str) else value
            out += _encode_varint(number << 3 | 2) + _encode_varint(len(data)) + data
    return bytes(out)
