"""Arrays from a ``.npz`` file: images ``x`` (N, H, W[, C]) and labels ``y`` (N,) or one-hot (N, K).

Loaded with ``allow_pickle=False``: a file holding Python objects is refused, never run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnncli.errors import DataError


def load_npz(path: str | Path, x_key: str = "x", y_key: str = "y") -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
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
