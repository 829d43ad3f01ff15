"""Images in class folders: ``root/<class>/*.{jpg,jpeg,png,bmp,gif,webp}``, read with Pillow.

Classes are the sub-folders of ``root`` in byte order of their names (``sorted``), so
the order is deterministic (``Motorbikes`` before ``airplanes``) and recorded in the
run. Each image is converted to the configured channels (greyscale to RGB by repeating,
RGB to greyscale by luminance, with Pillow's ``convert``) and resized to the input size
with bilinear interpolation, by :func:`cnncli.data.images.load_image`, the one policy
for every image cnncli reads (formats by their bytes, ``data.max_image_pixels`` checked
from the header before decoding, EXIF orientation applied, animated files read as their
first frame). A file that cannot be decoded, or is refused, is an error naming it, or,
with ``on_bad_image: skip``, left out and listed.

Decoded arrays can be cached as an ``.npz`` keyed by the files (names, sizes,
modification times) and the settings, so a second run does not decode again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncli.data.images import DEFAULT_MAX_IMAGE_PIXELS, BadImageError, load_image
from cnncli.errors import DataError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# 2: EXIF orientation applied and the pixel limit in the key (cnncli.data.images); older caches are decoded again.
CACHE_VERSION = 2


@dataclass
class FolderImages:
    x: np.ndarray  # (N, H, W, C) uint8
    y: np.ndarray  # (N,) int64
    class_names: list[str]
    skipped: list[str] = field(default_factory=list)
    cached: bool = False
    #: Animated files, read as their first frame (not kept in the cache: said when decoded).
    animated: list[str] = field(default_factory=list)


def list_classes(root: Path, only: list[str] | None = None) -> list[tuple[str, list[Path]]]:
    """[(class name, sorted image files)] of the class folders under ``root`` (or of the
    folders named in ``only``; sorted either way)."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class folders; expected {root}/<class>/<image files>")
    if only is not None:
        from cnncli.nn.validate import did_you_mean

        names = [p.name for p in classes]
        for name in only:
            if name not in names:
                raise DataError(f"data.classes: unknown class {name!r}{did_you_mean(name, names)} in {root}; "
                                f"it has {len(names)}: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''}")
        classes = [p for p in classes if p.name in only]
    out = []
    for folder in classes:
        files = sorted(p for p in folder.iterdir()
                       if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))
        if not files:
            raise DataError(f"{folder}: no image files ({', '.join(EXTENSIONS)})")
        out.append((folder.name, files))
    if len(out) < 2:
        raise DataError(f"{root}: found 1 class folder ({out[0][0]}); a classifier needs at least 2")
    return out


def cache_key(classes: list[tuple[str, list[Path]]], root: Path, shape: tuple[int, int, int], max_pixels: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"v": CACHE_VERSION, "shape": shape, "root": str(root.resolve()),
                              "resample": "bilinear", "max_pixels": max_pixels}).encode())
    for name, files in classes:
        for f in files:
            st = f.stat()
            digest.update(f"{name}/{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def load_image_folder(root: str | Path, shape: tuple[int, int, int], *, on_bad_image: str = "error",
                      cache_dir: str | Path | None = None, classes: list[str] | None = None,
                      max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> FolderImages:
    """Decode every image under ``root`` (of the class folders ``classes``, default all)
    to uint8 ``shape`` = (H, W, C); an image of more than ``max_pixels`` is refused."""
    root = Path(root)
    if shape[2] not in (1, 3):
        raise DataError(f"{root}: images can be read with 1 or 3 channels; the model's input has {shape[2]}")
    classes = list_classes(root, classes)
    key = lambda: f"image_folder-{cache_key(classes, root, shape, max_pixels)}"  # noqa: E731 (hashes files)
    cache_file, cached = lookup_cache(cache_dir, key, on_bad_image)
    if cached is not None:
        return cached
    items = [(f, label, str(f)) for label, (_, files) in enumerate(classes) for f in files]
    names = [name for name, _ in classes]
    return decode(items, shape, names, on_bad_image, cache_file, where=str(root), max_pixels=max_pixels)


def decode(items: list[tuple[Path, int, str]], shape: tuple[int, int, int], names: list[str], on_bad_image: str,
           cache_file: Path | None, where: str, max_pixels: int) -> FolderImages:
    """Decode (file, label, how to name it in an error) items into FolderImages, leaving
    out unreadable or refused files with ``on_bad_image: skip``, and write the cache."""
    height, width, channels = shape
    images, labels, skipped, animated = [], [], [], []
    for path, label, shown in items:
        try:
            images.append(load_image(path, height, width, channels, max_pixels=max_pixels, animated=animated))
        except BadImageError as err:
            if on_bad_image == "error":
                raise DataError(f"{shown}: not a readable image ({err.reason}); "
                                "set data.on_bad_image: skip to leave such files out") from None
            skipped.append(str(path))
            continue
        labels.append(label)
    if not images:
        raise DataError(f"{where}: no readable images")
    result = FolderImages(np.stack(images), np.asarray(labels, dtype=np.int64), names, skipped, animated=animated)
    if cache_file is not None:
        _write_cache(cache_file, result, on_bad_image)
    return result


def lookup_cache(cache_dir: str | Path | None, name, on_bad_image: str) -> tuple[Path | None, FolderImages | None]:
    """(the cache file ``cache_dir/<name()>.npz``, its images if cached): (None, None)
    without a cache folder (``name`` is only computed when there is one: it hashes files)."""
    if cache_dir is None:
        return None, None
    path = Path(cache_dir) / f"{name()}.npz"
    return path, read_cache(path, on_bad_image)


def read_cache(path: Path, on_bad_image: str) -> FolderImages | None:
    """The decoded images cached in ``path`` for the same ``on_bad_image``, or None (a
    missing or damaged cache is simply rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as c:
            if str(c["on_bad_image"]) == on_bad_image:
                return FolderImages(c["x"], c["y"], [str(s) for s in c["class_names"]],
                                    [str(s) for s in c["skipped"]], cached=True)
    except (OSError, ValueError, KeyError):
        pass
    return None


def _write_cache(path: Path, data: FolderImages, on_bad_image: str) -> None:
    """Best effort: a cache that cannot be written is simply not there next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, x=data.x, y=data.y, class_names=np.array(data.class_names),
                     skipped=np.array(data.skipped, dtype=str), on_bad_image=np.array(on_bad_image))
        os.replace(tmp, path)
    except OSError:
        pass
