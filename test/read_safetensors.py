#!/usr/bin/env python3
"""An independent minimal safetensors reader (standard library only), to check our writer.

Usage: python3 read_safetensors.py FILE

Parses the file from the format's description alone (8-byte little-endian header length,
a JSON header, the data buffer), checks that the data offsets tile the buffer exactly and
that each tensor's byte size is its shape times its item size, and prints one JSON object:
the header length, the metadata, and per tensor its name, dtype, shape and the sum of its
values (float32 values widened to double, added one by one in file order).
Exits 1 with a message on stderr if the file is malformed.
"""
import json
import struct
import sys

ITEM = {"F32": ("f", 4), "F64": ("d", 8), "I32": ("i", 4)}
MAX_HEADER = 100_000_000


def no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def read(path):
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise ValueError("shorter than 8 bytes")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > MAX_HEADER or 8 + n > len(buf):
        raise ValueError(f"bad header length {n}")
    header = json.loads(buf[8:8 + n].decode("utf-8"), object_pairs_hook=no_duplicates)
    start = 8 + n
    data_len = len(buf) - start
    metadata = header.pop("__metadata__", {})
    if not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("metadata values must be strings")

    spans = sorted((info["data_offsets"][0], info["data_offsets"][1], name) for name, info in header.items())
    cursor = 0
    for begin, end, name in spans:
        if begin != cursor or end < begin:
            raise ValueError(f"tensor {name}: offsets [{begin}, {end}] do not continue at {cursor}")
        cursor = end
    if cursor != data_len:
        raise ValueError(f"offsets end at {cursor}, the data buffer holds {data_len} bytes")

    tensors = []
    for begin, end, name in spans:
        info = header[name]
        code, size = ITEM[info["dtype"]]
        count = 1
        for d in info["shape"]:
            count *= d
        if end - begin != count * size:
            raise ValueError(f"tensor {name}: {end - begin} bytes for {count} x {size}")
        total = 0.0
        for (v,) in struct.iter_unpack("<" + code, buf[start + begin:start + end]):
            total += v  # one by one: sum() of floats is compensated from Python 3.12
        tensors.append({"name": name, "dtype": info["dtype"], "shape": info["shape"], "sum": total})
    return {"header_length": n, "data_start": start, "metadata": metadata, "tensors": tensors}


if __name__ == "__main__":
    try:
        print(json.dumps(read(sys.argv[1])))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        print(f"read_safetensors.py: {sys.argv[1]}: {e}", file=sys.stderr)
        sys.exit(1)
