"""Config validation through the CLI: every bad config or bad data is one line, exit 2, no run.

Each case of the table is a config file (and, where the case is about data, the data
files) written into ``tmp_path``, trained with ``cnncli train FILE --runs-dir RUNS``.
A case passes when the command exits with code 2, prints exactly one line to stderr,
that line starts with ``error: <the file>: `` and holds the expected key path and
phrases, nothing printed has a traceback, and no run folder was created: everything
is checked before anything runs.

The positive tests pin what validation resolves: overrides beat the file and are
parsed as YAML, every default is filled in, a random seed is recorded, the loss is
inferred from the output activation, and a run name cannot leave the runs folder.
"""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import cnncli
from cnncli.cli import app
from cnncli.config import (DATA_BY_SOURCE, DATA_COMMON, EARLY_STOPPING_DEFAULTS, EVAL_DEFAULTS, SECTIONS,
                           TRAIN_DEFAULTS)
from cnncli.errors import ConfigError
from tests.helpers import TINY

REPO = Path(__file__).resolve().parents[1]

BASE = {**TINY, "train": {**TINY["train"], "epochs": 1}}


def base() -> dict:
    return copy.deepcopy(BASE)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def run_folders(runs_dir: Path) -> list[Path]:
    """Everything under the runs folder except the hidden decode cache."""
    if not runs_dir.exists():
        return []
    return [p for p in runs_dir.iterdir() if not p.name.startswith(".")]


# ------------------------------------------------------------------ data fixtures
def write_image(path: Path, size=(10, 12), color=(200, 30, 30), mode="RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode != "L" else color[0]).save(path)


def image_folder(root: Path, classes=("cats", "dogs"), per_class=4) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"img_{i}.png", color=(40 * i, 100 * c, 90))
    return root


def image_data(path: Path, **extra) -> dict:
    return {"source": "image_folder", "path": str(path), **extra}


def npz_file(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x, y=y)
    return path


# ------------------------------------------------------------------- the table
@dataclass
class Case:
    id: str
    build: Callable[[Path], object]  # tmp_path -> config dict, or YAML text
    phrases: tuple[str, ...]
    sets: tuple[str, ...] = ()
    extra: list = field(default_factory=list)


def edit(fn):
    """A case builder that applies ``fn`` to a copy of BASE."""

    def build(tmp: Path):
        cfg = base()
        fn(cfg, tmp)
        return cfg

    return build


def layer(i, **kv):
    return edit(lambda c, t: c["model"]["layers"][i].update(kv))


def train_key(**kv):
    return edit(lambda c, t: c["train"].update(kv))


def corrupt_image_folder(tmp: Path):
    root = image_folder(tmp / "images")
    (root / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg" * 20)
    cfg = base()
    cfg["data"] = image_data(root, on_bad_image="error")
    return cfg


def truncated_npz(tmp: Path):
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((40, 8, 8, 3), np.uint8), y=np.arange(40) % 2)
    (tmp / "cut.npz").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    cfg = base()
    cfg["data"] = {"source": "npz", "path": str(tmp / "cut.npz")}
    return cfg


def npz_labels(labels):
    def build(tmp: Path):
        y = np.asarray(labels * (40 // len(labels)))
        cfg = base()
        cfg["data"] = {"source": "npz", "path": str(npz_file(tmp / "d.npz", np.zeros((len(y), 8, 8, 3), np.uint8), y))}
        return cfg

    return build


def pickled_npz(tmp: Path):
    objs = np.empty(40, dtype=object)
    objs[:] = [{"a": i} for i in range(40)]
    np.savez(tmp / "obj.npz", x=objs, y=np.arange(40) % 2)
    cfg = base()
    cfg["data"] = {"source": "npz", "path": str(tmp / "obj.npz")}
    return cfg


def idx_mismatch(tmp: Path):
    folder = tmp / "idx"
    folder.mkdir()
    header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (40, 8, 8))
    (folder / "train-images-idx3-ubyte").write_bytes(header + bytes(40 * 8 * 8 - 5))  # 5 bytes short
    (folder / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 0x08, 1]) + (40).to_bytes(4, "big") + bytes(40))
    cfg = base()
    cfg["model"]["input_shape"] = [8, 8, 1]
    cfg["data"] = {"source": "idx", "path": str(folder)}
    return cfg


YAML_SYNTAX_ERROR = """\
name: broken
seed: 0
data: {source: synthetic}
optimizer:
  name: adam
  lr: 0.01: 3
"""

CASES = [
    # unknown keys and names: the allowed ones and the closest
    Case("typo-top-level-key", edit(lambda c, t: c.__setitem__("optimiser", c.pop("optimizer"))),
         ("optimiser: unknown key", "did you mean 'optimizer'?", "allowed keys:", "train")),
    Case("typo-layer-key", edit(lambda c, t: c["model"]["layers"][0].__setitem__(
        "filtres", c["model"]["layers"][0].pop("filters"))),
         ("model.layers[0].filtres", "did you mean 'filters'?", "kernel_size")),
    Case("unknown-layer-type", layer(0, type="conv3d"),
         ("model.layers[0].type", "unknown layer 'conv3d'", "did you mean 'conv2d'?", "max_pool2d")),
    Case("unknown-loss", edit(lambda c, t: c.__setitem__("loss", "categorical_crossentropyy")),
         ("loss", "unknown loss 'categorical_crossentropyy'", "did you mean 'categorical_crossentropy'?",
          "binary_crossentropy")),
    Case("unknown-loss-in-mapping", edit(lambda c, t: c.__setitem__("loss", {"name": "hinge"})),
         ("loss.name", "unknown loss 'hinge'", "mse")),
    Case("unknown-optimizer", edit(lambda c, t: c["optimizer"].__setitem__("name", "adamm")),
         ("optimizer.name", "unknown optimizer 'adamm'", "did you mean 'adam'?", "rmsprop")),
    Case("unknown-optimizer-key", edit(lambda c, t: c["optimizer"].__setitem__("learning_rate", 0.1)),
         ("optimizer.learning_rate", "unknown key", "allowed keys:", "lr")),
    Case("unknown-activation", layer(0, activation="rellu"),
         ("model.layers[0].activation", "unknown activation 'rellu'", "did you mean 'relu'?", "tanh")),
    Case("unknown-data-source", edit(lambda c, t: c["data"].__setitem__("source", "imagefolder")),
         ("data.source", "did you mean 'image_folder'?", "npz")),
    Case("key-of-another-data-source", edit(lambda c, t: c["data"].__setitem__("path", "x")),
         ("data.path", "unknown key", "num_samples")),
    Case("typo-train-key", train_key(epoch=3), ("train.epoch", "did you mean 'epochs'?")),
    # sizes
    Case("zero-filters", layer(0, filters=0), ("model.layers[0].filters: expected a positive int; got 0",)),
    Case("zero-kernel-size", layer(0, kernel_size=0),
         ("model.layers[0].kernel_size: expected a positive int or [int, int]; got 0",)),
    Case("negative-units", layer(3, units=-1), ("model.layers[3].units", "got -1")),
    Case("zero-pool-size", layer(1, pool_size=0), ("model.layers[1].pool_size", "got 0")),
    Case("bad-input-shape", edit(lambda c, t: c["model"].__setitem__("input_shape", [8, 8])),
         ("model.input_shape: expected [height, width, channels] of positive ints; got [8, 8]",)),
    # shapes: the layer index and both sizes
    Case("kernel-larger-than-input", edit(lambda c, t: c["model"]["layers"].insert(
        2, {"type": "conv2d", "filters": 4, "kernel_size": 5})),
         ("model.layers[2]", "5x5", "4x4")),
    Case("dense-after-conv-without-flatten", edit(lambda c, t: c["model"].__setitem__(
        "layers", [BASE["model"]["layers"][0], {"type": "dense", "units": 2, "activation": "softmax"}])),
         ("model.layers[1]", "(8, 8, 4)", "flatten")),
    # types and ranges
    Case("epochs-string", train_key(epochs="ten"), ("train.epochs: expected a positive int; got 'ten'",)),
    Case("lr-string", edit(lambda c, t: c["optimizer"].__setitem__("lr", "fast")), ("optimizer.lr", "'fast'")),
    Case("batch-size-float", train_key(batch_size=1.5), ("train.batch_size: expected a positive int; got 1.5",)),
    Case("shuffle-string", train_key(shuffle="yes"), ("train.shuffle: expected true or false; got 'yes'",)),
    Case("validation-split-too-big", train_key(validation_split=1.5),
         ("train.validation_split: expected a number in [0, 1); got 1.5",)),
    Case("negative-seed", edit(lambda c, t: c.__setitem__("seed", -1)), ("seed:", "got -1")),
    Case("early-stopping-monitor", train_key(early_stopping={"monitor": "val_acc"}),
         ("train.early_stopping.monitor", "'val_acc'")),
    Case("loss-reduction", edit(lambda c, t: c.__setitem__("loss", {"name": "mse", "reduction": "avg"})),
         ("loss.reduction", "'avg'")),
    # the file itself
    Case("empty-yaml-file", lambda t: "", ("empty",)),
    Case("yaml-comments-only", lambda t: "# nothing here\n", ("empty",)),
    Case("yaml-syntax-error", lambda t: YAML_SYNTAX_ERROR, ("YAML syntax error", "line 6")),
    Case("yaml-not-a-mapping", lambda t: "- a\n- b\n", ("a mapping with the sections",)),
    Case("missing-model-section", edit(lambda c, t: c.pop("model")), ("model: missing", "required")),
    Case("empty-layers", edit(lambda c, t: c["model"].__setitem__("layers", [])), ("model.layers",)),
    # data that is not there or not right
    Case("missing-data-folder", edit(lambda c, t: c.__setitem__("data", image_data(t / "no" / "such" / "folder"))),
         ("data.path", "does not exist")),
    Case("data-path-is-a-file", edit(lambda c, t: (t / "f.txt").write_text("x") and c.__setitem__(
        "data", image_data(t / "f.txt"))), ("data.path", "not a folder")),
    Case("image-folder-empty", edit(lambda c, t: (t / "empty").mkdir() or c.__setitem__(
        "data", image_data(t / "empty"))), ("empty", "no class folders")),
    Case("image-folder-one-class", edit(lambda c, t: c.__setitem__(
        "data", image_data(image_folder(t / "one", classes=("cats",))))), ("1 class folder", "cats")),
    Case("image-folder-class-without-images", edit(lambda c, t: (
        image_folder(t / "imgs"), (t / "imgs" / "zebras").mkdir(), c.__setitem__("data", image_data(t / "imgs")))),
         ("zebras", "no image files")),
    Case("corrupt-image", corrupt_image_folder, ("broken.jpg", "not a readable image", "on_bad_image")),
    Case("truncated-npz", truncated_npz, ("cut.npz", "cannot be read")),
    Case("npz-pickled-objects", pickled_npz, ("obj.npz",)),
    Case("npz-labels-beyond-outputs", npz_labels([0, 1, 2, 3, 4]), ("d.npz", "5 classes", "2 outputs")),
    Case("npz-negative-label", npz_labels([0, 1, -1, 1]), ("d.npz", "label -1", "out of range")),
    Case("npz-wrong-image-size", edit(lambda c, t: c.__setitem__("data", {"source": "npz", "path": str(
        npz_file(t / "d.npz", np.zeros((20, 9, 9, 3), np.uint8), np.arange(20) % 2))})),
         ("d.npz", "(9, 9, 3)", "[8, 8, 3]")),
    Case("idx-size-mismatch", idx_mismatch, ("train-images-idx3-ubyte", "header")),
    Case("synthetic-classes-beyond-outputs", edit(lambda c, t: c["data"].__setitem__("num_classes", 3)),
         ("3 classes", "2 outputs")),
    Case("sigmoid-output-with-three-classes", edit(lambda c, t: (
        c["data"].__setitem__("num_classes", 3), c["model"]["layers"][3].update(units=1, activation="sigmoid"))),
         ("3 classes", "1 output")),
    # --set
    Case("set-without-equals", lambda t: base(), ("--set", "key=value", "'optimizer.lr'"), sets=("optimizer.lr",)),
    Case("set-unknown-key", lambda t: base(), ("optimizer.lrr", "did you mean 'lr'?"), sets=("optimizer.lrr=0.1",)),
    Case("set-unknown-section", lambda t: base(), ("trian", "did you mean 'train'?"), sets=("trian.epochs=3",)),
    Case("set-bad-type", lambda t: base(), ("train.epochs", "'many'"), sets=("train.epochs=many",)),
    Case("set-no-such-layer", lambda t: base(), ("model.layers[9]", "no such list item"),
         sets=("model.layers[9].filters=3",)),
    Case("set-invalid-yaml", lambda t: base(), ("optimizer.lr", "not valid YAML"), sets=("optimizer.lr=[0.1",)),
    Case("set-bad-key-path", lambda t: base(), ("dotted key",), sets=("optimizer..lr=0.1",)),
]

assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config_is_one_line_exit_2_and_no_run(case: Case, tmp_path):
    made = case.build(tmp_path)
    cfg = tmp_path / "experiment.yaml"
    cfg.write_text(made if isinstance(made, str) else yaml.safe_dump(made, sort_keys=False))
    runs = tmp_path / "runs"
    args = ["train", cfg, "--runs-dir", runs]
    for s in case.sets:
        args += ["--set", s]
    res = invoke(*args)

    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert line.startswith(f"error: {cfg}: "), line
    for phrase in case.phrases:
        assert phrase in line, f"{phrase!r} not in {line!r}"
    assert "Traceback" not in res.stderr + res.stdout
    assert res.stdout.strip() == "", res.stdout  # nothing ran, nothing was printed
    assert run_folders(runs) == []


def test_the_table_covers_every_kind_the_issue_names():
    ids = {c.id for c in CASES}
    for needed in ("typo-top-level-key", "typo-layer-key", "unknown-layer-type", "unknown-loss", "unknown-optimizer",
                   "unknown-activation", "zero-filters", "zero-kernel-size", "negative-units", "zero-pool-size",
                   "kernel-larger-than-input", "dense-after-conv-without-flatten", "epochs-string", "lr-string",
                   "batch-size-float", "shuffle-string", "validation-split-too-big", "empty-yaml-file",
                   "yaml-syntax-error", "missing-model-section", "missing-data-folder", "image-folder-empty",
                   "image-folder-one-class", "corrupt-image", "truncated-npz", "npz-labels-beyond-outputs",
                   "set-without-equals", "set-unknown-key"):
        assert needed in ids


def test_nonexistent_config_file(tmp_path):
    res = invoke("train", tmp_path / "nope.yaml", "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 2
    assert res.stderr.splitlines() == [f"error: {tmp_path / 'nope.yaml'}: no such config file"]
    assert run_folders(tmp_path / "runs") == []


def test_errors_from_the_python_api_name_the_key_path_too():
    cfg = base()
    cfg["model"]["layers"][0]["kernel_size"] = 0
    with pytest.raises(ConfigError) as info:
        cnncli.load_config(cfg)
    assert str(info.value) == "model.layers[0].kernel_size: expected a positive int or [int, int]; got 0"
    assert info.value.path == "model.layers[0].kernel_size"


def test_errors_from_a_file_name_the_file(tmp_path):
    cfg = base()
    cfg["train"]["epochs"] = 0
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"e\.yaml: train\.epochs: expected a positive int; got 0$"):
        cnncli.load_config(path)


# -------------------------------------------------------------------- overrides
def test_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base()))
    cfg = cnncli.load_config(path, overrides=["optimizer.lr=0.01", "model.layers[0].filters=4",
                                              "optimizer.lr=0.05", "model.layers.0.kernel_size=[3, 1]"])
    assert cfg["optimizer"]["lr"] == 0.05  # the last one wins
    assert cfg["model"]["layers"][0]["filters"] == 4
    assert cfg["model"]["layers"][0]["kernel_size"] in ([3, 1], (3, 1))
    assert cfg.overrides[-1] == "model.layers.0.kernel_size=[3, 1]"
    net, _, _ = cnncli.build(cfg)
    assert net.layers[0].params["kernel"].shape == (3, 1, 3, 4)


def test_override_values_are_parsed_as_yaml():
    cfg = cnncli.load_config(base(), overrides=[
        "train.shuffle=false", "train.epochs=3", "optimizer.lr=1e-3", "name=my run",
        "train.early_stopping={patience: 2}", "model.input_shape=[8, 8, 1]", "seed=null"])
    t = cfg["train"]
    assert t["shuffle"] is False
    assert t["epochs"] == 3 and isinstance(t["epochs"], int)
    assert cfg["optimizer"]["lr"] == pytest.approx(1e-3) and isinstance(cfg["optimizer"]["lr"], float)
    assert t["early_stopping"] == {**EARLY_STOPPING_DEFAULTS, "patience": 2}
    assert cfg["model"]["input_shape"] == [8, 8, 1]
    assert cfg["name"] == "my-run"
    assert isinstance(cfg["seed"], int)


def test_floats_without_a_dot_are_numbers_in_files_too(tmp_path):
    # YAML 1.1 reads ``1e-3`` as a string; a config means the number.
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base()).replace("lr: 0.01", "lr: 1e-3"))
    assert "lr: 1e-3" in path.read_text()
    assert cnncli.load_config(path)["optimizer"]["lr"] == pytest.approx(1e-3)


def test_overrides_reach_the_run_folder_through_the_cli(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base()))
    runs = tmp_path / "runs"
    res = invoke("train", path, "--runs-dir", runs, "-q", "--set", "optimizer.lr=0.01", "-s",
                 "model.layers[0].filters=5", "--set", "train.epochs=1")
    assert res.exit_code == 0, res.stderr
    (run,) = run_folders(runs)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["optimizer"]["lr"] == 0.01
    assert saved["model"]["layers"][0]["filters"] == 5
    summary = (run / "summary.md").read_text()
    assert "[(3x3x3)+1]x5 = 140" in summary


# ---------------------------------------------------------------- resolved values
MINIMAL = {"model": {"input_shape": [8, 8, 3], "layers": [{"type": "flatten"},
                                                          {"type": "dense", "units": 3, "activation": "softmax"}]}}


def test_resolved_config_has_every_default():
    cfg = cnncli.load_config(copy.deepcopy(MINIMAL))
    v = cfg.values
    assert set(v) == set(SECTIONS)
    assert v["name"] == "run"
    from cnncli.data.augment import Augmenter

    assert v["data"] == {**DATA_COMMON, **DATA_BY_SOURCE["synthetic"], "augment": Augmenter.from_config(
        None, v["model"]["input_shape"]).config()}
    assert not any(v["data"]["augment"].values()) or all(not x or x == {"padding": 0} or x == {"size": 0}
                                                         for x in v["data"]["augment"].values())
    assert set(v["train"]) >= set(TRAIN_DEFAULTS)
    for k, default in TRAIN_DEFAULTS.items():
        assert v["train"][k] == default, k
    assert v["eval"] == EVAL_DEFAULTS
    assert v["loss"]["name"] == "categorical_crossentropy" and v["loss"]["reduction"] == "mean"
    assert v["optimizer"]["name"] == "adam" and v["optimizer"]["lr"] > 0
    assert {"beta1", "beta2", "epsilon"} <= set(v["optimizer"])
    conv = cnncli.load_config({"model": {"input_shape": [8, 8, 3], "layers": [
        {"type": "conv2d", "filters": 2, "kernel_size": 3}, {"type": "flatten"},
        {"type": "dense", "units": 2, "activation": "softmax"}]}})
    c0 = conv["model"]["layers"][0]
    for key in ("stride", "padding", "dilation", "use_bias", "activation", "kernel_initializer", "bias_initializer"):
        assert key in c0, key
    # The resolved form is a fixed point: loading it again changes nothing.
    again = cnncli.load_config(yaml.safe_load(cfg.to_yaml()))
    assert again.values == v


def test_early_stopping_true_gets_its_defaults():
    cfg = cnncli.load_config(copy.deepcopy(MINIMAL), overrides=["train.early_stopping=true"])
    assert cfg["train"]["early_stopping"] == EARLY_STOPPING_DEFAULTS


def test_a_null_seed_is_drawn_and_recorded(tmp_path):
    cfg = base()
    cfg["seed"] = None
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runs = tmp_path / "runs"
    res = invoke("train", path, "--runs-dir", runs, "-q")
    assert res.exit_code == 0, res.stderr
    (run,) = run_folders(runs)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert isinstance(saved["seed"], int) and saved["seed"] >= 0
    # The recorded config is complete and loads to the same values (same seed).
    assert cnncli.load_config(run / "config.yaml").values == saved


def test_load_config_takes_a_dict_and_does_not_modify_it():
    raw = base()
    before = copy.deepcopy(raw)
    cfg = cnncli.load_config(raw, overrides=["train.epochs=4"])
    assert raw == before
    assert cfg["train"]["epochs"] == 4
    assert cfg.source is None
    assert isinstance(cfg, cnncli.Config)


def test_build_unpacks_to_network_loss_optimizer():
    from cnncli.nn.losses import Loss
    from cnncli.nn.network import Network
    from cnncli.nn.optimizers import Optimizer

    network, loss, optimizer = cnncli.build(cnncli.load_config(base()))
    assert isinstance(network, Network) and isinstance(loss, Loss) and isinstance(optimizer, Optimizer)
    assert network.input_shape == (8, 8, 3) and network.output_shape == (2,)
    assert network.parameter_count() == (3 * 3 * 3 + 1) * 4 + (4 * 4 * 4 + 1) * 2
    # A dict or a path works too, and the same seed gives the same weights.
    again, _, _ = cnncli.build(base())
    for (k, a), (k2, b) in zip(network.parameters().items(), again.parameters().items()):
        assert k == k2 and np.array_equal(a, b)


@pytest.mark.parametrize("last, expected", [
    ({"type": "dense", "units": 1, "activation": "sigmoid"}, "binary_crossentropy"),
    ({"type": "dense", "units": 3, "activation": "softmax"}, "categorical_crossentropy"),
    ({"type": "softmax"}, "categorical_crossentropy"),
    ({"type": "dense", "units": 3}, "mse"),
])
def test_loss_is_inferred_from_the_output_activation(last, expected):
    layers = [{"type": "flatten"}, last]
    if last["type"] == "softmax":
        layers = [{"type": "flatten"}, {"type": "dense", "units": 3}, last]
    cfg = cnncli.load_config({"model": {"input_shape": [4, 4, 1], "layers": layers}})
    assert cfg["loss"]["name"] == expected
    _, loss, _ = cnncli.build(cfg)
    assert loss.config()["name"] == expected


def test_an_explicit_loss_is_kept():
    cfg = base()
    cfg["loss"] = "mse"
    assert cnncli.load_config(cfg)["loss"]["name"] == "mse"


# --------------------------------------------------------------------- run names
@pytest.mark.parametrize("name", ["../../evil", "/etc/evil", "..", "a/../../b", " "])
def test_run_names_stay_inside_the_runs_folder(tmp_path, name):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base()))
    runs = tmp_path / "deep" / "runs"
    res = invoke("train", path, "--runs-dir", runs, "--name", name, "-q")
    assert res.exit_code == 0, res.stderr
    (run,) = run_folders(runs)
    assert run.resolve().parent == runs.resolve()
    assert "/" not in run.name and not run.name.startswith(".")
    # Nothing appeared beside the runs folder or above it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "deep"]
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["runs"]


def test_config_name_is_sanitized_too():
    cfg = base()
    cfg["name"] = "../../my run!"
    assert cnncli.load_config(cfg)["name"] == "my-run"


def test_name_defaults_to_the_file_stem(tmp_path):
    cfg = base()
    del cfg["name"]
    path = tmp_path / "My Experiment.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cnncli.load_config(path)["name"] == "My-Experiment"


def test_data_path_check_can_be_turned_off_for_summaries():
    cfg = base()
    cfg["data"] = {"source": "image_folder", "path": "/no/such/folder"}
    with pytest.raises(ConfigError, match="does not exist"):
        cnncli.load_config(cfg)
    assert cnncli.load_config(cfg, check_paths=False)["data"]["path"] == "/no/such/folder"


def test_shipped_configs_validate():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = cnncli.load_config(path, check_paths=False)
        assert cfg.source == str(path)
        json.dumps(cfg.values)  # plain data


def test_a_loaded_config_takes_more_overrides_from_the_document_not_its_resolved_values():
    """load_config(cfg, more) re-resolves cfg's document with all the overrides: switching
    the optimizer does not carry the old one's resolved keys (Adam's beta1 was refused
    for sgd), and the earlier overrides stay."""
    cfg = cnncli.load_config(str(REPO / "configs" / "quickstart.yaml"), ["train.epochs=2"], check_memory=False)
    again = cnncli.load_config(cfg, ["optimizer.name=sgd", "optimizer.lr=0.1"], check_memory=False)
    assert again["optimizer"] == {**again["optimizer"], "name": "sgd", "lr": 0.1}
    assert "beta1" not in again["optimizer"] and again["train"]["epochs"] == 2
    assert again.overrides == ["train.epochs=2", "optimizer.name=sgd", "optimizer.lr=0.1"]
    assert cnncli.load_config(again)["optimizer"] == again["optimizer"]  # stable when given nothing more
