"""CIFAR-10 binary batches and CSV lists of images: layout, errors (exact one-line messages), caching.

Every file is written into ``tmp_path`` by the tests: tiny CIFAR batches of a few
records with known pixel values, and small PNG files listed by CSV files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cnncli.data.cifar import load_cifar10, read_batch
from cnncli.data.csv_images import load_csv_images
from cnncli.errors import DataError

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


# ------------------------------------------------------------------------------ CIFAR-10
def record(label: int, red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> bytes:
    """One record exactly as the publisher describes it: label, then the 1,024 red bytes
    (row by row), the 1,024 green, the 1,024 blue."""
    out = bytearray([label])
    for plane in (red, green, blue):
        for row in range(32):
            out += bytes(int(v) for v in plane[row])
    return bytes(out)


def pattern_record(label: int, tag: int) -> bytes:
    """Red = the row index, green = the column index, blue = 100 + tag everywhere."""
    rows, cols = np.indices((32, 32))
    return record(label, rows, cols + 50, np.full((32, 32), 100 + tag))


def write_batch(path: Path, labels, tags) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(pattern_record(lab, tag) for lab, tag in zip(labels, tags)))
    return path


def cifar_folder(root: Path, *, meta: str | None = None, test: bool = True) -> Path:
    """cifar-10-batches-bin/ under ``root``: 5 training batches of 3 records (tags 0..14,
    labels tag % 10) and a test batch of 2 (tags 50, 51)."""
    folder = root / "cifar-10-batches-bin"
    for b in range(5):
        tags = [3 * b + k for k in range(3)]
        write_batch(folder / f"data_batch_{b + 1}.bin", [t % 10 for t in tags], tags)
    if test:
        write_batch(folder / "test_batch.bin", [9, 0], [50, 51])
    (folder / "batches.meta.txt").write_text(meta if meta is not None else "\n".join(NAMES) + "\n\n\n")
    return folder


def test_read_batch_puts_planes_in_channels_and_rows_first(tmp_path):
    path = write_batch(tmp_path / "b.bin", [3, 0, 9], [0, 1, 2])
    x, y = read_batch(path)
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.uint8 and x.flags["C_CONTIGUOUS"]
    assert y.tolist() == [3, 0, 9] and y.dtype == np.int64
    rows, cols = np.indices((32, 32))
    for n in range(3):
        assert np.array_equal(x[n, :, :, 0], rows)  # red: x[n, i, j, 0] == i
        assert np.array_equal(x[n, :, :, 1], cols + 50)  # green: x[n, i, j, 1] == j + 50
        assert np.all(x[n, :, :, 2] == 100 + n)  # blue
    assert x[1, 5, 7].tolist() == [5, 57, 101]


def test_read_batch_random_bytes_match_the_published_layout(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(4, 3073), dtype=np.uint8)
    raw[:, 0] = [1, 2, 3, 4]
    (tmp_path / "r.bin").write_bytes(raw.tobytes())
    x, y = read_batch(tmp_path / "r.bin")
    assert y.tolist() == [1, 2, 3, 4]
    n, i, j, c = np.indices(x.shape)
    assert np.array_equal(x, raw[n, 1 + 1024 * c + 32 * i + j])


def test_read_batch_wrong_size_is_a_one_line_error(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(pattern_record(1, 0) + b"\x00")
    with pytest.raises(DataError) as err:
        read_batch(path)
    assert message(err) == f"{path}: is 3074 bytes: not a whole number of 3,073-byte CIFAR-10 records"
    path.write_bytes(b"")
    with pytest.raises(DataError) as err:
        read_batch(path)
    assert message(err) == f"{path}: is empty (0 bytes); expected 3,073-byte CIFAR-10 records"
    with pytest.raises(DataError) as err:
        read_batch(tmp_path / "nope.bin")
    assert message(err) == f"{tmp_path / 'nope.bin'}: does not exist"


def test_read_batch_label_out_of_range(tmp_path):
    path = write_batch(tmp_path / "b.bin", [0, 10, 255], [0, 1, 2])
    with pytest.raises(DataError) as err:
        read_batch(path)
    assert message(err) == f"{path}: record 2 of 3 (byte 3073) has label 10; CIFAR-10 labels are 0..9"


def test_load_cifar10_concatenates_batches_in_order(tmp_path):
    folder = cifar_folder(tmp_path)
    for where in (tmp_path, folder):  # the folder holding cifar-10-batches-bin, or that folder
        x, y, x_test, y_test, names = load_cifar10(where)
        assert x.shape == (15, 32, 32, 3) and x.dtype == np.uint8
        assert y.tolist() == [t % 10 for t in range(15)]
        assert x[:, 0, 0, 2].tolist() == [100 + t for t in range(15)]  # batch 1's records, then batch 2's, ...
        assert x_test.shape == (2, 32, 32, 3) and y_test.tolist() == [9, 0]
        assert x_test[:, 0, 0, 2].tolist() == [150, 151]
        assert names == NAMES  # blank lines ignored


def test_load_cifar10_without_test_does_not_need_the_test_batch(tmp_path):
    cifar_folder(tmp_path, test=False)
    x, y, x_test, y_test, names = load_cifar10(tmp_path, use_test=False)
    assert len(x) == 15 and x_test is None and y_test is None and names == NAMES
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path)
    assert message(err).startswith(f"{tmp_path / 'cifar-10-batches-bin' / 'test_batch.bin'}: does not exist")


def test_load_cifar10_missing_batch_names_it(tmp_path):
    folder = cifar_folder(tmp_path)
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path)
    assert message(err) == (f"{folder / 'data_batch_4.bin'}: does not exist; cifar-10-batches-bin/ of "
                            "cifar-10-binary.tar.gz has data_batch_1.bin ... data_batch_5.bin, test_batch.bin and "
                            "batches.meta.txt")


def test_load_cifar10_bad_batch_inside_the_folder(tmp_path):
    folder = cifar_folder(tmp_path)
    bad = folder / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path)
    assert message(err) == f"{bad}: is 9218 bytes: not a whole number of 3,073-byte CIFAR-10 records"


def test_load_cifar10_meta_needs_ten_names(tmp_path):
    folder = cifar_folder(tmp_path, meta="\n".join(NAMES[:9]) + "\n")
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path)
    assert message(err) == f"{folder / 'batches.meta.txt'}: has 9 class names; expected 10, one per line"
    (folder / "batches.meta.txt").write_text("\n".join(NAMES[:9] + ["cat"]))
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path)
    assert message(err) == f"{folder / 'batches.meta.txt'}: names the class 'cat' twice; expected 10 different names"
    (folder / "batches.meta.txt").unlink()
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path)
    assert message(err).startswith(f"{folder / 'batches.meta.txt'}: does not exist")


def test_load_cifar10_refuses_the_pickled_version_and_odd_paths(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path)
    assert message(err).startswith(f"{tmp_path}: holds the pickled Python version of CIFAR-10, which cnncli never "
                                   "loads")
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path / "nowhere")
    assert message(err) == f"{tmp_path / 'nowhere'}: does not exist"
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path / "cifar-10-binary.tar.gz")
    assert message(err).startswith(f"{tmp_path / 'cifar-10-binary.tar.gz'}: is a file")


# ------------------------------------------------------------------------------ CSV lists
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def png(path: Path, rgb, size=(5, 4)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    """tmp_path/data/imgs/{red,green,blue}{0,1}.png and tmp_path/elsewhere/blue9.png."""
    for name, rgb in COLOURS.items():
        for k in range(2):
            png(tmp_path / "data" / "imgs" / f"{name}{k}.png", rgb)
    png(tmp_path / "elsewhere" / "blue9.png", COLOURS["blue"])
    return tmp_path / "data"


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, newline="")
    return path


def load_error(csv_path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        load_csv_images(csv_path, (3, 3, 3), **kwargs)
    return message(err)


def test_csv_with_and_without_header_relative_and_absolute_paths(images, tmp_path):
    far = tmp_path / "elsewhere" / "blue9.png"
    body = (f"imgs/red0.png,red\nimgs/green0.png,green\r\n{far},blue\n imgs/red1.png , red \n\n"
            "../elsewhere/blue9.png,blue\n")
    plain = load_csv_images(write_csv(images / "plain.csv", body), (3, 3, 3))
    headed = load_csv_images(write_csv(images / "headed.csv", "path,label\n" + body), (3, 3, 3))
    for data in (plain, headed):
        assert data.class_names == ["blue", "green", "red"]  # sorted, not in order of appearance
        assert data.y.tolist() == [2, 1, 0, 2, 0]  # the rows' order
        assert data.x.shape == (5, 3, 3, 3) and data.x.dtype == np.uint8
        assert data.x[:, 0, 0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 0, 0], [0, 0, 255]]
        assert data.skipped == [] and data.cached is False


def test_csv_labels_are_strings_sorted_and_header_is_only_the_literal_names(images):
    csv_path = write_csv(images / "l.csv", "Path,Label\nimgs/red0.png,10\nimgs/red1.png,2\nimgs/blue0.png,10\n")
    with pytest.raises(DataError) as err:  # "Path,Label" is not the header: a row whose image does not exist
        load_csv_images(csv_path, (3, 3, 3))
    assert message(err) == f"{csv_path}:1: {(images / 'Path').resolve()} does not exist"
    csv_path = write_csv(images / "l.csv", "imgs/red0.png,10\nimgs/red1.png,2\nimgs/blue0.png,10\n")
    data = load_csv_images(csv_path, (3, 3, 1))
    assert data.class_names == ["10", "2"] and data.y.tolist() == [0, 1, 0]
    assert data.x.shape == (3, 3, 3, 1) and data.x[0, 0, 0, 0] == round(0.299 * 255)


def test_csv_row_errors_name_the_file_and_line(images):
    cases = [
        ("path,label\nimgs/red0.png,red\nimgs/red1.png,red,extra\n", 3, "expected 2 fields, path,label; got 3"),
        ("imgs/red0.png,red\n\n\nimgs/red1.png\n", 4, "expected 2 fields, path,label; got 1"),
        ("imgs/red0.png,red\n,red\n", 2, "empty path; expected path,label"),
        ("imgs/red0.png,red\nimgs/red1.png,  \n", 2, "empty label for imgs/red1.png"),
        ('"imgs/red0.png",red\n"imgs/\nred1.png",red\nimgs/red1.png\n', 2,
         "the path 'imgs/\\nred1.png' holds a line break or other control character"),
        ('"imgs/red0.png","red"\n"imgs/red1.png","r\te\nd"\n', 2,
         "the label 'r\\te\\nd' holds a line break or other control character"),
        ("imgs/red0.png,red\n" + "x" * 140000 + ",red\n", 2,
         "cannot be read as CSV (field larger than field limit (131072))"),
        # a quoted field over two lines (its spaces, line break included, are stripped), then an unclosed quote
        ('imgs/red0.png,"red\n"\n"imgs/red1.png,red\n', 3, "expected 2 fields, path,label; got 1"),
        ("imgs/red0.png,red\nimgs/red1.png,r\0d\n", 2,
         "the label 'r\\x00d' holds a line break or other control character"),
    ]
    for text, line, what in cases:
        csv_path = write_csv(images / "bad.csv", text)
        assert load_error(csv_path) == f"{csv_path}:{line}: {what}", text


def test_csv_missing_image_gives_the_resolved_path(images):
    csv_path = write_csv(images / "m.csv", "imgs/red0.png,red\nimgs/../imgs/nope.png,red\n")
    assert load_error(csv_path) == f"{csv_path}:2: {(images / 'imgs' / 'nope.png').resolve()} does not exist"
    csv_path = write_csv(images / "m.csv", "imgs/red0.png,red\nimgs,red\n")
    assert load_error(csv_path) == f"{csv_path}:2: {(images / 'imgs').resolve()} is not a file"
    # A missing image is an error even with on_bad_image: skip (the list is wrong, not the image).
    csv_path = write_csv(images / "m.csv", "imgs/red0.png,red\nimgs/nope.png,red\n")
    assert load_error(csv_path, on_bad_image="skip").endswith("nope.png does not exist")


def test_csv_unreadable_image_is_an_error_or_skipped(images):
    broken = images / "imgs" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    csv_path = write_csv(images / "u.csv", "imgs/red0.png,red\nimgs/blue0.png,blue\nimgs/broken.png,blue\n")
    text = load_error(csv_path)
    assert text.startswith(f"{csv_path}:3: {broken.resolve()}: not a readable image (")
    assert text.endswith("); set data.on_bad_image: skip to leave such files out")
    data = load_csv_images(csv_path, (3, 3, 3), on_bad_image="skip")
    assert data.skipped == [str(broken.resolve())]
    assert data.y.tolist() == [1, 0] and data.class_names == ["blue", "red"]


def test_csv_whole_file_errors(images, tmp_path):
    csv_path = write_csv(images / "e.csv", "")
    assert load_error(csv_path) == f"{csv_path}: is empty; expected rows of path,label"
    write_csv(csv_path, "\n\n")
    assert load_error(csv_path) == f"{csv_path}: is empty; expected rows of path,label"
    write_csv(csv_path, "path,label\n")
    assert load_error(csv_path) == f"{csv_path}: has a header row and no rows after it; expected rows of path,label"
    write_csv(csv_path, "imgs/red0.png,red\nimgs/red1.png,red\n")
    assert load_error(csv_path) == f"{csv_path}: found 1 class (red); a classifier needs at least 2"
    assert load_error(tmp_path / "absent.csv") == f"{tmp_path / 'absent.csv'}: does not exist"
    csv_path.write_bytes(b"imgs/red0.png,red\nimgs/red1.png,r\xe9d\n")
    assert load_error(csv_path) == f"{csv_path}:2: not UTF-8 text (invalid continuation byte at byte 33)"
    (images / "imgs" / "broken.png").write_bytes(b"nope")
    write_csv(csv_path, "imgs/broken.png,red\nimgs/broken.png,blue\n")
    assert load_error(csv_path, on_bad_image="skip") == f"{csv_path}: no readable images"


def test_csv_byte_order_mark_and_header(images):
    csv_path = images / "bom.csv"
    csv_path.write_bytes("\ufeffpath,label\r\nimgs/red0.png,red\r\nimgs/green0.png,green\r\n".encode())
    data = load_csv_images(csv_path, (3, 3, 3))
    assert data.class_names == ["green", "red"] and data.y.tolist() == [1, 0]


def test_csv_cache_is_used_and_invalidated(images, tmp_path):
    cache = tmp_path / "cache"
    csv_path = write_csv(images / "c.csv", "imgs/red0.png,red\nimgs/green0.png,green\n")
    first = load_csv_images(csv_path, (3, 3, 3), cache_dir=cache)
    second = load_csv_images(csv_path, (3, 3, 3), cache_dir=cache)
    assert first.cached is False and second.cached is True
    assert np.array_equal(first.x, second.x) and np.array_equal(first.y, second.y)
    assert second.class_names == ["green", "red"]
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].startswith("csv_images-") and files[0].endswith(".npz")
    with np.load(cache / files[0], allow_pickle=False) as c:  # image_folder's cache format, no pickles
        assert sorted(c.files) == ["class_names", "on_bad_image", "skipped", "x", "y"]

    # Proof that the second load did not decode: an image changed behind the cache's back
    # (same size, same modification time) is still served from the cache.
    red0 = images / "imgs" / "red0.png"
    st = red0.stat()
    red0.write_bytes(b"\0" * st.st_size)
    os.utime(red0, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_csv_images(csv_path, (3, 3, 3), cache_dir=cache).cached is True
    png(red0, COLOURS["red"])
    os.utime(red0, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    # A changed CSV (same images, other labels) is not served from the stale cache.
    write_csv(csv_path, "imgs/red0.png,a\nimgs/green0.png,b\n")
    changed = load_csv_images(csv_path, (3, 3, 3), cache_dir=cache)
    assert changed.cached is False and changed.class_names == ["a", "b"]
    # ... nor are other rows in the same order of images, another shape or another on_bad_image.
    write_csv(csv_path, "imgs/green0.png,b\nimgs/red0.png,a\n")
    swapped = load_csv_images(csv_path, (3, 3, 3), cache_dir=cache)
    assert swapped.cached is False and swapped.y.tolist() == [1, 0] and swapped.x[0, 0, 0].tolist() == [0, 255, 0]
    assert load_csv_images(csv_path, (2, 2, 3), cache_dir=cache).cached is False
    # (As in image_folder, the on_bad_image setting is checked in the cache file, not part of its key.)
    assert load_csv_images(csv_path, (3, 3, 3), cache_dir=cache, on_bad_image="skip").cached is False
    assert load_csv_images(csv_path, (3, 3, 3), cache_dir=cache, on_bad_image="skip").cached is True
    # A changed image (new modification time) is decoded again.
    green0 = images / "imgs" / "green0.png"
    png(green0, (1, 2, 3))
    os.utime(green0, ns=(green0.stat().st_atime_ns, green0.stat().st_mtime_ns + 10**9))
    again = load_csv_images(csv_path, (3, 3, 3), cache_dir=cache)
    assert again.cached is False and again.x[0, 0, 0].tolist() == [1, 2, 3]


def test_csv_same_text_in_another_folder_is_another_cache_entry(images, tmp_path):
    cache = tmp_path / "cache"
    text = "red.png,red\nblue.png,blue\n"
    for name, rgb in (("one", (10, 0, 0)), ("two", (20, 0, 0))):
        png(tmp_path / name / "red.png", rgb)
        png(tmp_path / name / "blue.png", (0, 0, 9))
        write_csv(tmp_path / name / "list.csv", text)
    one = load_csv_images(tmp_path / "one" / "list.csv", (3, 3, 3), cache_dir=cache)
    two = load_csv_images(tmp_path / "two" / "list.csv", (3, 3, 3), cache_dir=cache)
    assert two.cached is False
    assert one.x[0, 0, 0].tolist() == [10, 0, 0] and two.x[0, 0, 0].tolist() == [20, 0, 0]


def test_csv_channels_must_be_one_or_three(images):
    csv_path = write_csv(images / "c.csv", "imgs/red0.png,red\nimgs/green0.png,green\n")
    with pytest.raises(DataError) as err:
        load_csv_images(csv_path, (3, 3, 2))
    assert message(err) == f"{csv_path}: images can be read with 1 or 3 channels; the model's input has 2"
