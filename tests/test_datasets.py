"""Datasets by name: downloads through a real HTTP server on 127.0.0.1 (a mirror, as
``CNNCLI_DATA_MIRROR`` names one), checksums, the cache, local copies, unpacking safely.

The official files cannot be fetched here, so each test stands in small files of its own
for a dataset's and gives the registry their MD5s: the code path is the real one
(pooch's download, verification and cache), only the bytes are smaller.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import io
import json
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnncli
from cnncli.data import datasets
from cnncli.errors import ConfigError, DataError
from tests.helpers import assert_ok, assert_user_error, invoke

REPO = Path(__file__).resolve().parents[1]
CALTECH = (REPO / "../shared/datasets/caltech101-motorbikes-airplanes").resolve()
FASHION = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------ a mirror on 127.0.0.1
class Mirror:
    """A threaded HTTP server on 127.0.0.1 serving ``root``; ``stall`` names files whose
    answer never comes (until the server stops)."""

    def __init__(self, root: Path):
        self.root, self.stall, self.requests = root, set(), []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                mirror.requests.append(self.path)
                if Path(self.path).name in mirror.stall:
                    time.sleep(3)  # longer than the test's timeout; bounded
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324


def idx_gz(array: np.ndarray) -> bytes:
    """An IDX file (unsigned bytes) of ``array``, gzipped."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture
def small_mnist(tmp_path, monkeypatch):
    """A 28x28 'mnist' of 60 + 20 images served by a mirror; the registry expects its MD5s."""
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in (("train", 60), ("t10k", 20)):
        files[f"{prefix}-images-idx3-ubyte.gz"] = idx_gz(rng.integers(0, 256, (n, 28, 28)))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = idx_gz(np.arange(n) % 10)
    served = tmp_path / "mirror" / "mnist"
    served.mkdir(parents=True)
    for name, data in files.items():
        (served / name).write_bytes(data)
    real = datasets.DATASETS["mnist"]
    remote = tuple(dataclasses.replace(r, md5=md5(files[r.name])) for r in real.files)
    monkeypatch.setitem(datasets.DATASETS, "mnist", dataclasses.replace(real, files=remote,
                                                                        counts={"train": 60, "t10k": 20}))
    with Mirror(tmp_path / "mirror") as mirror:
        monkeypatch.setenv("CNNCLI_DATA_MIRROR", mirror.url)
        monkeypatch.setenv("CNNCLI_DATA_DIR", str(tmp_path / "cache"))
        yield mirror, served, files


MNIST_CONFIG = {
    "name": "digits", "seed": 0, "data": {"source": "mnist"},
    "model": {"input_shape": [28, 28, 1], "layers": [{"type": "flatten"},
                                                     {"type": "dense", "units": 10, "activation": "softmax"}]},
    "train": {"epochs": 1, "validation_split": 0.0},
}


def test_a_dataset_by_name_is_downloaded_verified_cached_and_trained_on(small_mnist, tmp_path):
    mirror, _, files = small_mnist
    res = invoke("data", "fetch", "mnist")
    assert_ok(res)
    assert "mnist: ready" in res.stdout and "md5 of the official files" in res.stdout
    assert sorted(Path(p).name for p in mirror.requests) == sorted(files)  # URL/<dataset>/<official name>
    cached = tmp_path / "cache" / "mnist"
    assert {p.name for p in cached.iterdir() if p.suffix == ".gz"} == set(files)
    run = cnncli.train(MNIST_CONFIG, runs_dir=tmp_path / "runs")
    assert run.history[0].epoch == 1 and len(mirror.requests) == len(files)  # from the cache, not again
    record = json.loads((run.path / "data.json").read_text())["dataset"]
    assert record["name"] == "mnist" and "LeCun" in record["citation"] and record["check"]
    listing = invoke("data", "list")
    assert_ok(listing)
    assert "ready" in next(line for line in listing.stdout.splitlines() if " mnist " in line)


@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
def test_a_file_that_fails_its_checksum_is_not_cached(small_mnist, tmp_path, damage):
    _, served, files = small_mnist
    name = "train-images-idx3-ubyte.gz"
    data = files[name]
    (served / name).write_bytes(data[:-1] + bytes([data[-1] ^ 1]) if damage == "corrupted" else data[:100])
    line = assert_user_error(invoke("data", "fetch", "mnist"), f"mnist: {name} from http://127.0.0.1",
                             "failed its checksum", f"expected md5 {md5(data)}",
                             f"received md5 {md5((served / name).read_bytes())}", "nothing was cached")
    assert "Traceback" not in line
    cache = tmp_path / "cache" / "mnist"
    assert not (cache / name).exists() and not any(p.name.endswith(".tmp") for p in cache.rglob("*"))
    assert not datasets.manifest(datasets.get("mnist")).get("ready")


def test_a_missing_file_and_a_stalled_server(small_mnist):
    mirror, served, _ = small_mnist
    labels = served / "t10k-labels-idx1-ubyte.gz"
    kept = labels.read_bytes()
    labels.unlink()
    assert_user_error(invoke("data", "fetch", "mnist"), "t10k-labels-idx1-ubyte.gz: 404",
                      "cnncli data add mnist PATH")
    labels.write_bytes(kept)
    mirror.stall.add(labels.name)
    with pytest.raises(DataError, match=r"mnist: cannot download http://127\.0\.0\.1:\d+/mnist/t10k-labels-idx1-ubyte"
                                        r"\.gz \(\w*Timeout\w*\)"):
        datasets.prepare("mnist", timeout=0.5)


def test_no_network_and_nothing_cached_says_what_to_do(tmp_path, monkeypatch):
    """CNNCLI_DATA_MIRROR points at a port where nothing listens (the test suite's default)."""
    cfg = {**MNIST_CONFIG}
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    line = assert_user_error(invoke("train", tmp_path / "c.yaml", "--runs-dir", tmp_path / "runs"),
                             "mnist: cannot download http://127.0.0.1:9/mnist/train-images-idx3-ubyte.gz",
                             "`cnncli data add mnist PATH`", "CNNCLI_DATA_MIRROR")
    assert "ConnectionError" in line
    assert not (tmp_path / "runs").exists()


def test_unknown_names_say_did_you_mean(tmp_path):
    with pytest.raises(ConfigError, match=r"data.source: unknown data source 'mnsit' \(did you mean 'mnist'\?\)"):
        from cnncli.config import load_config

        load_config({**MNIST_CONFIG, "data": {"source": "mnsit"}})
    assert_user_error(invoke("data", "info", "cifar"), "NAME: unknown dataset 'cifar'")


# ------------------------------------------------------------------------ Caltech-101
def caltech_zip(classes: dict[str, int], evil: str | None = None) -> bytes:
    """caltech-101.zip as published: caltech-101/101_ObjectCategories.tar.gz inside, with
    ``101_ObjectCategories/<class>/image_NNNN.jpg``; ``evil`` adds a member of that name."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w:gz") as tar:
        for cls, n in classes.items():
            for i in range(n):
                img = io.BytesIO()
                shade = (40 * i) % 255 if cls == "airplanes" else 255 - (40 * i) % 255
                Image.new("RGB", (12, 10), (shade, 80, 255 - shade)).save(img, "JPEG")
                info = tarfile.TarInfo(f"101_ObjectCategories/{cls}/image_{i + 1:04d}.jpg")
                info.size = len(img.getvalue())
                tar.addfile(info, io.BytesIO(img.getvalue()))
        if evil:
            info = tarfile.TarInfo(evil)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("caltech-101/101_ObjectCategories.tar.gz", tar_bytes.getvalue())
        zf.writestr("caltech-101/Annotations.tar", b"")
    return out.getvalue()


@pytest.fixture
def small_caltech(tmp_path, monkeypatch):
    def serve(archive: bytes, counts: dict[str, int]):
        real = datasets.DATASETS["caltech101"]
        remote = (dataclasses.replace(real.files[0], md5=md5(archive)),)
        monkeypatch.setitem(datasets.DATASETS, "caltech101",
                            dataclasses.replace(real, files=remote, counts=counts))
        (tmp_path / "mirror" / "caltech101").mkdir(parents=True, exist_ok=True)
        (tmp_path / "mirror" / "caltech101" / "caltech-101.zip").write_bytes(archive)
        monkeypatch.setenv("CNNCLI_DATA_DIR", str(tmp_path / "cache"))

    return serve


def test_caltech101_by_name_with_a_subset_of_its_classes(small_caltech, tmp_path, monkeypatch):
    small_caltech(caltech_zip({"Motorbikes": 8, "airplanes": 8, "Faces": 3}), {"Motorbikes": 8, "airplanes": 8})
    with Mirror(tmp_path / "mirror") as mirror:
        monkeypatch.setenv("CNNCLI_DATA_MIRROR", mirror.url)
        cfg = {"name": "pair", "seed": 0, "data": {"source": "caltech101"},
               "model": {"input_shape": [8, 8, 3], "layers": [{"type": "flatten"},
                                                              {"type": "dense", "units": 1, "activation": "sigmoid"}]},
               "train": {"epochs": 1}}
        run = cnncli.train(cfg, runs_dir=tmp_path / "runs")
    data = json.loads((run.path / "data.json").read_text())
    assert data["class_names"] == ["Motorbikes", "airplanes"]  # the paper's pair, not Faces
    assert data["train"] + data["validation"] == 16 and data["dataset"]["license"] == "CC BY 4.0"
    assert (tmp_path / "cache" / "caltech101" / "101_ObjectCategories" / "Faces").is_dir()
    from cnncli.config import load_config

    bad = load_config({**cfg, "data": {"source": "caltech101", "classes": ["Motorbikes", "airplane"]}})
    with pytest.raises(DataError, match=r"data.classes: unknown class 'airplane' \(did you mean 'airplanes'\?\)"):
        from cnncli.data import load_dataset

        load_dataset(bad.values)


def test_an_archive_member_that_escapes_is_refused_and_nothing_counts_as_cached(small_caltech, tmp_path):
    archive = caltech_zip({"Motorbikes": 2, "airplanes": 2}, evil="../../escaped.txt")
    small_caltech(archive, {})
    (tmp_path / "caltech-101.zip").write_bytes(archive)
    assert_user_error(invoke("data", "add", "caltech101", tmp_path / "caltech-101.zip"),
                      "caltech101: cannot unpack caltech-101.zip")
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not datasets.manifest(datasets.get("caltech101")).get("ready")
    assert not (tmp_path / "cache" / "caltech101" / "101_ObjectCategories").exists()


def test_an_official_file_with_the_wrong_md5_is_not_added(tmp_path):
    fake = tmp_path / "caltech-101.zip"
    fake.write_bytes(b"not the archive")
    assert_user_error(invoke("data", "add", "caltech101", fake), f"md5 {md5(b'not the archive')} is not the "
                      "official 3138e1922a9193bfa496528edbbc45d0; not added")


@pytest.mark.skipif(not CALTECH.is_dir(), reason="../shared/datasets has no Caltech-101 copy")
def test_the_papers_experiment_from_a_local_copy_of_caltech101(tmp_path, monkeypatch):
    """Offline: `cnncli data add caltech101 FOLDER`, then configs/paper.yaml as shipped."""
    res = invoke("data", "add", "caltech101", CALTECH)
    assert_ok(res)
    assert "Motorbikes (798), airplanes (800) as published" in " ".join(res.stdout.split())
    res = invoke("train", REPO / "configs" / "paper.yaml", "--set", "train.epochs=1", "--set", "data.limit=120",
                 "--runs-dir", tmp_path / "runs", "-q")
    assert_ok(res)
    run = next(p for p in (tmp_path / "runs").iterdir() if p.name.endswith("-paper"))
    record = json.loads((run / "data.json").read_text())["dataset"]
    assert record["read_from"] == str(CALTECH) and "counts" in record["check"]


@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_a_repacked_fashion_mnist_is_accepted_by_its_decoded_arrays(tmp_path):
    res = invoke("data", "add", "fashion_mnist", FASHION)
    assert_ok(res)
    assert "decoded arrays: train 60000 images, t10k 10000 images of 28x28, labels 0..9" in " ".join(res.stdout.split())
    assert datasets.prepare("fashion_mnist")[0] == FASHION.resolve()


@pytest.mark.parametrize("row, what", [([1, 1, 0], "has 2 ones (multi-hot)"), ([0, 0, 0], "has no 1"),
                                       ([0.7, 0.3, 0], "holds values other than 0 and 1")])
def test_npz_labels_that_are_not_one_hot_are_refused(tmp_path, row, what):
    from cnncli.data.npz import load_npz

    y = np.eye(3)[[0, 1, 2, 0]]
    y[2] = row
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2, 2)), y=y)
    with pytest.raises(DataError) as err:
        load_npz(tmp_path / "d.npz")
    assert str(err.value) == (f"{tmp_path / 'd.npz'}: y row 2 {what}; expected one-hot rows (exactly one 1), or (N,) "
                              "class labels (1 such rows)")
    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 2, 2)), y=np.eye(3)[[0, 1, 2, 0]])
    assert load_npz(tmp_path / "ok.npz")[1].tolist() == [0, 1, 2, 0]


def cifar_archive(records_per_batch: int = 4) -> bytes:
    """cifar-10-binary.tar.gz as published, with a few records per batch."""
    rng = np.random.default_rng(1)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            labels = np.arange(records_per_batch, dtype=np.uint8) % 10
            pixels = rng.integers(0, 256, (records_per_batch, 3072), dtype=np.uint8)
            add(name, np.concatenate([labels[:, None], pixels], axis=1).tobytes())
        add("batches.meta.txt", "\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                           "ship", "truck"]).encode() + b"\n\n")
    return out.getvalue()


def test_cifar10_by_name_from_its_binary_archive(tmp_path, monkeypatch):
    archive = cifar_archive()
    real = datasets.DATASETS["cifar10"]
    monkeypatch.setitem(datasets.DATASETS, "cifar10", dataclasses.replace(
        real, files=(dataclasses.replace(real.files[0], md5=md5(archive)),), counts={"train": 20, "test": 4}))
    (tmp_path / "mirror" / "cifar10").mkdir(parents=True)
    (tmp_path / "mirror" / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(archive)
    with Mirror(tmp_path / "mirror") as mirror:
        monkeypatch.setenv("CNNCLI_DATA_MIRROR", mirror.url)
        cfg = {"name": "c10", "seed": 0, "data": {"source": "cifar10"},
               "model": {"input_shape": [32, 32, 3], "layers": [
                   {"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}]},
               "train": {"epochs": 1, "validation_split": 0.0}}
        run = cnncli.train(cfg, runs_dir=tmp_path / "runs")
    data = json.loads((run.path / "data.json").read_text())
    assert data["class_names"][:2] == ["airplane", "automobile"] and data["train"] == 20 and data["test"] == 4
    assert "Krizhevsky" in data["dataset"]["citation"]


def test_a_csv_of_paths_and_labels(tmp_path):
    for i, colour in enumerate(["red", "blue"] * 6):
        Image.new("RGB", (6, 6), (200, 20, 20) if colour == "red" else (20, 20, 200)).save(tmp_path / f"{i}.png")
    rows = [f"{i}.png,{colour}" for i, colour in enumerate(["red", "blue"] * 6)]
    (tmp_path / "train.csv").write_text("path,label\n" + "\n".join(rows[:10]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(rows[10:]) + "\n")
    import yaml

    cfg = {"name": "csv", "seed": 0, "data": {"source": "csv", "path": "train.csv", "test_path": "test.csv"},
           "model": {"input_shape": [4, 4, 3], "layers": [{"type": "flatten"},
                                                          {"type": "dense", "units": 2, "activation": "softmax"}]},
           "train": {"epochs": 1, "validation_split": 0.0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = invoke("train", tmp_path / "c.yaml", "--runs-dir", tmp_path / "runs", "-q")  # paths relative to the config
    assert_ok(res)
    run = next(p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    data = json.loads((run / "data.json").read_text())
    assert data["class_names"] == ["blue", "red"] and data["train"] == 10 and data["test"] == 2
    (tmp_path / "test.csv").write_text("10.png,red\n11.png,green\n")
    assert_user_error(invoke("train", tmp_path / "c.yaml", "--runs-dir", tmp_path / "runs"),
                      "test.csv: labels ['green', 'red'] differ from the training CSV's ['blue', 'red']")


def test_data_info_names_the_classes_once_ready(small_mnist):
    assert "classes" not in invoke("data", "info", "mnist").stdout
    assert_ok(invoke("data", "fetch", "mnist"))
    res = invoke("data", "info", "mnist")
    assert_ok(res)
    assert "classes (10): 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in res.stdout and "licence:" in res.stdout


def test_train_says_it_fetches_a_dataset_the_first_time(small_mnist, tmp_path):
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(MNIST_CONFIG))
    first = invoke("train", tmp_path / "c.yaml", "--runs-dir", tmp_path / "runs", "-q")
    assert_ok(first)
    assert "mnist: not in the cache" in first.stdout and "fetching it once" in first.stdout
    again = invoke("train", tmp_path / "c.yaml", "--runs-dir", tmp_path / "runs", "-q")
    assert_ok(again)
    assert "not in the cache" not in again.stdout
