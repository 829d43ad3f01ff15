"""Images listed in a CSV file of ``path,label`` rows (``data.source: csv``), read with Pillow.

The file is UTF-8 text (a byte-order mark is allowed) read with Python's ``csv`` module
(comma-separated, ``"`` quotes). Each row has exactly two fields: the image's path and its
label. A relative path is relative to the folder of the CSV file; an absolute path is
taken as it is. Labels are strings; the classes are the distinct labels in byte order
(``sorted``, as image_folder sorts its folders: ``"10"`` comes before ``"2"``), and a
row's class index is its label's position in that order. Spaces around a field are
ignored, and so are blank lines; a path or label holding a line break or other control
character is refused. If the first row is literally ``path,label`` it is a
header and skipped. Images keep the order of the rows.

Each image is decoded as image_folder decodes it (:func:`~cnncli.data.images.load_image`:
converted to the configured channels, resized bilinearly, ``max_pixels`` checked from
its header before decoding). A row whose image does not
exist is an error; an image that cannot be decoded is an error too, or, with
``on_bad_image: skip``, left out and listed. Errors name the CSV file and the line
(``train.csv:7: ...``, counted from 1 as an editor counts; a quoted field spanning
lines is counted at its first line).

Decoded arrays can be cached in the image_folder cache format, keyed by the CSV's bytes,
its folder, the images' sizes and modification times and the shape.
"""

from __future__ import annotations

import csv
import hashlib
import io
import unicodedata
from pathlib import Path


from cnncli.data.image_folder import FolderImages, cache_key, decode, lookup_cache
from cnncli.data.images import DEFAULT_MAX_IMAGE_PIXELS
from cnncli.errors import DataError

HEADER = ["path", "label"]


def read_rows(csv_path: Path, raw: bytes) -> list[tuple[int, Path, str]]:
    """[(line number, image path, label)] of the CSV file's rows, each image checked to exist."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{csv_path}:{line}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    folder = csv_path.parent
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, Path, str]] = []
    seen_any = False
    while True:
        line = reader.line_num + 1  # the row's first line
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DataError(f"{csv_path}:{line}: cannot be read as CSV ({err})") from None
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line
        fields = [f.strip() for f in row]
        if not seen_any:
            seen_any = True
            if fields == HEADER:
                continue
        if len(fields) != 2:
            raise DataError(f"{csv_path}:{line}: expected 2 fields, path,label; got {len(fields)}")
        name, label = fields
        for what, value in (("path", name), ("label", label)):
            if any(unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029" for ch in value):
                raise DataError(f"{csv_path}:{line}: the {what} {value!r} holds a line break or other control "
                                "character")
        if not name:
            raise DataError(f"{csv_path}:{line}: empty path; expected path,label")
        if not label:
            raise DataError(f"{csv_path}:{line}: empty label for {name}")
        path = (folder / name).resolve()  # an absolute name stays as it is
        if not path.exists():
            raise DataError(f"{csv_path}:{line}: {path} does not exist")
        if not path.is_file():
            raise DataError(f"{csv_path}:{line}: {path} is not a file")
        rows.append((line, path, label))
    if not rows:
        what = "has a header row and no rows after it" if seen_any else "is empty"
        raise DataError(f"{csv_path}: {what}; expected rows of path,label")
    return rows


def csv_cache_key(raw: bytes, rows: list[tuple[int, Path, str]], csv_path: Path,
                  shape: tuple[int, int, int], max_pixels: int) -> str:
    """The CSV's bytes and image_folder's key over its files (sizes, modification times,
    the CSV's folder, the shape)."""
    files_key = cache_key([(label, [path]) for _, path, label in rows], csv_path.parent, tuple(shape), max_pixels)
    digest = hashlib.sha256(b"csv_images\n")
    digest.update(hashlib.sha256(raw).digest())
    digest.update(files_key.encode())
    return digest.hexdigest()[:24]


def load_csv_images(csv_path: str | Path, shape: tuple[int, int, int], *, on_bad_image: str = "error",
                    cache_dir: str | Path | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> FolderImages:
    """Decode every image the CSV file lists to uint8 ``shape`` = (H, W, C)."""
    csv_path = Path(csv_path)
    if shape[2] not in (1, 3):
        raise DataError(f"{csv_path}: images can be read with 1 or 3 channels; the model's input has {shape[2]}")
    if on_bad_image not in ("error", "skip"):
        raise DataError(f"{csv_path}: on_bad_image is {on_bad_image!r}; expected error or skip")
    try:
        raw = csv_path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{csv_path}: does not exist") from None
    except OSError as err:
        raise DataError(f"{csv_path}: cannot be read ({err})") from None
    rows = read_rows(csv_path, raw)
    names = sorted({label for _, _, label in rows})
    if len(names) < 2:
        raise DataError(f"{csv_path}: found 1 class ({names[0]}); a classifier needs at least 2")
    key = lambda: f"csv_images-{csv_cache_key(raw, rows, csv_path, shape, max_pixels)}"  # noqa: E731 (hashes files)
    cache_file, cached = lookup_cache(cache_dir, key, on_bad_image)
    if cached is not None:
        return cached
    index = {name: i for i, name in enumerate(names)}
    items = [(path, index[label], f"{csv_path}:{line}: {path}") for line, path, label in rows]
    return decode(items, shape, names, on_bad_image, cache_file, where=str(csv_path), max_pixels=max_pixels)
