"""Datasets by name: official files and checksums, a verified cache, mirrors, local copies.

``data.source: caltech101`` (or ``mnist``, ``fashion_mnist``) fetches the dataset's
official files on first use with **pooch** (download to a temporary file, check the
publisher's MD5, then move it into the cache: a partial or wrong file never enters it),
unpacks them once, and reads them from the cache ever after.

* The cache is the platform's user cache folder (``~/.cache/cnncli`` on Linux), or
  ``CNNCLI_DATA_DIR``; each dataset has its own folder.
* ``CNNCLI_DATA_MIRROR=URL`` replaces the official host: the mirror holds
  ``URL/<dataset>/<official file name>`` (a lab can serve them over HTTP from one machine).
* ``cnncli data add NAME PATH`` (:func:`add_local`) registers a copy on disk for a machine
  without internet: an official file (checked by its MD5 and copied into the cache), or
  the unpacked data (a folder of class folders for Caltech-101; IDX files whose decoded
  arrays must have the official counts, shapes and labels, for a re-packed copy such as
  Debian's ``dataset-fashion-mnist``, whose gzip bytes differ from the official ones). The
  check that was made is recorded, and a run's ``data.json`` says which.

Archives are unpacked by :mod:`cnncli.data.archives`: every member is checked before
anything is written (an absolute path, ``..``, a link leading outside, a device, too many
members or too many bytes refuse the whole archive), then extracted with ``tarfile``'s
``data`` filter into a temporary folder that is renamed into place at the end: a
half-unpacked archive never counts as cached.

Official URLs and checksums: the publishers' pages and torchvision's dataset code
(docs/DATASETS.md lists them with their sources).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncli.errors import ConfigError, DataError
from cnncli.nn.validate import did_you_mean

MANIFEST = "cnncli-dataset.json"


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    md5: str


@dataclass(frozen=True)
class Dataset:
    """What cnncli knows of a dataset it can fetch by name."""

    name: str
    title: str
    files: tuple[RemoteFile, ...]
    license: str
    citation: str
    #: How its files are read: "image_folder" (class folders of images), "idx" or "cifar10" (binary batches).
    layout: str
    #: Examples the publisher promises: {split: count}, or per class for Caltech-101.
    counts: dict = field(default_factory=dict)
    image_shape: tuple[int, ...] = ()
    num_classes: int = 0
    #: The folder, relative to the dataset's cache folder, that holds the class folders.
    image_root: str = ""


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset(
        "caltech101", "Caltech-101: images of 101 object categories and a background class",
        (RemoteFile("caltech-101.zip", "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
                    "3138e1922a9193bfa496528edbbc45d0"),),
        "CC BY 4.0",
        "Fei-Fei Li, Marco Andreetto, Marc'Aurelio Ranzato and Pietro Perona, Caltech 101, CaltechDATA, "
        "doi:10.22002/D1.20086; and L. Fei-Fei, R. Fergus and P. Perona, Learning generative visual models from "
        "few training examples, CVPR 2004 Workshop on Generative-Model Based Vision.",
        "image_folder", counts={"Motorbikes": 798, "airplanes": 800}, num_classes=101,
        image_root="101_ObjectCategories"),
    Dataset(
        "mnist", "MNIST: handwritten digits, 28x28 greyscale, 60,000 training and 10,000 test images",
        tuple(RemoteFile(f, f"https://ossci-datasets.s3.amazonaws.com/mnist/{f}", md5) for f, md5 in (
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"))),
        "the terms of its publishers, Yann LeCun, Corinna Cortes and Christopher J. C. Burges",
        "Y. LeCun, L. Bottou, Y. Bengio and P. Haffner, Gradient-based learning applied to document recognition, "
        "Proceedings of the IEEE 86(11), 1998.",
        "idx", counts={"train": 60000, "t10k": 10000}, image_shape=(28, 28), num_classes=10),
    Dataset(
        "fashion_mnist", "Fashion-MNIST: Zalando's article images, 28x28 greyscale, 10 classes, 60,000 + 10,000",
        tuple(RemoteFile(f, f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{f}", md5) for f, md5 in (
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"))),
        "MIT",
        "H. Xiao, K. Rasul and R. Vollgraf, Fashion-MNIST: a novel image dataset for benchmarking machine learning "
        "algorithms, arXiv:1708.07747, 2017.",
        "idx", counts={"train": 60000, "t10k": 10000}, image_shape=(28, 28), num_classes=10),
    Dataset(
        "cifar10", "CIFAR-10: 32x32 colour images of 10 classes, 50,000 training and 10,000 test images",
        (RemoteFile("cifar-10-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                    "c32a1d4ab5d03f1284b67883e8d87530"),),
        "the terms of its publisher, Alex Krizhevsky (cite the report below)",
        "A. Krizhevsky, Learning Multiple Layers of Features from Tiny Images, technical report, University of "
        "Toronto, 2009.",
        "cifar10", counts={"train": 50000, "test": 10000}, image_shape=(32, 32, 3), num_classes=10,
        image_root="cifar-10-batches-bin"),
)}


def get(name: object, path: str = "data.source") -> Dataset:
    if not isinstance(name, str) or name not in DATASETS:
        raise ConfigError(path, "", None, raw=f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; expected one "
                                              f"of: {', '.join(DATASETS)}")
    return DATASETS[name]


# ------------------------------------------------------------------------------ the cache
def cache_root() -> Path:
    """``CNNCLI_DATA_DIR``, else the platform's user cache folder for cnncli."""
    env = os.environ.get("CNNCLI_DATA_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("cnncli"))


def folder(dataset: Dataset) -> Path:
    return cache_root() / dataset.name


def manifest(dataset: Dataset) -> dict:
    """What the cache knows of ``dataset``: {} when nothing is there."""
    path = folder(dataset) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_manifest(dataset: Dataset, info: dict) -> None:
    target = folder(dataset)
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, target / MANIFEST)


def mirror_url(dataset: Dataset, remote: RemoteFile) -> str:
    mirror = os.environ.get("CNNCLI_DATA_MIRROR", "").strip().rstrip("/")
    return f"{mirror}/{dataset.name}/{remote.name}" if mirror else remote.url


# ----------------------------------------------------------------------- fetching, reading
def prepare(name: str, *, on_fetch=None, timeout: float = 60.0) -> tuple[Path, dict]:
    """(the folder to read the dataset from, what was checked), fetching it if needed.

    ``on_fetch(dataset)`` is called once before anything is downloaded and may return a
    progress bar for pooch (an object with ``total``, ``update``, ``reset``, ``close``)."""
    dataset = get(name)
    info = manifest(dataset)
    if info.get("ready"):
        root = Path(info["root"])
        if not root.exists():
            raise DataError(f"{name}: the copy registered with `cnncli data add` is gone ({root}); add it again")
        return root, info
    progress = on_fetch(dataset) if on_fetch is not None else None
    for remote in dataset.files:
        _download(dataset, remote, progress, timeout)
    root = _unpack(dataset)
    info = {"ready": True, "root": str(root), "check": "md5 of the official files",
            "files": {r.name: r.md5 for r in dataset.files}}
    _write_manifest(dataset, info)
    return root, info


def _download(dataset: Dataset, remote: RemoteFile, progress, timeout: float) -> Path:
    """The official file in the cache, checked by its MD5 (pooch: temporary file, then rename)."""
    import pooch
    import requests

    url = mirror_url(dataset, remote)
    pooch.get_logger().setLevel("WARNING")  # the command line says what is downloaded
    try:
        path = pooch.retrieve(url, known_hash=f"md5:{remote.md5}", fname=remote.name, path=folder(dataset),
                              downloader=pooch.HTTPDownloader(progressbar=progress or False, timeout=timeout))
    except ValueError as err:  # pooch: the hash of what came is not the official one
        raise DataError(f"{dataset.name}: {remote.name} from {url} failed its checksum (expected md5 "
                        f"{remote.md5}; {_received_hash(err)}); nothing was cached") from None
    except requests.exceptions.HTTPError as err:
        raise DataError(f"{dataset.name}: {url}: {err.response.status_code if err.response is not None else ''} "
                        f"{_reason(err)}; {_offline_hint(dataset)}") from None
    except (requests.exceptions.RequestException, OSError) as err:
        raise DataError(f"{dataset.name}: cannot download {url} ({type(err).__name__}); "
                        f"{_offline_hint(dataset)}") from None
    return Path(path)


def _received_hash(err: ValueError) -> str:
    import re

    got = re.search(r"but got ([0-9a-f]+)", str(err))
    return f"received md5 {got.group(1)}" if got else str(err)


def _reason(err) -> str:
    response = getattr(err, "response", None)
    return getattr(response, "reason", "") or str(err)


def _offline_hint(dataset: Dataset) -> str:
    return (f"without network, fetch {', '.join(r.name for r in dataset.files)} elsewhere and run "
            f"`cnncli data add {dataset.name} PATH`, or set CNNCLI_DATA_MIRROR to a server that has them")


def _unpack(dataset: Dataset) -> Path:
    """Unpack the cached archives (once); returns the folder the data is read from."""
    target = folder(dataset)
    if dataset.layout == "idx":
        return target  # read as they are (gzip)
    from cnncli.data.archives import ArchiveError, extract_tar, extract_zip_member

    staging = target / ".unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    archive = target / dataset.files[0].name
    final = target / dataset.image_root
    try:
        if dataset.layout == "cifar10":
            extract_tar(archive, staging)
        else:  # caltech101: a zip holding the tar.gz of the images
            with zipfile.ZipFile(archive) as zf:
                inner = next((m for m in zf.namelist() if m.endswith("101_ObjectCategories.tar.gz")), None)
            if inner is None:
                raise DataError(f"{archive}: no 101_ObjectCategories.tar.gz inside")
            inner_file = extract_zip_member(archive, inner, staging)
            extract_tar(inner_file, staging)
            inner_file.unlink()
        if not (staging / dataset.image_root).is_dir():
            raise DataError(f"{archive}: no {dataset.image_root}/ inside; not the official archive")
        # Only a complete unpacking replaces what was there: renamed into place at the end.
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging / dataset.image_root, final)
    except (ArchiveError, tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
        # Refused from its headers, or a damaged archive failing halfway: the staging folder goes, what was there stays.
        why = err.reason if isinstance(err, ArchiveError) else err
        raise DataError(f"{dataset.name}: cannot unpack {dataset.files[0].name} ({why}); nothing was "
                        "unpacked") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


# -------------------------------------------------------------------------- local copies
def add_local(name: str, path: str | Path) -> dict:
    """Register a copy on disk (``cnncli data add``): an official file (checked by MD5
    and copied into the cache) or the unpacked data (checked by its content)."""
    dataset = get(name, "NAME")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: does not exist")
    if path.is_file():
        return _add_official_file(dataset, path)
    if dataset.layout == "image_folder":
        return _add_image_folder(dataset, path)
    if dataset.layout == "cifar10":
        return _add_cifar_folder(dataset, path)
    return _add_idx_folder(dataset, path)


def md5_of(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 (the publishers' checksums are MD5)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _add_official_file(dataset: Dataset, path: Path) -> dict:
    remote = next((r for r in dataset.files if r.name == path.name), None)
    if remote is None:
        raise DataError(f"{path}: not one of {dataset.name}'s files ({', '.join(r.name for r in dataset.files)})")
    got = md5_of(path)
    if got != remote.md5:
        raise DataError(f"{path}: md5 {got} is not the official {remote.md5}; not added")
    target = folder(dataset)
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".{remote.name}.{os.getpid()}.tmp"
    shutil.copyfile(path, tmp)
    os.replace(tmp, target / remote.name)
    missing = [r.name for r in dataset.files if not (target / r.name).is_file()]
    if missing:
        return {"ready": False, "added": remote.name, "missing": missing}
    root = _unpack(dataset)
    info = {"ready": True, "root": str(root), "check": "md5 of the official files (added from disk)",
            "files": {r.name: r.md5 for r in dataset.files}}
    _write_manifest(dataset, info)
    return info


def _add_image_folder(dataset: Dataset, path: Path) -> dict:
    """Class folders of images (``101_ObjectCategories`` or a folder holding some of its
    classes): each class the publisher counts must have its count of images."""
    root = path / dataset.image_root if (path / dataset.image_root).is_dir() else path
    classes = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if not classes:
        raise DataError(f"{root}: no class folders")
    checked = {}
    for cls, expected in dataset.counts.items():
        if cls in classes:
            found = sum(1 for f in classes[cls].iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if found != expected:
                raise DataError(f"{classes[cls]}: {found} images; {dataset.name}'s {cls} has {expected}; not added")
            checked[cls] = found
    info = {"ready": True, "root": str(root.resolve()), "classes": sorted(classes),
            "check": f"a folder of {len(classes)} class folders; image counts of "
                     f"{', '.join(f'{c} ({n})' for c, n in checked.items()) or 'no class the publisher counts'} "
                     "as published (the bytes were not compared)"}
    _write_manifest(dataset, info)
    return info


def _add_idx_folder(dataset: Dataset, path: Path) -> dict:
    """IDX files (gzip or not): the decoded arrays must have the official counts, image
    shape and labels 0..num_classes-1 (a re-packed copy's bytes differ from the official)."""
    from cnncli.data.idx import load_idx_pair

    for prefix, count in dataset.counts.items():
        x, y = load_idx_pair(path, prefix)
        if len(x) != count or tuple(x.shape[1:3]) != dataset.image_shape:
            raise DataError(f"{path}: {prefix} holds {len(x)} images of {x.shape[1:]}; {dataset.name} has {count} "
                            f"of {dataset.image_shape}; not added")
        if y.min() < 0 or y.max() >= dataset.num_classes or len(np.unique(y)) != dataset.num_classes:
            raise DataError(f"{path}: {prefix} labels are not 0..{dataset.num_classes - 1}; not added")
    info = {"ready": True, "root": str(path.resolve()),
            "check": "decoded arrays: " + ", ".join(f"{p} {n} images" for p, n in dataset.counts.items())
                     + f" of {'x'.join(map(str, dataset.image_shape))}, labels 0..{dataset.num_classes - 1} "
                     "(the file bytes were not compared with the official ones)"}
    _write_manifest(dataset, info)
    return info


def _add_cifar_folder(dataset: Dataset, path: Path) -> dict:
    """``cifar-10-batches-bin`` (or a folder holding it): 50,000 + 10,000 records, labels 0..9."""
    from cnncli.data.cifar import find_folder, load_cifar10

    x, y, x_test, y_test, _ = load_cifar10(path)
    if (len(x), len(x_test)) != (dataset.counts["train"], dataset.counts["test"]) or len(np.unique(y)) != 10:
        raise DataError(f"{path}: {len(x)} + {len(x_test)} images; {dataset.name} has {dataset.counts['train']} + "
                        f"{dataset.counts['test']} of 10 classes; not added")
    info = {"ready": True, "root": str(find_folder(path).resolve()),
            "check": "decoded batches: 50000 training and 10000 test records, labels 0..9 (the archive's bytes "
                     "were not compared with the official ones)"}
    _write_manifest(dataset, info)
    return info


def classes(name: str) -> list[str] | None:
    """The class names of a dataset that is ready (None before it is fetched)."""
    dataset = get(name)
    info = manifest(dataset)
    if not info.get("ready"):
        return None
    root = Path(info["root"])
    if dataset.layout == "image_folder":
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if dataset.layout == "cifar10":
        from cnncli.data.cifar import META_FILE, find_folder, read_class_names

        return read_class_names(find_folder(root) / META_FILE)
    return [str(i) for i in range(dataset.num_classes)]


def status(name: str) -> dict:
    """For ``cnncli data list``: whether it is ready, where, and its size on disk."""
    dataset = get(name)
    info = manifest(dataset)
    where = Path(info["root"]) if info.get("ready") else folder(dataset)
    size = sum(f.stat().st_size for f in where.rglob("*") if f.is_file()) if where.exists() else 0
    return {"name": name, "ready": bool(info.get("ready")), "where": str(where), "bytes": size,
            "check": info.get("check", "")}
