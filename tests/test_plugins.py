"""Plugins: components of a user's own, named by a config, first-class in every command.

The tutorial (docs/EXTENDING.md) is run exactly as printed; the run folder's copy of a
plugin is what eval, predict and resume use; every mistake in a plugin is one line
naming the config and the plugin; workers of a sweep get the plugin's source.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import cnncli
from cnncli import plugins, sweep as sweeps
from cnncli.config import load_config
from cnncli.errors import ConfigError, PluginError
from cnncli.nn import ACTIVATIONS, LAYERS, Activation, Network, RegistrationError, register
from tests.helpers import assert_ok, assert_user_error, invoke

REPO = Path(__file__).resolve().parents[1]
EXTENDING = REPO / "docs" / "EXTENDING.md"


@pytest.fixture(autouse=True)
def registries_as_they_were():
    """Each test's plugins are forgotten after it, as in a new process: two tests may
    register the same name from different files (which one process refuses)."""
    from cnncli.nn import REGISTRIES

    saved = {kind: dict(registry._entries) for kind, registry in REGISTRIES.items()}
    yield
    for kind, registry in REGISTRIES.items():
        registry._entries.clear()
        registry._entries.update(saved[kind])


def doc_blocks(path: Path = EXTENDING) -> list[tuple[str, str, str]]:
    """(language, file name or '', text) of every fenced code block, in order."""
    return [(lang, name.strip(), body) for lang, name, body in
            re.findall(r"^```(\w*)([^\n]*)\n(.*?)^```", path.read_text(), re.S | re.M)]


def doc_files() -> dict[str, str]:
    """The files the tutorial asks the reader to save (```python blocks.py)."""
    return {name: body for _, name, body in doc_blocks() if name}


def write_tutorial(folder: Path) -> Path:
    for name, body in doc_files().items():
        (folder / name).write_text(body)
    return folder / "demo.yaml"


def run_bash(script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


# ------------------------------------------------------------------ 1. the tutorial
@pytest.mark.slow
def test_the_tutorial_runs_exactly_as_printed(tmp_path):
    """Every file block is saved as the reader would, every bash block runs as printed."""
    files = doc_files()
    assert set(files) == {"blocks.py", "demo.yaml", "circle.py"}
    write_tutorial(tmp_path)
    outputs = []
    for lang, name, body in doc_blocks():
        if lang != "bash":
            continue
        done = run_bash(body, tmp_path)
        assert done.returncode == 0, f"{body}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stdout + done.stderr
        outputs.append(done.stdout)
    text = "\n".join(outputs)
    best = re.search(r"best epoch \d+ \(val_loss\): val_loss [\d.]+, val_accuracy ([\d.]+)", text)
    assert best and float(best.group(1)) >= 0.85, text  # the tutorial says "about 0.95"
    assert "channel_scale" in text and "conv2d (mish)" in text  # summary
    assert "a = z tanh(ln(1 + e^z))" in text  # explain: the plugin's own formula
    assert "all gradients agree to better than 1e-06" in text  # gradcheck
    assert "circle.png" in text  # predict
    assert re.search(r"trial-001 .*completed", text)  # the 2-job sweep
    run = next(p for p in (tmp_path / "runs").iterdir() if p.name.endswith("plugin-demo"))
    assert (run / "plugins" / "blocks.py").read_text() == files["blocks.py"]
    assert (run / "visualize" / "kernels.png").is_file()
    sweep = next((tmp_path / "runs" / "sweeps").iterdir())
    assert all((sweep / f"trial-00{i}" / "plugins" / "blocks.py").is_file() for i in (0, 1))


def test_the_tutorial_shows_the_run_config_as_written(tmp_path, monkeypatch):
    """Section 4's excerpt of a run's config.yaml is what train writes (but the hash)."""
    monkeypatch.chdir(tmp_path)
    config = write_tutorial(tmp_path)
    run = cnncli.train(str(config), overrides=["train.epochs=1", "data.num_samples=60"], runs_dir="runs")
    written = yaml.safe_load((run.path / "config.yaml").read_text())["plugins"]
    sha = hashlib.sha256((tmp_path / "blocks.py").read_bytes()).hexdigest()
    assert written == [{"file": "plugins/blocks.py", "sha256": sha, "origin": str(tmp_path / "blocks.py")}]
    shown = next(body for lang, name, body in doc_blocks() if lang == "yaml" and not name)
    assert yaml.safe_load(shown.replace("5f0c...", sha).replace("/home/you/demo", str(tmp_path)))["plugins"] \
        == written


def _break(blocks: str, how: str) -> str:
    """blocks.py with one mistake of the kinds section 5 of the tutorial lists."""
    lines = blocks.splitlines()
    if how == "syntax":
        lines[9] = "    x = = 1"  # line 10
    elif how == "import":
        lines[2] = "import mylab_helpers"  # line 3
    elif how == "method":
        start = lines.index("    def derivative(self, z):")
        del lines[start:start + 4]
    elif how == "builtin":
        lines = [line.replace('@register("mish")', '@register("relu")') for line in lines]
    elif how == "shape":
        lines = [line.replace('return x * self.params["gamma"] + self.params["beta"]',
                              'return (x * self.params["gamma"]).sum(axis=-1)') for line in lines]
    return "\n".join(lines) + "\n"


def test_every_mistake_listed_in_the_tutorial_is_the_line_it_shows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_tutorial(tmp_path)
    section = EXTENDING.read_text().split("## 5.")[1]
    shown = next(body for lang, name, body in doc_blocks() if not lang and "error:" in body and body in section)
    expected = [line.replace("/home/you/demo", str(tmp_path)) for line in shown.strip().splitlines()]
    original, demo = (tmp_path / "blocks.py").read_text(), config.read_text()
    got = []
    for how in ("missing", "syntax", "import", "method", "builtin", "shape"):
        (tmp_path / "blocks.py").write_text(original if how == "missing" else _break(original, how))
        config.write_text(demo.replace("[blocks.py]", "[blok.py]") if how == "missing" else demo)
        got.append(assert_user_error(invoke("train", "demo.yaml", "--runs-dir", tmp_path / "runs")))
    assert got == expected
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing half-written


# ------------------------------------------------------- 2. the run folder's copy
@pytest.fixture
def plugin_run(tmp_path, monkeypatch):
    """A run trained on the tutorial's config: (folder with blocks.py, run folder)."""
    monkeypatch.chdir(tmp_path)
    config = write_tutorial(tmp_path)
    res = invoke("train", config, "--set", "train.epochs=2", "--set", "data.num_samples=120", "-q",
                 "--runs-dir", tmp_path / "runs")
    assert_ok(res)
    return tmp_path, next((tmp_path / "runs").iterdir())


def test_eval_predict_summary_explain_visualize_use_the_runs_copy(plugin_run):
    folder, run = plugin_run
    (folder / "blocks.py").write_text("raise RuntimeError('edited after training')\n")  # the original is gone
    assert_ok(invoke("eval", run))
    image = folder / "circle.png"
    subprocess.run([sys.executable, "circle.py"], cwd=folder, check=True)
    res = invoke("predict", run, image, "--json")
    assert_ok(res)
    [prediction] = json.loads(res.stdout)
    assert prediction["class"] in ("circle", "square", "triangle") and 0 < prediction["probability"] <= 1
    for args in (("summary", run), ("explain", run), ("gradcheck", run, "--batch", "2"),
                 ("visualize", run, "--out", folder / "pictures")):
        assert_ok(invoke(*args))
    assert "mish" in invoke("explain", run).stdout


def test_a_deleted_or_altered_copy_is_refused_in_one_line(plugin_run):
    folder, run = plugin_run
    copy = run / "plugins" / "blocks.py"
    copy.write_text(copy.read_text() + "\n# changed\n")
    line = assert_user_error(invoke("eval", run), "config.yaml", "plugins[0]", "plugins/blocks.py", "altered")
    assert "train again" in line
    copy.unlink()
    assert_user_error(invoke("predict", run, folder / "demo.yaml"), "plugins[0]", "plugins/blocks.py", "missing")


def test_resume_runs_the_copy_and_says_the_original_changed(plugin_run):
    folder, run = plugin_run
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "status": "interrupted"}))
    (folder / "blocks.py").write_text((folder / "blocks.py").read_text() + "\n# an edit\n")
    res = invoke("train", "--resume", run)
    assert_ok(res)
    assert "has changed since the run started; resuming with the run's copy plugins/blocks.py" in res.stderr


def test_a_plugin_module_is_imported_and_copied(tmp_path, monkeypatch):
    package = tmp_path / "site" / "mylab_test_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "blocks.py").write_text(doc_files()["blocks.py"].replace('"mish"', '"mish_from_module"')
                                       .replace('"channel_scale"', '"channel_scale_m"').replace('"lion"', '"lion_m"'))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    cfg = yaml.safe_load(doc_files()["demo.yaml"].replace("mish", "mish_from_module")
                         .replace("channel_scale", "channel_scale_m").replace("lion", "lion_m"))
    cfg["plugins"] = ["mylab_test_pkg.blocks"]
    cfg["data"]["num_samples"], cfg["train"]["epochs"] = 90, 1
    run = cnncli.train(cfg, runs_dir=tmp_path / "runs")
    assert (run.path / "plugins" / "mylab_test_pkg.blocks.py").is_file()
    entry = yaml.safe_load((run.path / "config.yaml").read_text())["plugins"][0]
    assert entry["origin"] == "module mylab_test_pkg.blocks" and entry["file"] == "plugins/mylab_test_pkg.blocks.py"
    monkeypatch.delitem(sys.modules, "mylab_test_pkg.blocks")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path / "site")])
    assert cnncli.evaluate_run(run.path)["examples"] > 0  # from the copy, the module no longer importable


# ---------------------------------------------------------------- 3. more mistakes
def _config_with(tmp_path: Path, *plugin_sources: str, layers=None) -> Path:
    names = []
    for i, source in enumerate(plugin_sources):
        (tmp_path / f"p{i}.py").write_text(source)
        names.append(f"p{i}.py")
    cfg = {"name": "p", "seed": 0, "plugins": names, "data": {"source": "synthetic", "num_samples": 60},
           "model": {"input_shape": [8, 8, 3], "layers": layers or [
               {"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}]},
           "train": {"epochs": 1}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


SWISH2 = '''
import numpy as np
from cnncli.nn import Activation, register

@register("twice_registered")
class Twice(Activation):
    def forward(self, z):
        return 2 * z

    def derivative(self, z):
        return 2 + 0 * z
'''


def test_two_plugins_may_not_take_the_same_name(tmp_path):
    path = _config_with(tmp_path, SWISH2, SWISH2.replace("2 * z", "3 * z"))
    line = assert_user_error(invoke("summary", path), "c.yaml", "plugins[1]", "p1.py",
                             "activation 'twice_registered' is already registered by the plugin")
    assert str(tmp_path / "p0.py") in line


def test_the_same_plugin_loaded_again_replaces_its_own_entries(tmp_path):
    path = _config_with(tmp_path, SWISH2.replace("twice_registered", "loaded_twice"))
    load_config(path)
    load_config(path)  # the same file again: no clash
    (tmp_path / "p0.py").write_text(SWISH2.replace("twice_registered", "loaded_twice").replace("2 * z", "5 * z"))
    load_config(path)  # edited (a notebook's reload): its own name, replaced
    assert ACTIVATIONS.get("loaded_twice")().forward(np.array([1.0]))[0] == 5.0


def test_an_error_raised_while_running_a_plugin_names_its_line(tmp_path):
    path = _config_with(tmp_path, "import math\n\nvalue = math.sqrt(-1)\n")
    assert_user_error(invoke("summary", path), "plugins[0]", "p0.py", "raised ValueError at line 3",
                      "math domain error")


def test_a_missing_module_and_a_bad_entry(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(_config_with(tmp_path).read_text().replace("plugins: []", "plugins: [no_such_module_xyz]"))
    assert_user_error(invoke("summary", path), "plugins[0]", "no_such_module_xyz", "no such module")
    path.write_text(path.read_text().replace("[no_such_module_xyz]", "[{file: x.py, code: 1}]"))
    assert_user_error(invoke("summary", path), "plugins[0]", "expected a file path ending in .py")
    path.write_text(path.read_text().replace("plugins: [{file: x.py, code: 1}]", "plugins: blocks.py"))
    assert_user_error(invoke("summary", path), "plugins: expected a list of plugin files")


def test_a_layer_plugin_whose_forward_fails_names_its_layer(tmp_path):
    source = '''
from cnncli.nn import Layer, register

@register("broken_forward")
class Broken(Layer):
    def forward(self, x, training=False):
        return x.undefined

    def backward(self, dy):
        return dy
'''
    path = _config_with(tmp_path, source, layers=[{"type": "broken_forward"}, {"type": "flatten"},
                                                  {"type": "dense", "units": 2, "activation": "softmax"}])
    assert_user_error(invoke("train", path, "--runs-dir", tmp_path / "runs"), "c.yaml", "model.layers[0]",
                      "broken_forward: forward failed on a probe batch of shape (2, 8, 8, 3)", "AttributeError")
    assert not (tmp_path / "runs").exists()


def test_register_refuses_what_is_not_a_component():
    with pytest.raises(RegistrationError, match="is not a subclass of Layer, Activation"):
        register("plain_class")(type("Plain", (), {}))
    with pytest.raises(RegistrationError, match="not lowercase snake_case"):
        register("Capital")(type("Capital", (Activation,), {"forward": lambda s, z: z,
                                                             "derivative": lambda s, z: 1 + 0 * z}))
    with pytest.raises(RegistrationError, match="layer class NoBackward .* does not define backward"):
        from cnncli.nn import Layer

        register("no_backward")(type("NoBackward", (Layer,), {"forward": lambda s, x, training=False: x}))


def test_an_activation_named_like_a_layer_is_refused():
    with pytest.raises(RegistrationError, match="layer 'dense' is already registered by cnncli"):
        register("dense")(type("DenseAct", (Activation,), {"forward": lambda s, z: z,
                                                           "derivative": lambda s, z: 1 + 0 * z}))
    assert "dense" not in ACTIVATIONS


# ----------------------------------------------------- 4. no code without plugins
def test_a_config_without_plugins_runs_no_code(tmp_path, monkeypatch):
    """Paths to Python files anywhere else in a config are data, never run."""
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    cfg = _config_with(tmp_path).read_text().replace("plugins: []", "plugins: []\nname: evil.py")
    for text in (cfg, cfg.replace("source: synthetic", "source: npz\n  path: evil.py"),
                 cfg.replace("type: flatten", "type: evil.py")):
        (tmp_path / "c.yaml").write_text(text)
        try:
            load_config(tmp_path / "c.yaml")
        except ConfigError:
            pass
    assert not marker.exists()
    assert plugins.resolve(None, tmp_path) == []


# ------------------------------------------------------ 5. the Python API, workers
def test_a_component_registered_from_python_is_a_name_like_any(tmp_path):
    @register("api_cube")
    class Cube(Activation):
        """a = z^3."""

        def forward(self, z):
            return z ** 3

        def derivative(self, z):
            return 3 * z ** 2

    net = Network([{"type": "dense", "units": 2, "activation": "api_cube"}, {"type": "api_cube"}]).build((3,))
    assert isinstance(net.layers[0].activation, Cube) and "api_cube" in LAYERS
    assert net.config()[1] == {"type": "activation", "activation": "api_cube"}


def test_a_trial_on_another_machine_gets_the_plugin_source(tmp_path, monkeypatch):
    """run_trial as a Dask worker runs it: the plugin file is not on the worker's disk,
    its source comes with the task, and the run folder comes back as an archive."""
    monkeypatch.chdir(tmp_path)
    config = write_tutorial(tmp_path)
    values = load_config(config, ["train.epochs=1", "data.num_samples=60"]).values
    values["name"] = "trial-000"
    files = plugins.read_files(values["plugins"])
    values["plugins"] = [{**entry, "file": str(tmp_path / "elsewhere" / "blocks.py")} for entry in values["plugins"]]
    record = sweeps.run_trial(0, values, None, 1, files)
    assert record["status"] == "completed", record["reason"]
    assert record["archive"] and record["metrics"]["epochs"] == 1


@pytest.mark.slow
def test_a_dask_sweep_with_a_plugin(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    config = write_tutorial(tmp_path)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster):
        done = subprocess.run([sys.executable, "-m", "cnncli.cli", "sweep", str(config), "--grid",
                               "optimizer.lr=0.003,0.001", "--set", "train.epochs=1", "--set",
                               "data.num_samples=120", "--executor", "dask", "--address", cluster.scheduler_address,
                               "--runs-dir", str(tmp_path / "runs")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    sweep = next((tmp_path / "runs" / "sweeps").iterdir())
    for trial in ("trial-000", "trial-001"):
        assert (sweep / trial / "plugins" / "blocks.py").read_text() == doc_files()["blocks.py"]
        assert (sweep / trial / "checkpoints" / "best.npz").is_file()


def test_components_lists_plugins_with_their_origin(tmp_path):
    config = write_tutorial(tmp_path)
    res = invoke("components", "optimizer", "--config", config)
    assert_ok(res)
    lion = next(line for line in res.stdout.splitlines() if " lion " in line)
    assert "beta1, beta2, clip_norm, lr" in lion and "plugin blocks.py" in lion
    assert "built-in" in next(line for line in res.stdout.splitlines() if " adam " in line)
    assert_user_error(invoke("components", "optimiser"), "unknown kind 'optimiser' (did you mean 'optimizer'?)")


def test_components_prints_docstrings_as_text():
    res = invoke("components", "loss")
    assert_ok(res)
    assert "-[y ln yhat + (1 - y) ln(1 - yhat)] per output." in res.stdout  # not eaten as markup


def test_an_activation_shortcut_reports_the_key_the_user_wrote():
    with pytest.raises(ConfigError) as err:
        Network([{"type": "leaky_relu", "negative_slope": -1}])
    assert str(err.value) == "layers[0].negative_slope: expected a number >= 0 and < 1; got -1"


def test_a_plugin_error_is_a_plugin_error():
    with pytest.raises(PluginError, match=r"plugins\[0\]: nope.py: no such plugin file"):
        plugins.resolve(["nope.py"], REPO)


def test_a_component_registered_from_python_is_kept_by_the_run(tmp_path, monkeypatch):
    """Registered by importing a module (no plugins: in the config), used by cnncli.train:
    the run keeps that module's code, so eval works in a new process without it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "mylab_registered.py").write_text(doc_files()["blocks.py"].replace('"mish"', '"mish_py"')
                                              .replace('"channel_scale"', '"channel_scale_py"')
                                              .replace('"lion"', '"lion_py"'))
    monkeypatch.syspath_prepend(str(site))
    import importlib

    importlib.import_module("mylab_registered")
    cfg = yaml.safe_load(doc_files()["demo.yaml"].replace("mish", "mish_py").replace("lion", "lion_py")
                         .replace("channel_scale", "channel_scale_py"))
    del cfg["plugins"]
    cfg["data"]["num_samples"], cfg["train"]["epochs"] = 90, 1
    run = cnncli.train(cfg, runs_dir=tmp_path / "runs")
    entry = yaml.safe_load((run.path / "config.yaml").read_text())["plugins"]
    assert entry == [{"file": "plugins/mylab_registered.py", "sha256": hashlib.sha256(
        (site / "mylab_registered.py").read_bytes()).hexdigest(), "origin": "module mylab_registered"}]
    done = subprocess.run([sys.executable, "-m", "cnncli.cli", "eval", str(run.path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "accuracy" in done.stdout


OTHER_KINDS = '''
import numpy as np
from cnncli.nn import Initializer, Loss, Schedule, register


@register("log_cosh")
class LogCosh(Loss):
    """E = sum ln cosh(yhat - y)."""

    def sum_and_gradient(self, y_pred, y, from_logits=False):
        d = y_pred - y
        return float(np.sum(np.logaddexp(d, -d) - np.log(2))), np.tanh(d)


@register("halving")
class Halving(Schedule):
    """The rate halves every `every` updates."""

    def __init__(self, *, every=10):
        self.every = every

    def __call__(self, base_lr, t):
        return base_lr * 0.5 ** (t // self.every)


@register("tiny_uniform")
class TinyUniform(Initializer):
    """U(-scale, scale)."""

    def __init__(self, *, scale=0.01):
        self.scale = scale

    def sample(self, shape, rng, fan_in, fan_out):
        return rng.uniform(-self.scale, self.scale, size=shape)
'''


def test_a_loss_a_schedule_and_an_initializer_from_a_plugin(tmp_path, monkeypatch):
    """The other three kinds: named in a config, trained, summarized and explained."""
    monkeypatch.chdir(tmp_path)
    path = _config_with(tmp_path, OTHER_KINDS, layers=[
        {"type": "flatten"},
        {"type": "dense", "units": 3, "kernel_initializer": {"name": "tiny_uniform", "scale": 0.05}}])
    cfg = yaml.safe_load(path.read_text())
    cfg.update(loss="log_cosh", optimizer={"name": "sgd", "lr": 0.1, "schedule": {"name": "halving", "every": 2}})
    path.write_text(yaml.safe_dump(cfg))
    res = invoke("train", path, "--runs-dir", tmp_path / "runs", "-q")
    assert_ok(res)
    run = next((tmp_path / "runs").iterdir())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["lr"] == 0.1 and len(rows) == 1
    kernel = np.load(run / "checkpoints" / "last.npz")["param/layers.1.kernel"]
    assert np.abs(kernel).max() <= 0.05 + 0.1 * 0.5 * 2  # drawn in (-0.05, 0.05), moved by a few small steps
    explained = invoke("explain", path)
    assert_ok(explained)
    assert "loss: log_cosh (mean)" in explained.stdout and "E = sum ln cosh(yhat - y)." in explained.stdout
    assert "The learning rate follows the halving schedule (every 2) from 0.1." in explained.stdout
    assert_ok(invoke("eval", run))


def test_a_loaded_config_with_plugins_takes_more_overrides_from_another_folder(tmp_path, monkeypatch):
    """load_config(cfg, more) re-resolves cfg's document: its plugin and data paths must
    still resolve against where cfg was read, not the folder the process has moved to."""
    import cnncli

    config = write_tutorial(tmp_path)
    from_dict = cnncli.load_config(yaml.safe_load(config.read_text()), base_dir=tmp_path, check_memory=False)
    from_file = cnncli.load_config(str(config), check_memory=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for cfg in (from_dict, from_file):
        again = cnncli.load_config(cfg, ["train.epochs=2"], check_memory=False)
        assert again["plugins"] == cfg["plugins"] and again["train"]["epochs"] == 2
