"""Read a TensorFlow 1 checkpoint's float tensors without TensorFlow.

A TF1 checkpoint ``<prefix>`` is two files: ``<prefix>.index``, a LevelDB-format table
(sorted string keys, prefix-compressed, in blocks listed by an index block the 48-byte
footer points at) whose values are ``BundleEntryProto`` messages (dtype, shape, offset
and size of the tensor's bytes), and ``<prefix>.data-00000-of-00001``, the raw
little-endian tensor bytes. musicnn's wheel ships its weights this way, and TensorFlow
has no Python 3.11 build that musicnn's pins allow, so we parse the two files here: a
varint reader, the table's block layout and the four protobuf fields we need.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

FOOTER_BYTES = 48
TABLE_MAGIC = 0xDB4775248B80FB57
DT_FLOAT = 1  # tensorflow.DataType


class CheckpointError(ValueError):
    """The files are not a readable TF1 checkpoint (or hold a tensor we cannot read)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message's (field number, value): varints as int, others as bytes."""
    out, pos = [], 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def _block(data: bytes, handle: bytes) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if data[offset + size] != 0:
        raise CheckpointError("compressed table blocks are not supported")
    return data[offset : offset + size]


def _entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of one table block; keys share prefixes with the previous."""
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * n_restarts
    out, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        out.append((key, block[pos : pos + length]))
        pos += length
    return out


def _shape(message: bytes) -> tuple[int, ...]:
    dims = []
    for number, dim in _fields(message):
        if number == 2:
            dims.append(next((v for n, v in _fields(dim) if n == 1), 0))
    return tuple(dims)


def read_checkpoint(prefix: Path | str) -> dict[str, np.ndarray]:
    """Every float32 tensor of the checkpoint ``prefix``, by variable name."""
    prefix = str(prefix)
    try:
        index = Path(prefix + ".index").read_bytes()
        shard = Path(prefix + ".data-00000-of-00001").read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {prefix}: {exc}") from exc
    if len(index) < FOOTER_BYTES or struct.unpack_from("<Q", index, len(index) - 8)[0] != \
            TABLE_MAGIC:
        raise CheckpointError(f"{prefix}.index is not a checkpoint index")
    footer = index[-FOOTER_BYTES:]
    _, pos = _varint(footer, _varint(footer, 0)[1])  # skip the metaindex handle
    index_block = _block(index, footer[pos:])
    tensors: dict[str, np.ndarray] = {}
    for _, handle in _entries(index_block):
        for key, value in _entries(_block(index, handle)):
            if not key:
                continue  # the bundle header
            entry = dict(_fields(value))
            if entry.get(1, DT_FLOAT) != DT_FLOAT:
                continue  # e.g. the int64 global step
            offset, size = entry.get(4, 0), entry.get(5, 0)
            shape = _shape(entry.get(2, b""))
            if size != 4 * int(np.prod(shape)) or offset + size > len(shard):
                raise CheckpointError(f"{prefix}: tensor {key!r} does not fit its shard")
            tensors[key.decode()] = np.frombuffer(
                shard, dtype="<f4", count=size // 4, offset=offset).reshape(shape)
    return tensors
