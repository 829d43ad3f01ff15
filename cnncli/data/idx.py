"""The IDX file format of MNIST, Fashion-MNIST and EMNIST, raw or gzip-compressed.

Layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), the number of dimensions, each dimension as a big-endian
uint32, then the values, big-endian, in C order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from cnncli.errors import DataError

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (gzip detected from its magic bytes)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: cannot be read as an IDX file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX data has {len(raw) - header} bytes; its header announces {expected}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


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
