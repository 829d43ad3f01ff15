"""Hostile files through every command that reads them: images that explode or lie,
archives that escape, npz and IDX headers that claim too much.

Every hostile file is made here, in the test (no binary blobs in the repository). Each
case expects what any bad input gets: exit code 2, one line naming the file, no
traceback, nothing half-written; and for the image bombs, memory that stays bounded: a
bomb is refused from its header, never decoded (checked by watching Pillow's ``load``
in-process, and by the peak memory of a subprocess).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import struct
import subprocess
import sys
import tarfile
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageFile

from cnncli.data import archives, datasets
from cnncli.data.idx import read_idx
from cnncli.data.image_folder import load_image_folder
from cnncli.data.images import BadImageError, load_image
from cnncli.data.npz import load_npz
from cnncli.errors import DataError
from tests.helpers import assert_ok, assert_user_error, invoke
from tests.test_datasets import Mirror, caltech_zip, cifar_archive, md5

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ hostile images, made here
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A real 1-bit PNG of ``width`` x ``height`` black pixels: every row is there, but
    zeros compress so well that 20000x20000 (400 megapixels) takes about 50 KB."""
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    deflate = zlib.compressobj(9)
    body = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def png_bytes(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **save)
    return buf.getvalue()


#: name -> (the file's bytes, a phrase its one-line error must hold). 8000x8000 is below
#: Pillow's own limit (Pillow alone would decode it: 64 MB, then 192 MB as RGB) and above
#: data.max_image_pixels; 20000x20000 is above both.
HOSTILE_IMAGES = {
    "bomb.png": (lambda: png_bomb(20000, 20000), "Pillow's decompression-bomb limit"),
    "large.png": (lambda: png_bomb(8000, 8000), "data.max_image_pixels"),
    "empty.png": (lambda: b"", "empty: 0 bytes"),
    "truncated.png": (lambda: png_bytes(Image.new("RGB", (64, 64), (9, 9, 9)))[:-40], "truncated"),
    "postscript.jpg": (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n", "a PostScript file"),
}
BOMBS = ("bomb.png", "large.png")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    out = {}
    for name, (make, _) in HOSTILE_IMAGES.items():
        out[name] = folder / name
        out[name].write_bytes(make())
    assert out["bomb.png"].stat().st_size < 100_000  # a few dozen KB that decode to 400 megapixels
    return out


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """The files Pillow decoded (ImageFile.load) while the test ran."""
    seen: list[str] = []
    real = ImageFile.ImageFile.load

    def watched(self):
        seen.append(str(getattr(self, "filename", "?")))
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", watched)
    return seen


def class_folders(root: Path, per_class: int = 6) -> Path:
    """Two classes of small flat-coloured PNGs under ``root``."""
    for cls, colour in (("dark", (20, 20, 20)), ("light", (230, 230, 230))):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (10, 12), tuple(c + i for c in colour)).save(root / cls / f"{i}.png")
    return root


def with_bad_file(root: Path, bad: Path) -> Path:
    """A copy of the two class folders with ``bad`` added to the second class."""
    class_folders(root)
    (root / "light" / bad.name).write_bytes(bad.read_bytes())
    return root / "light" / bad.name


MODEL = {"input_shape": [8, 8, 3], "layers": [{"type": "flatten"}, {"type": "dense", "units": 2,
                                                                     "activation": "softmax"}]}


def config_file(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump({"name": "h", "seed": 0, "data": data, "model": MODEL,
                                    "train": {"epochs": 1, "batch_size": 8}}))
    return path


def run_folders(runs: Path) -> list[Path]:
    return [p for p in runs.iterdir() if not p.name.startswith(".")] if runs.exists() else []


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    """A tiny run trained on class folders of PNGs (for predict, visualize, eval)."""
    root = tmp_path_factory.mktemp("image_run")
    cfg = config_file(root / "c.yaml", {"source": "image_folder", "path": str(class_folders(root / "imgs"))})
    assert_ok(invoke("train", cfg, "--runs-dir", root / "runs", "-q"))
    (run,) = run_folders(root / "runs")
    return run


# ------------------------------------------------------------------ images through every command
@pytest.mark.parametrize("name", list(HOSTILE_IMAGES))
def test_train_refuses_a_hostile_image_in_its_folder_and_creates_no_run(hostile, decoded, tmp_path, name):
    bad = with_bad_file(tmp_path / "imgs", hostile[name])
    cfg = config_file(tmp_path / "c.yaml", {"source": "image_folder", "path": str(tmp_path / "imgs")})
    line = assert_user_error(invoke("train", cfg, "--runs-dir", tmp_path / "runs", "-q"),
                             str(bad), HOSTILE_IMAGES[name][1], "on_bad_image: skip")
    assert not run_folders(tmp_path / "runs"), line  # refused before any run folder exists
    assert not list((tmp_path / "runs").rglob("*.npz"))  # no cache of a half-read folder either
    if name in BOMBS:
        assert str(bad) not in decoded  # refused from its header, never decoded


@pytest.mark.parametrize("name", BOMBS)
def test_train_with_on_bad_image_skip_leaves_a_bomb_out_undecoded(hostile, decoded, tmp_path, name):
    bad = with_bad_file(tmp_path / "imgs", hostile[name])
    cfg = config_file(tmp_path / "c.yaml", {"source": "image_folder", "path": str(tmp_path / "imgs"),
                                            "on_bad_image": "skip"})
    res = invoke("train", cfg, "--runs-dir", tmp_path / "runs")
    assert_ok(res)
    assert f"skipped unreadable image {bad}" in res.stderr
    (run,) = run_folders(tmp_path / "runs")
    assert json.loads((run / "data.json").read_text())["skipped"] == [str(bad)]
    assert str(bad) not in decoded


@pytest.mark.parametrize("name", list(HOSTILE_IMAGES))
def test_predict_refuses_a_hostile_image(hostile, decoded, image_run, name):
    path = hostile[name]
    assert_user_error(invoke("predict", image_run, path), str(path), HOSTILE_IMAGES[name][1])
    assert_user_error(invoke("predict", image_run, path, "--strict"), str(path), HOSTILE_IMAGES[name][1])
    if name in BOMBS:
        assert str(path) not in decoded  # refused from its header, never decoded


def test_predict_skips_a_bomb_among_good_images_and_says_so(hostile, decoded, image_run, tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8), (200, 200, 200)).save(good)
    res = invoke("predict", image_run, good, hostile["bomb.png"], "--json")
    assert_ok(res)
    assert [row["image"] for row in json.loads(res.stdout)] == [str(good)]
    assert f"skipped {hostile['bomb.png']}: not a readable image" in res.stderr
    assert str(hostile["bomb.png"]) not in decoded


@pytest.mark.parametrize("name", list(HOSTILE_IMAGES))
def test_visualize_refuses_a_hostile_image_before_writing_anything(hostile, decoded, image_run, tmp_path, name):
    path = hostile[name]
    out = tmp_path / "pictures"
    assert_user_error(invoke("visualize", image_run, "--image", path, "--out", out), str(path),
                      HOSTILE_IMAGES[name][1])
    assert not out.exists()  # not even kernels.png
    if name in BOMBS:
        assert str(path) not in decoded  # refused from its header, never decoded


@pytest.mark.parametrize("name", list(HOSTILE_IMAGES))
def test_eval_on_a_folder_holding_a_hostile_image(hostile, decoded, image_run, tmp_path, name):
    bad = with_bad_file(tmp_path / "other", hostile[name])
    before = sorted(p.name for p in image_run.iterdir())
    assert_user_error(invoke("eval", image_run, "--data-path", tmp_path / "other"), str(bad),
                      HOSTILE_IMAGES[name][1])
    assert sorted(p.name for p in image_run.iterdir()) == before  # no eval-*.json, no pictures
    if name in BOMBS:
        assert str(bad) not in decoded  # refused from its header, never decoded


def test_a_bomb_is_refused_with_bounded_memory_in_a_fresh_process(hostile, tmp_path):
    """The peak memory of a process that is handed both bombs grows by a few MB, not by
    the 64 MB to 1.2 GB that decoding them would take."""
    warm_up = tmp_path / "small.png"
    Image.new("RGB", (16, 16)).save(warm_up)
    script = textwrap.dedent("""
        import resource, sys
        from cnncli.data.images import BadImageError, load_image
        load_image(sys.argv[1], 8, 8, 3)  # imports and warms up Pillow's PNG reader before measuring
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for path in sys.argv[2:]:
            try:
                load_image(path, 8, 8, 3)
            except BadImageError as err:
                print(err.reason)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """)
    out = subprocess.run([sys.executable, "-c", script, str(warm_up), *(str(hostile[n]) for n in BOMBS)],
                         capture_output=True, text=True, timeout=60, cwd=REPO, check=True).stdout.splitlines()
    assert "decompression-bomb" in out[0] and "data.max_image_pixels" in out[1], out
    assert int(out[2]) < 20_000, f"peak memory grew by {int(out[2]) / 1024:.0f} MiB"  # ru_maxrss is in KiB


# ------------------------------------------------------------------ the image policy itself
def test_the_pixel_limit_is_configurable_and_read_from_the_header(tmp_path, decoded):
    path = tmp_path / "a.png"
    Image.new("RGB", (10, 12), (1, 2, 3)).save(path)
    assert load_image(path, 4, 4, 3, max_pixels=120).shape == (4, 4, 3)  # exactly at the limit
    decoded.clear()
    with pytest.raises(BadImageError, match=r"expected at most 119 pixels, data.max_image_pixels; got 10x12 = 120"):
        load_image(path, 4, 4, 3, max_pixels=119)
    assert decoded == []
    class_folders(tmp_path / "imgs")
    cfg = config_file(tmp_path / "c.yaml", {"source": "image_folder", "path": str(tmp_path / "imgs"),
                                            "max_image_pixels": 100})
    assert_user_error(invoke("train", cfg, "--runs-dir", tmp_path / "runs", "-q"), "0.png",
                      "expected at most 100 pixels")


@pytest.mark.parametrize("value", [0, -5, "many", 1.5, True, 10**12])
def test_max_image_pixels_must_be_a_positive_int_up_to_pillows_limit(tmp_path, value):
    class_folders(tmp_path / "imgs")
    cfg = config_file(tmp_path / "c.yaml", {"source": "image_folder", "path": str(tmp_path / "imgs"),
                                            "max_image_pixels": value})
    assert_user_error(invoke("train", cfg, "--runs-dir", tmp_path / "runs"), "data.max_image_pixels",
                      "an int from 1 to 178956970")
    assert not run_folders(tmp_path / "runs")


def test_a_file_is_read_by_its_bytes_not_its_name(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    img.save(tmp_path / "true.jpg", "JPEG")
    (tmp_path / "lying.png").write_bytes((tmp_path / "true.jpg").read_bytes())
    assert np.array_equal(load_image(tmp_path / "lying.png", 5, 5, 3), load_image(tmp_path / "true.jpg", 5, 5, 3))
    # Formats that are not read are refused whatever their name, and said what they are.
    img.save(tmp_path / "scan.png", "TIFF")
    with pytest.raises(BadImageError, match=r"scan\.png: .*expected JPEG, PNG, BMP, GIF or WebP data; got a TIFF"):
        load_image(tmp_path / "scan.png", 5, 5, 3)
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    with pytest.raises(BadImageError, match="a PNG signature with a damaged header"):
        load_image(tmp_path / "fake.png", 5, 5, 3)


def test_an_animated_gif_is_read_as_its_first_frame_and_said_once(tmp_path, image_run):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    gif = tmp_path / "moving.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=50, loop=0)
    animated: list[str] = []
    first = load_image(gif, 4, 4, 3, animated=animated)
    assert animated == [str(gif)]
    assert np.abs(first.astype(int) - [255, 0, 0]).max() <= 4  # the first frame (a GIF palette is close, not exact)
    res = invoke("visualize", image_run, "--image", gif, "--out", tmp_path / "pictures")
    assert_ok(res)
    notes = [line for line in res.stderr.splitlines() if "animated" in line]
    assert notes == [f"warning: 1 animated image read as its first frame only: {gif}"]
    # Through training: listed in the run's data.json.
    class_folders(tmp_path / "imgs")
    (tmp_path / "imgs" / "light" / "moving.gif").write_bytes(gif.read_bytes())
    data = load_image_folder(tmp_path / "imgs", (4, 4, 3))
    moving = str(tmp_path / "imgs" / "light" / "moving.gif")
    assert data.animated == [moving]
    # Said once by train and by predict too.
    cfg = config_file(tmp_path / "c.yaml", {"source": "image_folder", "path": str(tmp_path / "imgs"), "cache": False})
    res = invoke("train", cfg, "--runs-dir", tmp_path / "runs", "-q")
    assert_ok(res)
    assert [l for l in res.stderr.splitlines() if "animated" in l] == \
        [f"warning: 1 animated image read as its first frame only: {moving}"]
    res = invoke("predict", image_run, gif, tmp_path / "imgs" / "light")
    assert_ok(res)
    assert [l for l in res.stderr.splitlines() if "animated" in l] == \
        [f"warning: 2 animated images read as their first frame only: {gif}, {moving}"]


def test_an_animated_file_that_fails_to_decode_is_not_said_to_be_read(tmp_path):
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(2)]
    whole = png_bytes(frames[0], save_all=True, append_images=frames[1:])  # an animated PNG
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole[: whole.find(b"IDAT") + 200])  # its header says animated; its first frame is cut short
    animated: list[str] = []
    with pytest.raises(BadImageError, match="truncated"):
        load_image(cut, 4, 4, 3, animated=animated)
    assert animated == []  # skipped (or an error), never also "read as its first frame"


def test_exif_orientation_is_applied(tmp_path):
    """A photo whose EXIF says 'rotate 90 degrees clockwise to view' is read upright, as
    Pillow's own ImageOps.exif_transpose shows it."""
    from PIL import ImageOps

    pixels = np.zeros((4, 8, 3), np.uint8)
    pixels[:, :4] = (255, 0, 0)  # left half red, right half blue, 8 wide x 4 high as stored
    pixels[:, 4:] = (0, 0, 255)
    stored = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(stored, exif=exif))
    with Image.open(path) as img:
        upright = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    assert upright.shape == (8, 4, 3)  # 4 wide x 8 high once turned
    assert np.array_equal(load_image(path, 8, 4, 3), upright)
    assert not np.array_equal(load_image(path, 8, 4, 3), np.asarray(stored.resize((4, 8), Image.Resampling.BILINEAR)))


@pytest.mark.filterwarnings("error")  # Pillow's warning about palette transparency would be a second line
def test_cmyk_sixteen_bit_and_transparent_palette_images(tmp_path):
    Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", "JPEG", quality=95)
    assert np.abs(load_image(tmp_path / "cmyk.jpg", 3, 3, 3).astype(int) - [255, 0, 0]).max() <= 8
    Image.fromarray(np.full((5, 5), 51400, np.uint16)).save(tmp_path / "deep.png")
    assert np.all(load_image(tmp_path / "deep.png", 3, 3, 1) == 200)  # 51400 / 257, scaled not clipped to 255
    palette = Image.new("RGB", (6, 6), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    palette.info["transparency"] = bytes([128] * 256)  # transparency as bytes: the case Pillow warns about
    palette.save(tmp_path / "trns.png")
    assert np.all(load_image(tmp_path / "trns.png", 3, 3, 3) == [10, 200, 30])


# ------------------------------------------------------------------ archives: data add, data fetch, train
def cifar_with(extra: tarfile.TarInfo | None = None, *, data: bytes = b"", absurd_size: int = 0) -> bytes:
    """cifar-10-binary.tar.gz as published, with ``extra`` added first (so that a reader
    that extracts member by member would write it before the real data), or with a last
    member whose header announces ``absurd_size`` bytes that are not there."""
    with tarfile.open(fileobj=io.BytesIO(cifar_archive()), mode="r:gz") as real:
        members = [(m, real.extractfile(m).read()) for m in real.getmembers()]
    if extra is not None:
        extra.size = len(data) if extra.isfile() else 0
        members.insert(0, (extra, data))
    out = io.BytesIO()
    tar = tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT)
    for info, content in members:
        tar.addfile(info, io.BytesIO(content) if info.isfile() else None)
    body = out.getvalue()  # the members, before close() adds the end-of-archive blocks
    if absurd_size:  # a header, and none of the bytes it announces
        huge = tarfile.TarInfo("cifar-10-batches-bin/huge.bin")
        huge.size = absurd_size
        body += huge.tobuf(format=tarfile.GNU_FORMAT)
    return gzip.compress(body + bytes(4096), mtime=0)


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


EVIL_TAR_MEMBERS = {
    "absolute": (tar_member("/tmp/cnncli-absolute.txt"), "has an absolute path"),
    "dotdot": (tar_member("cifar-10-batches-bin/../../escaped.txt"), "has '..' in its path"),
    "symlink": (tar_member("cifar-10-batches-bin/passwd", tarfile.SYMTYPE, "../../../../etc/passwd"),
                "is a symbolic link to '../../../../etc/passwd', outside the folder"),
    "hardlink": (tar_member("cifar-10-batches-bin/shadow", tarfile.LNKTYPE, "/etc/shadow"),
                 "is a hard link to '/etc/shadow', outside the folder"),
    "device": (tar_member("cifar-10-batches-bin/null", tarfile.CHRTYPE), "is a character device"),
    "fifo": (tar_member("cifar-10-batches-bin/pipe", tarfile.FIFOTYPE), "is a FIFO"),
}


@pytest.fixture
def registry(monkeypatch):
    """``registry(name, archive bytes)``: the registry expects this archive's MD5 (as if
    it were the official file); returns the dataset's cache folder."""
    def expect(name: str, archive: bytes, counts=None) -> Path:
        real = datasets.DATASETS[name]
        monkeypatch.setitem(datasets.DATASETS, name, dataclasses.replace(
            real, files=(dataclasses.replace(real.files[0], md5=md5(archive)),), counts=counts or real.counts))
        return datasets.folder(datasets.get(name))
    return expect


@pytest.fixture
def no_extraction(monkeypatch) -> list[str]:
    """The archives tarfile extracted anything from while the test ran."""
    extracted: list[str] = []
    real = tarfile.TarFile.extractall

    def watched(self, *args, **kwargs):
        extracted.append(str(self.name))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extractall", watched)
    return extracted


def assert_nothing_cached(cache: Path, name: str) -> None:
    """Only the archive itself may be in the dataset's cache: no unpacked folder, no
    staging folder, no manifest that says ready."""
    assert not datasets.manifest(datasets.get(name)).get("ready")
    leftovers = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    assert set(leftovers) <= {datasets.get(name).files[0].name}, leftovers


@pytest.mark.parametrize("case", list(EVIL_TAR_MEMBERS))
def test_data_add_refuses_a_tar_with_an_escaping_or_special_member(tmp_path, registry, no_extraction, case):
    member, why = EVIL_TAR_MEMBERS[case]
    archive = cifar_with(member, data=b"evil")
    cache = registry("cifar10", archive)
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(archive)
    assert_user_error(invoke("data", "add", "cifar10", tmp_path / "cifar-10-binary.tar.gz"),
                      "cifar10: cannot unpack cifar-10-binary.tar.gz", f"member {member.name!r} {why}",
                      "nothing was unpacked")
    assert no_extraction == []  # refused from the headers: nothing was extracted, not even to a staging folder
    assert_nothing_cached(cache, "cifar10")
    assert not Path("/tmp/cnncli-absolute.txt").exists() and not list(tmp_path.rglob("escaped.txt"))


def test_a_member_announcing_an_absurd_size_is_refused_from_its_header(tmp_path, registry, no_extraction):
    archive = cifar_with(absurd_size=64 * 2**30)  # 64 GiB announced; a few KB of archive
    cache = registry("cifar10", archive)
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(archive)
    assert_user_error(invoke("data", "add", "cifar10", tmp_path / "cifar-10-binary.tar.gz"),
                      "cifar-10-binary.tar.gz", "members unpack to more than 2,147,483,648 bytes",
                      "'cifar-10-batches-bin/huge.bin'")
    assert no_extraction == []
    assert_nothing_cached(cache, "cifar10")


def test_the_unpacking_budget_counts_every_member(tmp_path, registry, monkeypatch):
    archive = cifar_archive()  # six batches of 4 records (12,292 bytes each) and the class names
    cache = registry("cifar10", archive, counts={"train": 20, "test": 4})
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(archive)
    monkeypatch.setattr(archives, "UNPACK_LIMIT", 5 * 12_292)
    assert_user_error(invoke("data", "add", "cifar10", tmp_path / "cifar-10-binary.tar.gz"),
                      "members unpack to more than 61,460 bytes (at 'cifar-10-batches-bin/test_batch.bin')")
    assert_nothing_cached(cache, "cifar10")
    monkeypatch.setattr(archives, "UNPACK_LIMIT", 7 * 12_292)
    assert_ok(invoke("data", "add", "cifar10", tmp_path / "cifar-10-binary.tar.gz"))


def test_a_damaged_archive_fails_halfway_and_nothing_counts_as_cached(tmp_path, registry, monkeypatch):
    """Extraction that fails after writing files (a cut archive is refused by check_tar
    before extraction starts, so the failure is made in extractall): the staging folder goes."""
    archive = cifar_archive()
    cache = registry("cifar10", archive)
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(archive)
    real, written = tarfile.TarFile.extractall, []

    def halfway(self, path, members=None, **kwargs):  # the checks passed; the disk fills after the first files
        files = [m for m in members if m.isfile()]
        real(self, path, members=files[:2], **kwargs)
        written.extend(p for p in Path(path).rglob("*") if p.is_file())
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "extractall", halfway)
    assert_user_error(invoke("data", "add", "cifar10", tmp_path / "cifar-10-binary.tar.gz"),
                      "cifar10: cannot unpack cifar-10-binary.tar.gz", "No space left on device",
                      "nothing was unpacked")
    assert len(written) == 2  # the extraction did fail halfway, with files written
    assert_nothing_cached(cache, "cifar10")


def zip_with(name: str, mode: int | None = None, file_size: int | None = None) -> bytes:
    """caltech-101.zip as published, plus a member ``name`` (a Unix ``mode``, e.g. a
    symbolic link's, when given)."""
    out = io.BytesIO()
    inner = zipfile.ZipFile(io.BytesIO(caltech_zip({"Motorbikes": 2, "airplanes": 2})))
    with zipfile.ZipFile(out, "w") as zf:
        for item in inner.infolist():
            zf.writestr(item, inner.read(item))
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        zf.writestr(info, b"/etc/passwd")
    return out.getvalue()


@pytest.mark.parametrize("name, mode, why", [
    ("caltech-101/link", 0o120777, "is a symbolic link"),
    ("caltech-101/dev", 0o020666, "is a device or other special file"),
    ("/abs/caltech.txt", None, "has an absolute path"),
    ("../caltech.txt", None, "has '..' in its path"),
])
def test_data_add_refuses_a_zip_with_a_link_device_or_escaping_name(tmp_path, registry, name, mode, why):
    archive = zip_with(name, mode)
    cache = registry("caltech101", archive)
    (tmp_path / "caltech-101.zip").write_bytes(archive)
    assert_user_error(invoke("data", "add", "caltech101", tmp_path / "caltech-101.zip"),
                      "caltech101: cannot unpack caltech-101.zip", f"member {name!r} {why}")
    assert_nothing_cached(cache, "caltech101")


def test_a_hostile_archive_from_a_mirror_is_refused_by_fetch_and_by_train(tmp_path, registry, monkeypatch):
    archive = cifar_with(EVIL_TAR_MEMBERS["symlink"][0])
    cache = registry("cifar10", archive)
    (tmp_path / "mirror" / "cifar10").mkdir(parents=True)
    (tmp_path / "mirror" / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(archive)
    cfg = config_file(tmp_path / "c.yaml", {"source": "cifar10"})
    with Mirror(tmp_path / "mirror") as mirror:
        monkeypatch.setenv("CNNCLI_DATA_MIRROR", mirror.url)
        assert_user_error(invoke("data", "fetch", "cifar10"), "cannot unpack cifar-10-binary.tar.gz",
                          "is a symbolic link")
        assert_user_error(invoke("train", cfg, "--runs-dir", tmp_path / "runs"), "cannot unpack",
                          "is a symbolic link")
    assert_nothing_cached(cache, "cifar10")
    assert not run_folders(tmp_path / "runs")


# ------------------------------------------------------------------ npz and IDX headers
def npy(shape: tuple, data: bytes, descr: str = "|u1", magic: bytes = b"\x93NUMPY") -> bytes:
    """A .npy file whose header says ``shape`` and ``descr``, followed by ``data`` as it is."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return magic + b"\x01\x00" + struct.pack("<H", len(header)) + header + data


def npz(**members: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for key, data in members.items():
            zf.writestr(f"{key}.npy", data)
    return out.getvalue()


LABELS = npy((40,), (np.arange(40) % 2).astype(np.int64).tobytes(), "<i8")
PIXELS = bytes(40 * 8 * 8 * 3)
HOSTILE_NPZ = {
    "more_rows.npz": (npz(x=npy((10**9, 8, 8, 3), PIXELS), y=LABELS), "announces shape (1000000000, 8, 8, 3)"),
    "negative.npz": (npz(x=npy((-40, 8, 8, 3), PIXELS), y=LABELS), "has a negative dimension"),
    "overflow.npz": (npz(x=npy((2**32, 2**32, 2**32, 3), PIXELS), y=LABELS), "announces shape (4294967296,"),
    "magic.npz": (npz(x=npy((40, 8, 8, 3), PIXELS, magic=b"\x93NUMPZ"), y=LABELS), "bad magic number"),
    "objects.npz": (npz(x=npy((40, 8, 8, 3), PIXELS), y=npy((40,), bytes(320), "|O")), "holds Python objects"),
    "not_a_zip.npz": (b"\x00\x01garbage" * 10, "expected a zip archive of .npy arrays"),
}


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("npz_run")
    np.savez(root / "d.npz", x=np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8),
             y=np.arange(40) % 2)
    assert_ok(invoke("train", config_file(root / "c.yaml", {"source": "npz", "path": str(root / "d.npz")}),
                     "--runs-dir", root / "runs", "-q"))
    (run,) = run_folders(root / "runs")
    return run


@pytest.mark.parametrize("name", list(HOSTILE_NPZ))
def test_a_hostile_npz_is_refused_by_train_and_eval_before_allocating(tmp_path, npz_run, monkeypatch, name):
    content, phrase = HOSTILE_NPZ[name]
    path = tmp_path / name
    path.write_bytes(content)
    opened = []  # the files numpy read arrays from
    real_load = np.load

    def watched_load(file, *args, **kwargs):
        opened.append(str(getattr(file, "name", file)))
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(np, "load", watched_load)
    assert_user_error(invoke("train", config_file(tmp_path / "c.yaml", {"source": "npz", "path": str(path)}),
                             "--runs-dir", tmp_path / "runs"), str(path), phrase)
    assert not run_folders(tmp_path / "runs")
    before = sorted(p.name for p in npz_run.iterdir())
    assert_user_error(invoke("eval", npz_run, "--data-path", path), str(path), phrase)
    assert sorted(p.name for p in npz_run.iterdir()) == before
    assert str(path) not in opened  # refused from the headers: numpy never read the file


def idx(dims: tuple[int, ...], data: bytes = b"", code: int = 0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + data


HOSTILE_IDX = {
    # 2**31 x 2**31 x 4 = 2**64 values: a 64-bit product wraps to 0, which "matches" no data at all.
    "overflow": (idx((2**31, 2**31, 4)), "IDX data has 0 bytes; its header announces 18446744073709551616"),
    "claims_more": (gzip.compress(idx((10**9, 28, 28), bytes(28 * 28))), "a gzip file of"),
    "magic": (b"\x08\x03" + idx((10, 28, 28), bytes(7840))[2:], "bad magic number"),
    "trailing_bomb": (gzip.compress(idx((10, 28, 28), bytes(7840)) + bytes(20 * 2**20)),
                      "IDX data has more than 7840 bytes"),
}


@pytest.mark.parametrize("name", list(HOSTILE_IDX))
def test_a_hostile_idx_file_is_refused_by_train_and_data_add(tmp_path, name):
    content, phrase = HOSTILE_IDX[name]
    folder = tmp_path / "digits"
    folder.mkdir()
    images = folder / "train-images-idx3-ubyte.gz"
    images.write_bytes(content)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx((10,), bytes(range(10)))))
    for prefix in ("t10k",):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx((10, 28, 28), bytes(7840))))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx((10,), bytes(range(10)))))
    with pytest.raises(DataError, match=phrase):
        read_idx(images)
    cfg = {"name": "d", "seed": 0, "data": {"source": "idx", "path": str(folder)},
           "model": {"input_shape": [28, 28, 1], "layers": [{"type": "flatten"},
                                                            {"type": "dense", "units": 10, "activation": "softmax"}]},
           "train": {"epochs": 1}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert_user_error(invoke("train", tmp_path / "c.yaml", "--runs-dir", tmp_path / "runs"), str(images), phrase)
    assert not run_folders(tmp_path / "runs")
    assert_user_error(invoke("data", "add", "mnist", folder), str(images), phrase)
    assert not datasets.manifest(datasets.get("mnist")).get("ready")


def test_npz_and_idx_readers_still_read_sound_files(tmp_path):
    """The header checks refuse what they should and nothing else (savez and savez_compressed, IDX raw and gzip)."""
    x = np.random.default_rng(1).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "ok.npz", x=x, y=np.arange(6) % 2)
        got_x, got_y = load_npz(tmp_path / "ok.npz")
        assert np.array_equal(got_x, x) and got_y.tolist() == [0, 1, 0, 1, 0, 1]
    labels = npy((6,), (np.arange(6) % 2).astype(np.int64).tobytes(), "<i8")
    (tmp_path / "ok.npz").write_bytes(npz(x=npy((6, 4, 4, 3), x.tobytes()), y=labels))  # written by hand, as above
    assert np.array_equal(load_npz(tmp_path / "ok.npz")[0], x)
    (tmp_path / "empty.idx").write_bytes(idx((0, 28, 28)))
    assert read_idx(tmp_path / "empty.idx").shape == (0, 28, 28)
