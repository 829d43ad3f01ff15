"""The IDX file format of MNIST, Fashion-MNIST and EMNIST, raw or gzip-compressed.

Layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), the number of dimensions, each dimension as a big-endian
uint32, then the values, big-endian, in C order.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from cnncli.data.npz import MAX_DEFLATE_RATIO
from cnncli.errors import DataError

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (gzip detected from its magic bytes).

    The header is checked before the data is read: a wrong magic number, a truncated
    header, dimensions whose product does not fit the file (computed exactly, so they
    cannot overflow into a small number), each refused in one line, before the array is
    allocated. A gzip file is decompressed as a stream, never past what its header announces.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            compressed = fh.read(2) == b"\x1f\x8b"
            fh.seek(0)
            stream = gzip.GzipFile(fileobj=fh, mode="rb") if compressed else fh
            head = stream.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _TYPES:
                raise DataError(f"{path}: not an IDX file (bad magic number: expected 00 00, a type code and the "
                                f"number of dimensions; got {head.hex(' ') or 'nothing'})")
            ndim = head[3]
            raw_dims = stream.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header ({ndim} dimensions announced, "
                                f"{len(raw_dims) // 4} present)")
            dims = tuple(int.from_bytes(raw_dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
            dtype = np.dtype(_TYPES[head[2]])
            expected = math.prod(dims) * dtype.itemsize  # Python ints: exact, no overflow
            shape = "x".join(map(str, dims)) or "a scalar"
            # gzip is deflate: a file cannot hold more than MAX_DEFLATE_RATIO times its size
            if compressed and expected > MAX_DEFLATE_RATIO * size:
                raise DataError(f"{path}: IDX header announces {shape} values, {expected:,} bytes; a gzip file of "
                                f"{size:,} bytes cannot hold more than {MAX_DEFLATE_RATIO * size:,}")
            if not compressed and size - 4 - 4 * ndim != expected:
                raise DataError(f"{path}: IDX data has {size - 4 - 4 * ndim} bytes; its header announces {expected} "
                                f"({shape} values)")
            data = stream.read(expected + 1)  # one byte more shows data beyond what the header announces
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: cannot be read as an IDX file ({err})") from None
    if len(data) != expected:
        has = f"more than {expected}" if len(data) > expected else str(len(data))
        raise DataError(f"{path}: IDX data has {has} bytes; its header announces {expected} ({shape} values)")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def find_pair(path: str | Path, prefix: str) -> tuple[Path, Path]:
    """Images and labels files: ``<prefix>-images-idx3-ubyte[.gz]`` in a folder, or an images file."""
    path = Path(path)
    if path.is_file():
        name = path.name
        if "images-idx3" not in name:
            raise DataError(f"{path}: expected an images file named *-images-idx3-ubyte[.gz] or a folder")
        labels = path.with_name(name.replace("images-idx3", "labels-idx1"))
        if not labels.exists():
            raise DataError(f"{path}: no labels file {labels.name} beside it")
        return path, labels
    for suffix in ("", ".gz"):
        images = path / f"{prefix}-images-idx3-ubyte{suffix}"
        labels = path / f"{prefix}-labels-idx1-ubyte{suffix}"
        if images.exists() and labels.exists():
            return images, labels
    raise DataError(f"{path}: no {prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz] in this folder")


def load_idx_pair(path: str | Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_file, labels_file = find_pair(path, prefix)
    x = read_idx(images_file)
    y = read_idx(labels_file)
    if x.ndim == 3:
        x = x[..., None]  # (N, H, W) -> (N, H, W, 1)
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{images_file}: images {x.shape} and labels {y.shape} do not pair up")
    return x, y.astype(np.int64)
