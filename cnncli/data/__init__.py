"""Datasets for training: sources, channel/size checks, normalization, splits.

``load_dataset(config_values, cache_dir)`` reads ``data.source`` (synthetic, image_folder,
npz or idx), checks the images against ``model.input_shape`` and the labels against the
network's outputs, takes a seeded stratified validation split from the training data,
normalizes with statistics of the training split only, and returns a :class:`Dataset`.

Normalization (``data.normalize``):

* ``scale`` (default): integer images are divided by 255 into [0, 1]; float images are
  taken as they are.
* ``standardize``: scaled as above, then each channel has the training split's mean
  subtracted and is divided by its standard deviation.
* ``none``: the values as stored.

Validation during training uses the stratified split of the training data
(``train.validation_split``); with ``validation_split: 0`` and a test set (``test_path``,
or the t10k files of an idx folder) the test set is used instead.

The statistics are part of the Dataset (``normalization``) and are saved in the run,
so that ``eval`` and ``predict`` apply exactly the same transform.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncli.data.images import DEFAULT_MAX_IMAGE_PIXELS
from cnncli.errors import DataError


@dataclass
class Split:
    x: np.ndarray  # (N, H, W, C) float
    y: np.ndarray  # (N,) int64 class indices

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    train: Split
    validation: Split | None
    test: Split | None
    class_names: list[str]
    normalization: dict
    info: dict = field(default_factory=dict)

    @property
    def evaluation(self) -> Split | None:
        """What ``eval`` measures by default: the test set, else the validation split."""
        return self.test if self.test is not None else self.validation

    @property
    def evaluation_name(self) -> str:
        """The name of :attr:`evaluation`'s split: ``test`` or ``validation``."""
        return "test" if self.test is not None else "validation"


def seeded_rng(seed: int, purpose: int) -> np.random.Generator:
    """A generator for one purpose (split, shuffling, ...) derived from the config's seed."""
    return np.random.default_rng([seed, purpose])


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices), holding out round(fraction * n_c) of each class c
    (at most n_c - 1)."""
    train_idx, held_idx = [], []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        rng.shuffle(members)
        # Every class keeps at least one training example (and gives up at most all but one).
        n_held = min(int(round(fraction * len(members))), len(members) - 1)
        held_idx.append(members[:n_held])
        train_idx.append(members[n_held:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(held_idx))


def convert_channels(x: np.ndarray, channels: int, where: str) -> np.ndarray:
    """Greyscale to RGB by repetition, RGB to greyscale by ITU-R 601 luminance."""
    have = x.shape[-1]
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return np.repeat(x, 3, axis=-1)
    if have == 3 and channels == 1:
        grey = x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        out = grey[..., None]
        return np.round(out).astype(x.dtype) if x.dtype.kind in "ui" else out.astype(x.dtype)
    raise DataError(f"{where}: images have {have} channels; the model's input has {channels}")


def load_raw(data: dict, input_shape: tuple[int, ...], seed: int, cache_dir: str | Path | None, on_fetch=None):
    """(x_train, y_train, x_test or None, y_test or None, class names, info) as stored."""
    source = data["source"]
    info: dict = {"source": source}
    # data.max_image_pixels exists for the sources that read image files (cnncli.data.images).
    max_pixels = data.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)
    animated: list[str] = []  # files read as their first frame: recorded when there are any
    x_test = y_test = None
    if source == "synthetic":
        from cnncli.data.synthetic import make_synthetic

        if len(input_shape) != 3 or input_shape[2] not in (1, 3):
            raise DataError(f"synthetic data needs input_shape [H, W, 1 or 3]; got {list(input_shape)}")
        h, w, c = input_shape
        x, y, names = make_synthetic(data["num_samples"], data["num_classes"], h, w, c, data["noise"], seed)
    elif source == "image_folder":
        from cnncli.data.image_folder import load_image_folder

        if len(input_shape) != 3:
            raise DataError(f"image_folder needs input_shape [H, W, C]; got {list(input_shape)}")
        loaded = load_image_folder(data["path"], tuple(input_shape), on_bad_image=data["on_bad_image"],
                                   cache_dir=cache_dir if data["cache"] else None, max_pixels=max_pixels)
        x, y, names = loaded.x, loaded.y, loaded.class_names
        info.update(skipped=loaded.skipped, cached=loaded.cached)
        animated += loaded.animated
        if data["test_path"]:
            test = load_image_folder(data["test_path"], tuple(input_shape), on_bad_image=data["on_bad_image"],
                                     cache_dir=cache_dir if data["cache"] else None, max_pixels=max_pixels)
            if test.class_names != names:
                raise DataError(f"{data['test_path']}: classes {test.class_names} differ from the training "
                                f"folder's {names}")
            x_test, y_test = test.x, test.y
            info["skipped"] = loaded.skipped + test.skipped
            animated += test.animated
    elif source == "npz":
        from cnncli.data.npz import load_npz

        x, y = load_npz(data["path"], data["x_key"], data["y_key"])
        if data["test_path"]:
            x_test, y_test = load_npz(data["test_path"], data["x_key"], data["y_key"])
        names = None
    elif source == "caltech101":
        from cnncli.data import datasets
        from cnncli.data.image_folder import load_image_folder

        root, checked = datasets.prepare(source, on_fetch=on_fetch)
        loaded = load_image_folder(root, tuple(input_shape), on_bad_image=data["on_bad_image"],
                                   cache_dir=cache_dir if data["cache"] else None, classes=data["classes"],
                                   max_pixels=max_pixels)
        x, y, names = loaded.x, loaded.y, loaded.class_names
        info.update(skipped=loaded.skipped, cached=loaded.cached, dataset=_dataset_record(source, checked))
        animated += loaded.animated
    elif source == "cifar10":
        from cnncli.data import datasets
        from cnncli.data.cifar import load_cifar10

        root, checked = datasets.prepare(source, on_fetch=on_fetch)
        x, y, x_test, y_test, names = load_cifar10(root, use_test=data["use_test"])
        info["dataset"] = _dataset_record(source, checked)
    elif source == "csv":
        from cnncli.data.csv_images import load_csv_images

        if len(input_shape) != 3:
            raise DataError(f"csv needs input_shape [H, W, C]; got {list(input_shape)}")
        read = lambda path: load_csv_images(path, tuple(input_shape), on_bad_image=data["on_bad_image"],  # noqa: E731
                                            cache_dir=cache_dir if data["cache"] else None, max_pixels=max_pixels)
        loaded = read(data["path"])
        x, y, names = loaded.x, loaded.y, loaded.class_names
        info.update(skipped=loaded.skipped, cached=loaded.cached)
        animated += loaded.animated
        if data["test_path"]:
            test = read(data["test_path"])
            if test.class_names != names:
                raise DataError(f"{data['test_path']}: labels {test.class_names} differ from the training CSV's "
                                f"{names}")
            x_test, y_test = test.x, test.y
            info["skipped"] = loaded.skipped + test.skipped
            animated += test.animated
    elif source in ("mnist", "fashion_mnist"):
        from cnncli.data import datasets
        from cnncli.data.idx import load_idx_pair

        root, checked = datasets.prepare(source, on_fetch=on_fetch)
        x, y = load_idx_pair(root, "train")
        if data["use_test"]:
            x_test, y_test = load_idx_pair(root, "t10k")
        names = None
        info["dataset"] = _dataset_record(source, checked)
    else:  # idx
        from cnncli.data.idx import load_idx_pair

        x, y = load_idx_pair(data["path"], data["train_prefix"])
        if data["test_path"]:
            x_test, y_test = load_idx_pair(data["test_path"], data["test_prefix"])
        elif data["use_test"] and Path(data["path"]).is_dir():
            try:
                x_test, y_test = load_idx_pair(data["path"], data["test_prefix"])
            except DataError:
                x_test = y_test = None
        names = None
    if animated:
        info["animated"] = animated
    if names is None:
        top = int(max(y.max(), y_test.max() if y_test is not None else 0))
        names = [str(i) for i in range(top + 1)]
    return x, y, x_test, y_test, names, info


def _dataset_record(name: str, checked: dict) -> dict:
    """What a run's data.json says of a dataset by name: where it was read, how it was
    checked, its licence and how to cite it."""
    from cnncli.data.datasets import get

    dataset = get(name)
    return {"name": name, "read_from": checked.get("root"), "check": checked.get("check"),
            "license": dataset.license, "citation": dataset.citation}


def check_images(x: np.ndarray, input_shape: tuple[int, ...], where: str) -> np.ndarray:
    """Match channels, then insist on the model's (H, W, C)."""
    if len(input_shape) == 3:
        x = convert_channels(x, input_shape[2], where)
    elif len(input_shape) == 1:
        x = x.reshape(len(x), -1)
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(f"{where}: images have shape {tuple(x.shape[1:])}; the model's input_shape is "
                        f"{list(input_shape)}")
    return x


def check_labels(y: np.ndarray, num_classes: int, outputs: int, where: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= max(num_classes, 1)):
        raise DataError(f"{where}: label {int(y.max() if y.max() >= num_classes else y.min())} is out of range "
                        f"for {num_classes} classes")
    if outputs == 1:
        if num_classes > 2:
            raise DataError(f"{where}: {num_classes} classes, but the network has 1 output; use a dense layer "
                            f"with {num_classes} units and softmax")
    elif num_classes > outputs:
        raise DataError(f"{where}: {num_classes} classes, but the network has {outputs} outputs")


#: What a run without recorded statistics used: integer images divided by 255.
DEFAULT_NORMALIZATION = {"mode": "scale", "scale": 255.0}


def normalization_of(info: dict) -> dict:
    """The normalization a run recorded in its ``data.json`` (or the default)."""
    return info.get("normalization") or dict(DEFAULT_NORMALIZATION)


def fit_normalization(x_train: np.ndarray, mode: str) -> dict:
    """The transform's parameters, from the training split only."""
    scale = 255.0 if x_train.dtype.kind in "ui" and mode != "none" else 1.0
    norm: dict = {"mode": mode, "scale": scale}
    if mode == "standardize":
        axes = tuple(range(x_train.ndim - 1))
        scaled = x_train.astype(np.float64) / scale
        norm["mean"] = scaled.mean(axis=axes).tolist()
        norm["std"] = [max(s, 1e-8) for s in scaled.std(axis=axes).tolist()]
    return norm


def apply_normalization(x: np.ndarray, norm: dict, dtype) -> np.ndarray:
    """Apply a :func:`fit_normalization` transform, returning ``dtype``."""
    out = x.astype(dtype)
    if norm.get("scale", 1.0) != 1.0:
        out /= norm["scale"]
    if norm.get("mode") == "standardize":
        out -= np.asarray(norm["mean"], dtype=out.dtype)
        out /= np.asarray(norm["std"], dtype=out.dtype)
    return out


def class_weights(spec, labels: np.ndarray, class_names: list[str]) -> np.ndarray | None:
    """Weights per class index from ``loss.class_weight``: ``balanced`` gives
    n / (classes x n_c) over ``labels`` (the training split; scikit-learn's rule), a
    mapping names classes (or their indices) and leaves the others at 1."""
    if spec is None:
        return None
    k = len(class_names)
    if spec == "balanced":
        counts = np.bincount(labels, minlength=k)[:k]
        return np.where(counts > 0, len(labels) / (k * np.maximum(counts, 1)), 1.0)
    weights = np.ones(k)
    for key, weight in spec.items():
        if isinstance(key, str) and key in class_names:
            weights[class_names.index(key)] = weight
        elif isinstance(key, int) and 0 <= key < k:
            weights[key] = weight
        else:
            from cnncli.nn.validate import did_you_mean

            raise DataError(f"loss.class_weight: no class {key!r}{did_you_mean(str(key), class_names)}; the classes are "
                            f"{', '.join(class_names)} (or their indices 0..{k - 1})")
    return weights


def undo_normalization(x: np.ndarray, norm: dict) -> np.ndarray:
    """Pixels in [0, 1] (for pictures) from normalized ones: the inverse of
    :func:`apply_normalization` without the division by 255."""
    out = x.astype(np.float64)
    if norm.get("mode") == "standardize":
        out = out * np.asarray(norm["std"]) + np.asarray(norm["mean"])
    elif norm.get("scale", 1.0) == 1.0 and out.max(initial=0) > 1:  # stored as they were (normalize: none)
        out = out / 255.0
    return out


def load_dataset(values: dict, cache_dir: str | Path | None = None, outputs: int | None = None,
                 on_fetch=None) -> Dataset:
    """The dataset of a resolved config (see the module docstring)."""
    data, seed = values["data"], values["seed"]
    input_shape = tuple(values["model"]["input_shape"])
    dtype = np.float32 if values["train"]["dtype"] == "float32" else np.float64
    where = data.get("path") or ("synthetic data" if data["source"] == "synthetic" else data["source"])
    x, y, x_test, y_test, names, info = load_raw(data, input_shape, seed, cache_dir, on_fetch)
    if data["limit"] is not None and data["limit"] < len(y):
        keep_fraction = data["limit"] / len(y)
        _, keep = stratified_split(y, keep_fraction, seeded_rng(seed, 1))
        x, y = x[keep], y[keep]
    x = check_images(x, input_shape, where)
    if x_test is not None:
        x_test = check_images(x_test, input_shape, data["test_path"] or where)
    num_classes = len(names)
    if outputs is not None:
        check_labels(y, num_classes, outputs, where)
        if y_test is not None:
            check_labels(y_test, num_classes, outputs, data["test_path"] or where)
    if len(np.unique(y)) < 2:
        raise DataError(f"{where}: the training data has a single class; a classifier needs at least 2")
    split = values["train"]["validation_split"]
    val = None
    if split > 0:
        train_idx, val_idx = stratified_split(y, split, seeded_rng(seed, 2))
        if len(val_idx) == 0 or len(train_idx) == 0:
            raise DataError(f"{where}: {len(y)} examples are too few for validation_split {split}")
        x_val, y_val = x[val_idx], y[val_idx]
        x, y = x[train_idx], y[train_idx]
    norm = fit_normalization(x, data["normalize"])
    train = Split(apply_normalization(x, norm, dtype), y)
    if split > 0:
        val = Split(apply_normalization(x_val, norm, dtype), y_val)
    test = Split(apply_normalization(x_test, norm, dtype), y_test) if x_test is not None else None
    if val is None and test is not None:
        val = test  # validation_split 0 with a test set: validate on the test set each epoch
    info.update(train=len(train), validation=len(val) if val else 0, test=len(test) if test else 0,
                classes=names)
    return Dataset(train, val, test, names, norm, info)
