"""CIFAR-10, the **binary** version (``cifar-10-binary.tar.gz``); the pickled Python version is never read.

The archive unpacks to ``cifar-10-batches-bin/`` holding ``data_batch_1.bin`` ...
``data_batch_5.bin`` (training, 10,000 records each), ``test_batch.bin`` (10,000) and
``batches.meta.txt`` (the 10 class names, one per line, in label order: airplane,
automobile, bird, cat, deer, dog, frog, horse, ship, truck; blank lines are ignored).

Each record is 3,073 bytes: one label byte (0-9), then 3,072 pixel bytes: the 1,024
red values, then the 1,024 green, then the 1,024 blue, each plane 32x32 in row-major
order (the first 32 bytes of a plane are its top row, left to right). A batch file is a
whole, positive number of records and nothing else (no header). Images are returned
as uint8 (N, 32, 32, 3), channels last, the red plane in ``[..., 0]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnncli.errors import DataError

FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
SIDE = 32
PLANE = SIDE * SIDE  # 1,024 bytes of one colour
RECORD = 1 + 3 * PLANE  # 3,073 bytes: label, red, green, blue
NUM_CLASSES = 10


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, 32, 32, 3), y int64 (N,)) of one CIFAR-10 binary batch file."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: does not exist") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    if size == 0:
        raise DataError(f"{path}: is empty (0 bytes); expected 3,073-byte CIFAR-10 records")
    if size % RECORD:
        raise DataError(f"{path}: is {size} bytes: not a whole number of 3,073-byte CIFAR-10 records")
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    if raw.size != size:  # changed while being read
        raise DataError(f"{path}: is {raw.size} bytes: not a whole number of 3,073-byte CIFAR-10 records")
    records = raw.reshape(-1, RECORD)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}: record {i + 1} of {len(records)} (byte {i * RECORD}) has label {int(labels[i])}; "
                        f"CIFAR-10 labels are 0..{NUM_CLASSES - 1}")
    # (N, 3, 32, 32) planes -> (N, 32, 32, 3) channels last
    x = np.ascontiguousarray(records[:, 1:].reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1))
    return x, labels.astype(np.int64)


def find_folder(folder: str | Path) -> Path:
    """``cifar-10-batches-bin`` itself, or the one inside ``folder``."""
    folder = Path(folder)
    if (folder / FOLDER).is_dir():
        return folder / FOLDER
    if folder.is_dir():
        if (folder / "cifar-10-batches-py").is_dir() or (folder / "data_batch_1").is_file():
            raise DataError(f"{folder}: holds the pickled Python version of CIFAR-10, which cnncli never loads; "
                            f"use the binary version (cifar-10-binary.tar.gz, unpacked to {FOLDER}/)")
        return folder
    if folder.is_file():
        raise DataError(f"{folder}: is a file; expected the folder {FOLDER} (unpack cifar-10-binary.tar.gz) "
                        "or a folder containing it")
    raise DataError(f"{folder}: does not exist")


def read_class_names(path: str | Path) -> list[str]:
    """The 10 names of ``batches.meta.txt``, one per line, blank lines ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: does not exist; expected the {NUM_CLASSES} class names of CIFAR-10") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != NUM_CLASSES:
        raise DataError(f"{path}: has {len(names)} class names; expected {NUM_CLASSES}, one per line")
    if len(set(names)) != NUM_CLASSES:
        twice = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{path}: names the class {twice!r} twice; expected {NUM_CLASSES} different names")
    return names


def load_cifar10(folder: str | Path, use_test: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[str]]:
    """(x_train, y_train, x_test or None, y_test or None, class names): the 5 data batches
    concatenated in order (50,000 images in the official files), and ``test_batch.bin``
    when ``use_test``. ``folder`` is ``cifar-10-batches-bin`` or a folder containing it."""
    root = find_folder(folder)
    wanted = TRAIN_FILES + ((TEST_FILE,) if use_test else ()) + (META_FILE,)
    for name in wanted:
        if not (root / name).is_file():
            raise DataError(f"{root / name}: does not exist; {FOLDER}/ of cifar-10-binary.tar.gz has "
                            f"{', '.join(TRAIN_FILES[:1])} ... {TRAIN_FILES[-1]}, {TEST_FILE} and {META_FILE}")
    names = read_class_names(root / META_FILE)
    batches = [read_batch(root / name) for name in TRAIN_FILES]
    x_train = np.concatenate([x for x, _ in batches])
    y_train = np.concatenate([y for _, y in batches])
    x_test = y_test = None
    if use_test:
        x_test, y_test = read_batch(root / TEST_FILE)
    return x_train, y_train, x_test, y_test, names
