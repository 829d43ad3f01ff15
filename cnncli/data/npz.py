"""Arrays from a ``.npz`` file: images ``x`` (N, H, W[, C]) and labels ``y`` (N,) or one-hot (N, K).

Loaded with ``allow_pickle=False``: a file holding Python objects is refused, never run.
Before any array is allocated, the file must start as a zip archive does, and the
``.npy`` header of each array read must be sound and announce no more bytes than the
archive holds for it (:func:`check_headers`): a header claiming a billion rows, a
negative or overflowing dimension, or a wrong magic number is one line, not an
allocation.
"""

from __future__ import annotations

import ast
import math
import zipfile
from pathlib import Path

import numpy as np

from cnncli.errors import DataError

NPY_MAGIC = b"\x93NUMPY"
ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")  # a member, or the end record of an empty archive
#: deflate's largest expansion: 1,032 bytes out per byte in.
MAX_DEFLATE_RATIO = 1032
#: numpy's own bound on a .npy header's length (numpy.lib.format's max_header_size).
MAX_HEADER = 10_000


def load_npz(path: str | Path, x_key: str = "x", y_key: str = "y") -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    check_headers(path, (x_key, y_key))
    try:
        # Our own handle: numpy leaves its own open when the zip cannot be read.
        with open(path, "rb") as fh:
            archive = np.load(fh, allow_pickle=False)
            if not hasattr(archive, "files"):
                raise DataError(f"{path}: holds a single array (.npy), not an npz archive; save {x_key!r} and "
                                f"{y_key!r} with numpy.savez")
            with archive:
                missing = [k for k in (x_key, y_key) if k not in archive.files]
                if missing:
                    raise DataError(f"{path}: no array {missing[0]!r}; it holds "
                                    f"{', '.join(archive.files) or 'nothing'}")
                x, y = archive[x_key], archive[y_key]
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 a damaged zip, deflate stream or .npy header raises many kinds
        # (BadZipFile, zlib.error, NotImplementedError, tokenize.TokenError, ...); pickles are refused here too
        raise DataError(f"{path}: cannot be read as an npz file ({type(err).__name__}: {err})") from None
    if x.dtype.kind not in "uif":
        raise DataError(f"{path}: {x_key} has dtype {x.dtype}; expected numbers")
    if x.ndim == 3:
        x = x[..., None]  # (N, H, W) -> (N, H, W, 1)
    if x.ndim != 4:
        raise DataError(f"{path}: {x_key} has shape {x.shape}; expected (N, H, W) or (N, H, W, C)")
    if y.ndim == 2:
        y = _one_hot_labels(y, path, y_key)  # one-hot (N, K) -> (N,)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: {y_key} has shape {y.shape}; expected ({len(x)},) labels or one-hot rows")
    if y.dtype.kind == "f":
        if not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{path}: {y_key} holds non-integer labels")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{path}: {y_key} has dtype {y.dtype}; expected integer labels")
    return x, y.astype(np.int64)


def _one_hot_labels(y: np.ndarray, path: Path, key: str) -> np.ndarray:
    """(N, K) rows with exactly one 1 and K-1 zeros -> (N,) class indices; multi-hot,
    all-zero or soft rows are refused (the arg max would change what they say)."""
    if y.dtype.kind not in "uifb" or y.size == 0:
        return y.argmax(axis=1) if y.size else np.zeros(len(y), dtype=np.int64)
    ones, zeros = (y == 1).sum(axis=1), (y == 0).sum(axis=1)
    bad = np.flatnonzero((ones != 1) | (ones + zeros != y.shape[1]))
    if bad.size:
        row = int(bad[0])
        what = ("has no 1" if ones[row] == 0 and ones[row] + zeros[row] == y.shape[1] else
                f"has {int(ones[row])} ones (multi-hot)" if ones[row] + zeros[row] == y.shape[1] else
                "holds values other than 0 and 1")
        raise DataError(f"{path}: {key} row {row} {what}; expected one-hot rows (exactly one 1), or (N,) class "
                        f"labels ({bad.size} such rows)")
    return y.argmax(axis=1)


def check_headers(path: Path, keys: tuple[str, ...]) -> None:
    """Refuse, in one line naming the file, what would make numpy allocate or fail before
    the arrays ``keys`` are read: a file that is not a zip archive, and, for each
    ``<key>.npy`` present, a damaged header, a dtype holding Python objects, a negative
    dimension, or a shape whose bytes (computed exactly) differ from what the member holds.
    A single .npy file, a missing key and a damaged zip are left to :func:`load_npz`."""
    try:
        with open(path, "rb") as fh:
            start = fh.read(6)
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None
    if start.startswith(NPY_MAGIC):
        return  # a single array: load_npz says so
    if not start.startswith(ZIP_STARTS):
        got = "an empty file (0 bytes)" if not start else f"bytes {start.hex(' ')}"
        raise DataError(f"{path}: cannot be read as an npz file: expected a zip archive of .npy arrays "
                        f"(numpy.savez); got {got}")
    try:
        with zipfile.ZipFile(path) as archive:
            for key in keys:
                try:
                    info = archive.getinfo(f"{key}.npy")
                except KeyError:
                    continue
                with archive.open(info) as member:
                    _check_member(path, key, info, member)
    except DataError:
        raise
    except Exception:  # noqa: BLE001 a damaged zip: load_npz reads it again and reports numpy's own error
        return


def _check_member(path: Path, key: str, info: zipfile.ZipInfo, member) -> None:
    where = f"{path}: {key}"
    magic = member.read(8)
    if not magic.startswith(NPY_MAGIC) or len(magic) < 8:
        raise DataError(f"{where}: not a .npy array (bad magic number: expected 93 4e 55 4d 50 59; got "
                        f"{magic[:6].hex(' ') or 'nothing'})")
    major = magic[6]
    if major not in (1, 2, 3):
        raise DataError(f"{where}: .npy format version {major}.{magic[7]}; expected 1.0, 2.0 or 3.0")
    length_bytes = member.read(2 if major == 1 else 4)
    length = int.from_bytes(length_bytes, "little")
    if len(length_bytes) < (2 if major == 1 else 4) or length > MAX_HEADER:
        raise DataError(f"{where}: damaged .npy header (length {length}); expected at most {MAX_HEADER} bytes")
    text = member.read(length)
    try:
        header = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
        shape, descr = header["shape"], header["descr"]
        dtype = np.lib.format.descr_to_dtype(descr)
    except Exception:  # noqa: BLE001 anything unparsable is a damaged header
        raise DataError(f"{where}: damaged .npy header ({text[:60]!r})") from None
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects (dtype {dtype}); cnncli reads npz files without unpickling "
                        "anything (allow_pickle=False): save numbers")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise DataError(f"{where}: damaged .npy header: shape {shape!r}; expected a tuple of ints")
    if any(d < 0 for d in shape):
        raise DataError(f"{where}: shape {shape} has a negative dimension")
    announced = math.prod(shape) * dtype.itemsize  # Python ints: exact, no overflow
    held = info.file_size - (len(magic) + len(length_bytes) + length)
    if announced != held:
        raise DataError(f"{where}: the .npy header announces shape {shape} of {dtype}, {announced:,} bytes; the "
                        f"file holds {held:,}")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise DataError(f"{where}: the zip entry announces {info.file_size:,} bytes and stores {info.compress_size:,}")
    if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 64:
        raise DataError(f"{where}: the zip entry announces {info.file_size:,} bytes from {info.compress_size:,} "
                        f"compressed; deflate gives at most {MAX_DEFLATE_RATIO} times as many")
