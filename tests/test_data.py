"""Data sources and the dataset pipeline: synthetic, image folders, npz, IDX; splits and normalization.

Small image folders, npz and IDX files are written into ``tmp_path`` by the tests
themselves. The real Caltech-101 folder is read from ``../shared/datasets`` and the
real Fashion-MNIST files from ``/usr/share/datasets/fashion-mnist``; tests that need
them skip where they are absent.
"""

from __future__ import annotations

import copy
import gzip
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import cnncli
from cnncli.data import (apply_normalization, convert_channels, fit_normalization, load_dataset, seeded_rng,
                         stratified_split)
from cnncli.data.idx import load_idx_pair, read_idx
from cnncli.data.image_folder import load_image_folder
from cnncli.data.npz import load_npz
from cnncli.data.synthetic import make_synthetic
from cnncli.errors import DataError

CALTECH = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "caltech101-motorbikes-airplanes"
FASHION = Path("/usr/share/datasets/fashion-mnist")
GREY_MOTORBIKES = ("image_0512", "image_0561", "image_0570", "image_0576", "image_0640", "image_0659", "image_0771")

needs_caltech = pytest.mark.skipif(not (CALTECH / "Motorbikes").is_dir(), reason=f"{CALTECH} is not there")
needs_fashion = pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
                                   reason=f"{FASHION} is not there (apt-get install dataset-fashion-mnist)")


def values(data: dict, input_shape=(8, 8, 3), *, seed=0, split=0.2, dtype="float32", outputs=None) -> dict:
    """A resolved config's values, as ``load_dataset`` reads them (validated by load_config)."""
    units = outputs or 2
    cfg = cnncli.load_config({
        "seed": seed, "data": data,
        "model": {"input_shape": list(input_shape),
                  "layers": [{"type": "flatten"}, {"type": "dense", "units": units, "activation": "softmax"}]},
        "train": {"validation_split": split, "dtype": dtype}})
    return cfg.values


# ----------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_for_a_seed():
    a = make_synthetic(60, 3, 12, 10, 3, 0.1, seed=5)
    b = make_synthetic(60, 3, 12, 10, 3, 0.1, seed=5)
    assert a[0].dtype == np.uint8 and a[0].shape == (60, 12, 10, 3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert a[0].tobytes() == b[0].tobytes()


def test_synthetic_seeds_differ():
    a, ya, _ = make_synthetic(60, 3, 12, 12, 3, 0.1, seed=5)
    b, yb, _ = make_synthetic(60, 3, 12, 12, 3, 0.1, seed=6)
    assert not np.array_equal(a, b)
    assert not np.array_equal(ya, yb)


@pytest.mark.parametrize("h, w, c", [(8, 8, 1), (8, 8, 3), (5, 17, 1), (32, 20, 3), (3, 3, 3)])
def test_synthetic_any_size_and_1_or_3_channels(h, w, c):
    x, y, names = make_synthetic(24, 4, h, w, c, 0.05, seed=0)
    assert x.shape == (24, h, w, c) and x.dtype == np.uint8
    assert y.shape == (24,) and y.dtype == np.int64
    assert names == ["circle", "square", "triangle", "cross"]
    assert x.std() > 0  # not blank


@pytest.mark.parametrize("n, k", [(60, 2), (60, 3), (61, 6), (12, 4)])
def test_synthetic_classes_are_balanced(n, k):
    _, y, _ = make_synthetic(n, k, 8, 8, 3, 0.1, seed=1)
    counts = np.bincount(y, minlength=k)
    assert len(counts) == k and counts.max() - counts.min() <= 1
    assert counts.sum() == n


def test_synthetic_noise_zero_has_two_colours_per_image_channel():
    x, _, _ = make_synthetic(10, 2, 16, 16, 1, 0.0, seed=0)
    for img in x:
        assert len(np.unique(img)) == 2  # shape and background only


def test_synthetic_dataset_is_bit_identical_for_a_seed():
    data = {"source": "synthetic", "num_samples": 90, "num_classes": 3}
    a = load_dataset(values(data, outputs=3, seed=3))
    b = load_dataset(values(data, outputs=3, seed=3))
    c = load_dataset(values(data, outputs=3, seed=4))
    for s in ("train", "validation"):
        assert getattr(a, s).x.tobytes() == getattr(b, s).x.tobytes()
        assert np.array_equal(getattr(a, s).y, getattr(b, s).y)
    assert not np.array_equal(a.train.x, c.train.x)
    assert a.class_names == ["circle", "square", "triangle"]
    assert a.train.x.dtype == np.float32 and 0 <= a.train.x.min() and a.train.x.max() <= 1
    assert len(a.train) == 72 and len(a.validation) == 18
    assert a.test is None and a.evaluation is a.validation


def test_float64_dtype_is_honoured():
    data = {"source": "synthetic", "num_samples": 20, "num_classes": 2}
    assert load_dataset(values(data, dtype="float64")).train.x.dtype == np.float64


# --------------------------------------------------------------- image folders (tmp)
def write(path: Path, img) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def small_folder(root: Path) -> dict[str, tuple[int, int, int]]:
    """Two classes of flat-coloured images in several formats, sizes and modes.

    Returns {relative path: the RGB colour the file was drawn with}.
    """
    from PIL import Image

    made = {}

    def add(rel, mode, size, rgb, fmt_kwargs=None):
        if mode == "L":
            img = Image.new("L", size, rgb[0])
        elif mode == "RGBA":
            img = Image.new("RGBA", size, (*rgb, 255))
        elif mode == "P":
            img = Image.new("RGB", size, rgb).convert("P")
        else:
            img = Image.new(mode, size, rgb)
        write(root / rel, img)
        made[rel] = rgb if mode != "L" else (rgb[0],) * 3

    add("reds/a.png", "RGB", (20, 10), (255, 0, 0))
    add("reds/b.jpg", "RGB", (31, 17), (250, 10, 10))
    add("reds/c.BMP", "RGB", (8, 8), (200, 0, 0))
    add("reds/d.gif", "P", (12, 40), (255, 0, 0))
    add("reds/e.webp", "RGB", (16, 16), (240, 0, 0))
    add("reds/f.png", "RGBA", (9, 13), (255, 0, 0))
    add("greys/a.png", "L", (50, 7), (90, 90, 90))
    add("greys/b.jpeg", "L", (10, 10), (128, 128, 128))
    add("greys/c.bmp", "L", (5, 25), (30, 30, 30))
    add("greys/d.webp", "RGB", (8, 9), (60, 60, 60))
    # Not images, or hidden: ignored.
    (root / "reds" / "notes.txt").write_text("not an image")
    write(root / "reds" / ".hidden.png", Image.new("RGB", (4, 4)))
    (root / ".git").mkdir()
    return made


def test_image_folder_reads_every_format_size_and_mode(tmp_path):
    made = small_folder(tmp_path / "imgs")
    data = load_image_folder(tmp_path / "imgs", (6, 5, 3))
    assert data.class_names == ["greys", "reds"]  # sorted
    assert data.x.shape == (10, 6, 5, 3) and data.x.dtype == np.uint8
    assert data.y.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert data.skipped == [] and data.cached is False
    order = sorted(r for r in made if r.startswith("greys")) + sorted(r for r in made if r.startswith("reds"))
    for i, rel in enumerate(order):
        lossy = rel.lower().endswith((".jpg", ".jpeg", ".webp"))
        assert np.abs(data.x[i].astype(int) - np.array(made[rel])).max() <= (12 if lossy else 0), rel


def test_image_folder_one_channel_uses_luminance(tmp_path):
    made = small_folder(tmp_path / "imgs")
    data = load_image_folder(tmp_path / "imgs", (4, 4, 1))
    assert data.x.shape == (10, 4, 4, 1)
    i = 4 + sorted(r for r in made if r.startswith("reds")).index("reds/a.png")
    assert np.all(data.x[i] == round(0.299 * 255))  # pure red -> 76


def test_image_folder_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    for cls, value in (("dark", 30000), ("light", 65535)):
        write(tmp_path / "imgs" / cls / "a.png", Image.fromarray(np.full((5, 7), value, np.uint16)))
        write(tmp_path / "imgs" / cls / "b.png", Image.new("RGB", (5, 7), (10, 20, 30)))
    with Image.open(tmp_path / "imgs" / "dark" / "a.png") as img:
        assert img.mode.startswith("I")  # a 16-bit file indeed
    data = load_image_folder(tmp_path / "imgs", (3, 3, 3))
    assert np.all(data.x[0] == round(30000 / 257))
    assert np.all(data.x[2] == 255)
    assert data.x[1, 0, 0].tolist() == [10, 20, 30]


def test_image_folder_corrupt_file_is_an_error_naming_it(tmp_path):
    small_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "reds" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage" * 50)
    with pytest.raises(DataError, match=r"zz_broken\.jpg.*on_bad_image"):
        load_image_folder(tmp_path / "imgs", (6, 6, 3))


def test_image_folder_skip_counts_and_lists_bad_files(tmp_path):
    from PIL import Image

    small_folder(tmp_path / "imgs")
    bad = tmp_path / "imgs" / "reds" / "zz_broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage" * 50)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "PNG")
    truncated = tmp_path / "imgs" / "greys" / "zz_truncated.png"
    truncated.write_bytes(buf.getvalue()[:40])
    data = load_image_folder(tmp_path / "imgs", (6, 6, 3), on_bad_image="skip")
    assert sorted(data.skipped) == sorted([str(bad), str(truncated)])
    assert len(data.x) == len(data.y) == 10
    assert np.bincount(data.y).tolist() == [4, 6]


def test_image_folder_skip_through_the_dataset_reports_skipped(tmp_path):
    small_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "reds" / "zz_broken.png").write_bytes(b"nope")
    ds = load_dataset(values({"source": "image_folder", "path": str(tmp_path / "imgs"), "on_bad_image": "skip",
                              "cache": False}, (6, 6, 3), split=0.25), outputs=2)
    assert [Path(p).name for p in ds.info["skipped"]] == ["zz_broken.png"]
    assert len(ds.train) + len(ds.validation) == 10
    assert ds.class_names == ["greys", "reds"]


def test_image_folder_cache_is_used_and_invalidated(tmp_path):
    from PIL import Image

    small_folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    first = load_image_folder(tmp_path / "imgs", (6, 6, 3), cache_dir=cache)
    second = load_image_folder(tmp_path / "imgs", (6, 6, 3), cache_dir=cache)
    assert first.cached is False and second.cached is True
    assert np.array_equal(first.x, second.x) and np.array_equal(first.y, second.y)
    assert second.class_names == first.class_names and second.x.dtype == np.uint8
    assert len(list(cache.glob("*.npz"))) == 1
    # Another size is another cache entry.
    assert load_image_folder(tmp_path / "imgs", (5, 5, 3), cache_dir=cache).cached is False
    # A changed file is decoded again.
    write(tmp_path / "imgs" / "reds" / "a.png", Image.new("RGB", (20, 11), (0, 0, 255)))
    third = load_image_folder(tmp_path / "imgs", (6, 6, 3), cache_dir=cache)
    assert third.cached is False
    assert not np.array_equal(third.x, first.x)
    # A damaged cache file is rebuilt, not trusted.
    for f in cache.glob("*.npz"):
        f.write_bytes(b"broken")
    again = load_image_folder(tmp_path / "imgs", (6, 6, 3), cache_dir=cache)
    assert again.cached is False and np.array_equal(again.x, third.x)


def test_image_folder_needs_1_or_3_channels(tmp_path):
    small_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match="1 or 3 channels"):
        load_image_folder(tmp_path / "imgs", (6, 6, 4))


# --------------------------------------------------------------- image folders (real)
@pytest.fixture(scope="module")
def caltech(tmp_path_factory):
    cache = tmp_path_factory.mktemp("caltech-cache")
    return load_image_folder(CALTECH, (28, 28, 3), cache_dir=cache), cache


@needs_caltech
def test_caltech_counts_and_class_order(caltech):
    data, _ = caltech
    assert data.x.shape == (1598, 28, 28, 3) and data.x.dtype == np.uint8
    assert data.class_names == ["Motorbikes", "airplanes"]
    assert np.bincount(data.y).tolist() == [798, 800]
    assert data.y[:798].max() == 0 and data.y[798:].min() == 1  # classes in order, files sorted
    assert data.skipped == []


@needs_caltech
def test_caltech_greyscale_files_come_out_rgb_with_equal_channels(caltech):
    from PIL import Image

    data, _ = caltech
    files = sorted(p for p in (CALTECH / "Motorbikes").iterdir() if p.suffix.lower() == ".jpg")
    stems = [p.stem for p in files]
    equal = [bool(np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2]))
             for x in data.x[:798]]
    grey = {stems[i] for i, e in enumerate(equal) if e}
    assert set(GREY_MOTORBIKES) <= grey
    assert len(grey) < 20  # the rest are colour (a few RGB files hold grey pictures)
    modes = {}
    for f in files:
        with Image.open(f) as img:
            modes[f.stem] = img.mode
    assert sorted(s for s, m in modes.items() if m == "L") == list(GREY_MOTORBIKES)
    for stem in GREY_MOTORBIKES:
        i = stems.index(stem)
        with Image.open(files[i]) as img:
            expected = np.asarray(img.resize((28, 28), Image.Resampling.BILINEAR))
        assert np.array_equal(data.x[i, ..., 0], expected)


@needs_caltech
def test_caltech_one_channel(tmp_path):
    from PIL import Image

    grey = load_image_folder(CALTECH, (12, 14, 1))
    assert grey.x.shape == (1598, 12, 14, 1)
    first = sorted((CALTECH / "airplanes").iterdir())[0]
    with Image.open(first) as img:
        expected = np.asarray(img.convert("L").resize((14, 12), Image.Resampling.BILINEAR))
    assert np.array_equal(grey.x[798, ..., 0], expected)


@needs_caltech
def test_caltech_cache_second_load(caltech):
    data, cache = caltech
    again = load_image_folder(CALTECH, (28, 28, 3), cache_dir=cache)
    assert again.cached is True
    assert np.array_equal(again.x, data.x) and np.array_equal(again.y, data.y)
    assert again.class_names == data.class_names


@needs_caltech
def test_caltech_dataset_reports_cached(tmp_path):
    v = values({"source": "image_folder", "path": str(CALTECH)}, (10, 10, 3), outputs=2)
    a = load_dataset(v, cache_dir=tmp_path, outputs=2)
    b = load_dataset(v, cache_dir=tmp_path, outputs=2)
    assert a.info["cached"] is False and b.info["cached"] is True
    assert a.train.x.tobytes() == b.train.x.tobytes()
    assert a.class_names == ["Motorbikes", "airplanes"]
    assert len(a.train) == 1598 - 320 and len(a.validation) == 160 + 160  # round(0.2 * 798) = 160


@needs_caltech
def test_caltech_bad_file_in_a_copy_is_skipped(tmp_path):
    root = tmp_path / "caltech"
    for cls in ("Motorbikes", "airplanes"):
        (root / cls).mkdir(parents=True)
        for f in sorted((CALTECH / cls).iterdir())[:6]:
            shutil.copy(f, root / cls / f.name)
    bad = root / "airplanes" / "image_9999.jpg"
    bad.write_bytes((CALTECH / "airplanes" / "image_0001.jpg").read_bytes()[:300])  # cut off
    with pytest.raises(DataError, match="image_9999.jpg"):
        load_image_folder(root, (16, 16, 3))
    data = load_image_folder(root, (16, 16, 3), on_bad_image="skip")
    assert data.skipped == [str(bad)] and len(data.y) == 12


# ------------------------------------------------------------------------------ npz
def test_npz_three_dimensional_images_get_a_channel(tmp_path):
    x = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1, 1]))
    gx, gy = load_npz(tmp_path / "d.npz")
    assert gx.shape == (5, 4, 3, 1) and np.array_equal(gx[..., 0], x)
    assert gy.dtype == np.int64 and gy.tolist() == [0, 1, 0, 1, 1]


def test_npz_four_dimensional_images_and_custom_keys(tmp_path):
    x = np.random.default_rng(0).random((6, 3, 3, 2)).astype(np.float32)
    np.savez(tmp_path / "d.npz", images=x, labels=np.array([2, 0, 1, 2, 0, 1], dtype=np.uint8))
    gx, gy = load_npz(tmp_path / "d.npz", "images", "labels")
    assert gx.dtype == np.float32 and np.array_equal(gx, x)
    assert gy.tolist() == [2, 0, 1, 2, 0, 1]


def test_npz_one_hot_labels(tmp_path):
    y = np.array([2, 0, 1, 1])
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2, 2, 1)), y=np.eye(3)[y])
    assert load_npz(tmp_path / "d.npz")[1].tolist() == [2, 0, 1, 1]


def test_npz_float_labels_must_be_whole(tmp_path):
    np.savez(tmp_path / "ok.npz", x=np.zeros((3, 2, 2)), y=np.array([0.0, 1.0, 1.0]))
    assert load_npz(tmp_path / "ok.npz")[1].tolist() == [0, 1, 1]
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 2, 2)), y=np.array([0.0, 0.5, 1.0]))
    with pytest.raises(DataError, match="non-integer"):
        load_npz(tmp_path / "bad.npz")


class _Trap:
    """Unpickling this creates a marker folder: proof that a pickle was run."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_npz_with_pickled_objects_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    objs = np.empty(4, dtype=object)
    objs[:] = [_Trap(str(marker))] * 4
    np.savez(tmp_path / "evil.npz", x=objs, y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match="evil.npz"):
        load_npz(tmp_path / "evil.npz")
    assert not marker.exists()
    # The file really is a trap: loading it with pickles allowed would run it.
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as f:
        f["x"]
    assert marker.exists()


@pytest.mark.filterwarnings("error")  # no file handle left open either
def test_npz_truncated_or_not_npz_is_refused(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((10, 4, 4, 3), np.uint8), y=np.arange(10) % 2)
    raw = buf.getvalue()
    for name, content in (("cut.npz", raw[: len(raw) - 40]), ("half.npz", raw[: len(raw) // 2]),
                          ("text.npz", b"hello"), ("empty.npz", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=name):
            load_npz(tmp_path / name)


def test_npz_that_is_a_single_npy_array_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 2, 2)))
    (tmp_path / "x.npy").rename(tmp_path / "x.npz")
    with pytest.raises(DataError, match="x.npz.*single array"):
        load_npz(tmp_path / "x.npz")


def mutations(raw: bytes, count: int, seed: int):
    """Damaged copies of ``raw``: cut short, or with a few bytes overwritten."""
    rng = np.random.default_rng(seed)
    for t in range(count):
        if t % 2:
            yield raw[: int(rng.integers(0, len(raw)))]
        else:
            b = bytearray(raw)
            for _ in range(int(rng.integers(1, 6))):
                b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
            yield bytes(b)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_damaged_npz_files_are_data_errors(tmp_path, save):
    rng = np.random.default_rng(0)
    save(tmp_path / "ok.npz", x=rng.integers(0, 256, (30, 6, 6, 3), dtype=np.uint8), y=np.arange(30) % 2)
    raw = (tmp_path / "ok.npz").read_bytes()
    for i, damaged in enumerate(mutations(raw, 300, seed=1)):
        (tmp_path / "d.npz").write_bytes(damaged)
        try:
            load_npz(tmp_path / "d.npz")
        except DataError:
            pass  # anything else is a bug: a traceback for a damaged file


def test_damaged_gzip_idx_files_are_data_errors(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    raw = gzip.compress(idx_bytes(arr))
    kinds = set()
    for damaged in mutations(raw, 600, seed=2):
        try:
            gzip.decompress(damaged)
        except Exception as err:  # what the reader has to turn into a DataError
            kinds.add(f"{type(err).__module__}.{type(err).__name__}")
        (tmp_path / "d.idx.gz").write_bytes(damaged)
        try:
            read_idx(tmp_path / "d.idx.gz")
        except DataError:
            pass
    assert "zlib.error" in kinds  # a damaged deflate stream was among them


@pytest.mark.parametrize("fmt, ext", [("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("GIF", "gif"),
                                      ("WEBP", "webp")])
def test_damaged_images_are_data_errors_or_skipped(tmp_path, fmt, ext):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buf, fmt)
    write(tmp_path / "imgs" / "a" / f"good.{ext}", Image.new("RGB", (5, 5)))
    target = tmp_path / "imgs" / "b" / f"damaged.{ext}"
    target.parent.mkdir()
    skipped = 0
    for damaged in mutations(buf.getvalue(), 80, seed=3):
        target.write_bytes(damaged)
        try:
            load_image_folder(tmp_path / "imgs", (8, 8, 3))
        except DataError as err:
            assert "damaged" in str(err)
            skipped += 1
            assert load_image_folder(tmp_path / "imgs", (8, 8, 3), on_bad_image="skip").skipped == [str(target)]
    assert skipped > 10


def test_npz_missing_key_and_bad_shapes(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((3, 2, 2)), y=np.zeros(3))
    with pytest.raises(DataError, match="no array 'x'.*images"):
        load_npz(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(DataError, match=r"\(3, 2\)"):
        load_npz(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", x=np.zeros((3, 2, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match="labels"):
        load_npz(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", x=np.array([["a", "b"]] * 3), y=np.zeros(3))
    with pytest.raises(DataError, match="numbers"):
        load_npz(tmp_path / "d.npz")


def test_npz_dataset_with_test_file_and_channel_conversion(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 6, 6), dtype=np.uint8)
    y = np.arange(40) % 2
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "test.npz", x=x[:10], y=y[:10])
    ds = load_dataset(values({"source": "npz", "path": str(tmp_path / "train.npz"),
                              "test_path": str(tmp_path / "test.npz")}, (6, 6, 3)), outputs=2)
    assert ds.train.x.shape[1:] == (6, 6, 3)  # greyscale repeated
    assert np.array_equal(ds.train.x[..., 0], ds.train.x[..., 2])
    assert len(ds.test) == 10 and ds.evaluation is ds.test
    assert np.allclose(ds.test.x[..., 1], x[:10] / 255.0)
    assert ds.class_names == ["0", "1"]


# ------------------------------------------------------------------------------ IDX
IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of ``arr`` (big-endian values), written independently of cnncli."""
    big = arr.astype(arr.dtype.newbyteorder(">")) if arr.dtype.itemsize > 1 else arr
    header = bytes([0, 0, IDX_CODES[np.dtype(big.dtype)], arr.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + np.ascontiguousarray(big).tobytes()


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compressed", [False, True])
def test_idx_round_trip(tmp_path, dtype, compressed):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((3, 5, 4)) * 100).astype(dtype)
    raw = idx_bytes(arr)
    path = tmp_path / ("a.idx.gz" if compressed else "a.idx")
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    got = read_idx(path)
    assert got.shape == arr.shape and got.dtype == np.dtype(dtype) and np.array_equal(got, arr)
    assert got.dtype.byteorder in ("=", "|") or got.dtype.isnative


def test_idx_header_and_data_size_mismatch_is_refused(tmp_path):
    raw = idx_bytes(np.zeros((4, 3, 3), np.uint8))
    for name, content in (("short", raw[:-1]), ("long", raw + b"\0"), ("header", raw[:10])):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=name):
            read_idx(tmp_path / name)
    (tmp_path / "magic").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "magic")
    (tmp_path / "badgz").write_bytes(gzip.compress(raw)[:20])
    with pytest.raises(DataError, match="badgz"):
        read_idx(tmp_path / "badgz")


def write_idx_pair(folder: Path, prefix: str, x: np.ndarray, y: np.ndarray, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for name, arr in ((f"{prefix}-images-idx3-ubyte{suffix}", x), (f"{prefix}-labels-idx1-ubyte{suffix}", y)):
        raw = idx_bytes(arr)
        (folder / name).write_bytes(gzip.compress(raw) if gz else raw)


def test_idx_pair_from_folder_or_file(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (12, 5, 5), dtype=np.uint8)
    y = (np.arange(12) % 3).astype(np.uint8)
    write_idx_pair(tmp_path / "d", "train", x, y, gz=True)
    write_idx_pair(tmp_path / "d", "t10k", x[:6], y[:6], gz=False)
    gx, gy = load_idx_pair(tmp_path / "d", "train")
    assert gx.shape == (12, 5, 5, 1) and np.array_equal(gx[..., 0], x) and gy.dtype == np.int64
    assert np.array_equal(gy, y)
    fx, fy = load_idx_pair(tmp_path / "d" / "t10k-images-idx3-ubyte", "ignored")
    assert np.array_equal(fx[..., 0], x[:6]) and np.array_equal(fy, y[:6])
    with pytest.raises(DataError, match="no other-images"):
        load_idx_pair(tmp_path / "d", "other")
    ds = load_dataset(values({"source": "idx", "path": str(tmp_path / "d")}, (5, 5, 1), split=0, outputs=3),
                      outputs=3)
    assert len(ds.train) == 12 and len(ds.test) == 6 and ds.validation is ds.test  # split 0: validate on test
    assert ds.class_names == ["0", "1", "2"]


def test_idx_images_and_labels_must_pair(tmp_path):
    write_idx_pair(tmp_path / "d", "train", np.zeros((5, 2, 2), np.uint8), np.zeros(4, np.uint8), gz=False)
    with pytest.raises(DataError, match="do not pair"):
        load_idx_pair(tmp_path / "d", "train")


@needs_fashion
def test_real_fashion_mnist_files():
    x, y = load_idx_pair(FASHION, "train")
    assert x.shape == (60000, 28, 28, 1) and x.dtype == np.uint8
    assert y.min() == 0 and y.max() == 9 and np.bincount(y).tolist() == [6000] * 10
    tx, ty = load_idx_pair(FASHION, "t10k")
    assert tx.shape == (10000, 28, 28, 1) and np.bincount(ty).tolist() == [1000] * 10


@needs_fashion
def test_real_fashion_mnist_dataset_with_limit():
    v = values({"source": "idx", "path": str(FASHION), "limit": 500}, (28, 28, 1), split=0.2, outputs=10)
    ds = load_dataset(v, outputs=10)
    assert len(ds.train) + len(ds.validation) == 500
    assert np.bincount(ds.train.y).tolist() == [40] * 10
    assert len(ds.test) == 10000 and ds.evaluation is ds.test
    assert ds.class_names == [str(i) for i in range(10)]
    assert ds.train.x.dtype == np.float32 and ds.train.x.max() <= 1.0


@needs_fashion
def test_shipped_fashion_mnist_config_loads():
    cfg = cnncli.load_config(Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist.yaml",
                             overrides=["data.limit=100"])
    ds = load_dataset(cfg.values, outputs=10)
    assert len(ds.train) == 100 and len(ds.test) == 10000 and ds.validation is ds.test  # validated on t10k


# ------------------------------------------------------------------- split and normalize
def test_stratified_split_preserves_proportions_and_is_disjoint():
    y = np.repeat([0, 1, 2], [100, 50, 20])
    np.random.default_rng(0).shuffle(y)
    train, held = stratified_split(y, 0.2, seeded_rng(7, 2))
    assert np.bincount(y[held]).tolist() == [20, 10, 4]
    assert np.bincount(y[train]).tolist() == [80, 40, 16]
    assert len(np.intersect1d(train, held)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(len(y)))
    again_train, again_held = stratified_split(y, 0.2, seeded_rng(7, 2))
    assert np.array_equal(held, again_held) and np.array_equal(train, again_train)
    _, other = stratified_split(y, 0.2, seeded_rng(8, 2))
    assert not np.array_equal(held, other)


def test_dataset_split_is_stratified_and_seeded(tmp_path):
    y = np.repeat([0, 1], [90, 30])
    x = np.arange(120, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    v = values({"source": "npz", "path": str(tmp_path / "d.npz"), "normalize": "none"}, (2, 2, 1), split=0.25)
    ds = load_dataset(v, outputs=2)
    assert np.bincount(ds.validation.y).tolist() == [22, 8]  # round(22.5) = 22 (banker's), round(7.5) = 8
    train_ids = set(ds.train.x[:, 0, 0, 0].astype(int).tolist())
    val_ids = set(ds.validation.x[:, 0, 0, 0].astype(int).tolist())
    assert not train_ids & val_ids and len(train_ids | val_ids) == 120
    same = load_dataset(v, outputs=2)
    assert np.array_equal(same.validation.x, ds.validation.x)
    other = load_dataset(values({**v["data"]}, (2, 2, 1), split=0.25, seed=1), outputs=2)
    assert not np.array_equal(other.validation.x, ds.validation.x)


def test_standardize_uses_training_split_statistics_only(tmp_path):
    # Per-example brightness is its index, so the whole set and the training split have
    # different statistics; after the transform the training split, and only it, has mean
    # 0 and standard deviation 1 per channel.
    rng = np.random.default_rng(0)
    n = 200
    y = np.arange(n) % 2
    x = np.clip(np.arange(n)[:, None, None, None] + rng.integers(0, 40, (n, 3, 3, 2)), 0, 255).astype(np.uint8)
    x[..., 1] = 255 - x[..., 1]
    np.savez(tmp_path / "d.npz", x=x, y=y)
    v = values({"source": "npz", "path": str(tmp_path / "d.npz"), "normalize": "standardize"}, (3, 3, 2),
               split=0.3, dtype="float64")
    ds = load_dataset(v, outputs=2)
    tr = ds.train.x.reshape(-1, 2)
    assert np.allclose(tr.mean(axis=0), 0, atol=1e-9) and np.allclose(tr.std(axis=0), 1, atol=1e-9)
    train_idx, val_idx = stratified_split(y, 0.3, seeded_rng(0, 2))
    raw_train = x[train_idx].reshape(-1, 2) / 255.0
    assert np.allclose(ds.normalization["mean"], raw_train.mean(axis=0))
    assert np.allclose(ds.normalization["std"], raw_train.std(axis=0))
    whole = x.reshape(-1, 2) / 255.0
    assert not np.allclose(ds.normalization["mean"], whole.mean(axis=0), atol=1e-4)
    expected_val = (x[val_idx] / 255.0 - raw_train.mean(axis=0)) / raw_train.std(axis=0)
    assert np.allclose(ds.validation.x, expected_val)
    va = ds.validation.x.reshape(-1, 2)
    assert not np.allclose(va.mean(axis=0), 0, atol=1e-3)


def test_normalization_modes():
    x = np.array([[[[0, 255]]], [[[51, 102]]]], dtype=np.uint8)  # (2, 1, 1, 2)
    scale = fit_normalization(x, "scale")
    assert scale == {"mode": "scale", "scale": 255.0}
    assert np.allclose(apply_normalization(x, scale, np.float32), x / 255.0)
    none = fit_normalization(x, "none")
    assert np.array_equal(apply_normalization(x, none, np.float64), x.astype(np.float64))
    floats = x.astype(np.float32) / 7
    assert fit_normalization(floats, "scale")["scale"] == 1.0  # floats are taken as they are
    std = fit_normalization(np.zeros((3, 2, 2, 1), np.uint8), "standardize")
    assert std["std"][0] > 0  # a constant channel does not divide by zero
    assert np.all(np.isfinite(apply_normalization(np.zeros((1, 2, 2, 1), np.uint8), std, np.float32)))


def test_limit_is_stratified(tmp_path):
    y = np.repeat([0, 1, 2], [300, 150, 60])
    np.savez(tmp_path / "d.npz", x=np.zeros((len(y), 2, 2, 1), np.uint8), y=y)
    v = values({"source": "npz", "path": str(tmp_path / "d.npz"), "limit": 51}, (2, 2, 1), split=0, outputs=3)
    ds = load_dataset(v, outputs=3)
    assert np.bincount(ds.train.y).tolist() == [30, 15, 6]


def test_convert_channels():
    rgb = np.array([[[[255, 0, 0], [0, 255, 0]]]], dtype=np.uint8)
    assert convert_channels(rgb, 1, "w")[..., 0].tolist() == [[[76, 150]]]
    grey = np.array([[[[7]]]], dtype=np.uint8)
    assert convert_channels(grey, 3, "w").tolist() == [[[[7, 7, 7]]]]
    with pytest.raises(DataError, match="2 channels"):
        convert_channels(np.zeros((1, 2, 2, 2)), 3, "w")


def test_a_single_class_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 2, 2, 1), np.uint8), y=np.zeros(10, int))
    with pytest.raises(DataError, match="single class"):
        load_dataset(values({"source": "npz", "path": str(tmp_path / "d.npz")}, (2, 2, 1)), outputs=2)


def test_too_few_examples_for_the_split(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 2, 2, 1), np.uint8), y=np.array([0, 1]))
    with pytest.raises(DataError, match="too few"):
        load_dataset(values({"source": "npz", "path": str(tmp_path / "d.npz")}, (2, 2, 1), split=0.2), outputs=2)


def test_values_helper_is_a_copy():
    v = values({"source": "synthetic", "num_samples": 20, "num_classes": 2})
    w = copy.deepcopy(v)
    load_dataset(v)
    assert v == w  # loading does not change the config
