"""``cnncli export``: the ONNX graph gives what cnncli's own ``network.predict`` gives, for
every built-in layer and activation, both layouts, with and without the normalization in
the graph; the npz export rebuilds the forward pass in plain NumPy; plugins without a
converter and bad arguments are refused in one line.

Skipped without onnx and onnxruntime (``pip install -e '.[onnx]'``; CI installs them
through ``.[dev]``); the npz test needs neither.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import cnncli
from cnncli.data import apply_normalization
from cnncli.experiment import load_run
from cnncli.metrics import predicted_classes
from tests.helpers import TINY, assert_ok, assert_user_error, invoke

REPO = Path(__file__).resolve().parents[1]
#: What the export must hold to, float32 against cnncli's float32.
TOLERANCE = 1e-5

#: Every built-in layer and activation, and the padding, stride, dilation and
#: count_include_pad variants (configs/all_options.yaml extended). An odd input size makes
#: ``same`` padding asymmetric; a softmax on a 4-D tensor must run over the channels.
EVERY_LAYER = {
    "name": "every-layer", "seed": 3,
    "data": {"source": "synthetic", "num_samples": 120, "num_classes": 3, "noise": 0.1,
             "normalize": "standardize"},
    "model": {"input_shape": [15, 15, 3], "layers": [
        {"type": "conv2d", "filters": 6, "kernel_size": 4, "padding": "same",
         "activation": {"name": "leaky_relu", "negative_slope": 0.05}},           # pads (1, 2, 1, 2)
        {"type": "batch_norm", "momentum": 0.5, "epsilon": 1e-3},                 # 4-D: over channels
        {"type": "max_pool2d", "pool_size": 2, "stride": 2, "padding": "same"},   # pads (0, 1, 0, 1)
        {"type": "conv2d", "filters": 8, "kernel_size": 3, "stride": 2, "padding": [1, 2], "use_bias": False,
         "activation": {"name": "elu", "alpha": 0.5}},
        {"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": "same", "dilation": 2, "activation": "gelu"},
        {"type": "avg_pool2d", "pool_size": 3, "stride": 1, "padding": 1, "count_include_pad": True},
        {"type": "avg_pool2d", "pool_size": 3, "stride": 2, "padding": "same", "count_include_pad": False},
        {"type": "conv2d", "filters": 10, "kernel_size": [3, 2], "stride": [1, 2], "padding": 1, "dilation": [1, 2],
         "activation": {"name": "gelu", "approximate": "tanh"}, "implementation": "reference"},
        {"type": "softmax"},                                                      # over the 10 channels
        {"type": "silu"},
        {"type": "activation", "activation": "swish"},
        {"type": "max_pool2d", "pool_size": 2, "stride": 1, "padding": 1},        # windows of padding and data
        {"type": "softplus"},
        {"type": "global_avg_pool2d"},
        {"type": "flatten"},
        {"type": "dense", "units": 12, "activation": "tanh"},
        {"type": "batch_norm"},                                                   # 2-D: over units
        {"type": "dropout", "rate": 0.3},
        {"type": "dense", "units": 10, "activation": "sigmoid"},
        {"type": "relu"},
        {"type": "dense", "units": 8, "use_bias": False},
        {"type": "linear"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]},
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 1, "batch_size": 16},
}

#: The README's script: the class of each image file, as `cnncli predict` gives it, from
#: a graph exported with --include-preprocessing (python predict.py MODEL IMAGE...).
def readme_script() -> str:
    """The five-line onnxruntime script the README prints (its one ```python block that
    imports onnxruntime)."""
    import re

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    (script,) = [b for b in blocks if "onnxruntime" in b]
    return script


README_SCRIPT = readme_script()


def paper_config() -> dict:
    """configs/paper.yaml's Figure 2 network, on synthetic 28x28x3 images for 1 epoch."""
    cfg = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    cfg["data"] = {"source": "synthetic", "num_samples": 96, "num_classes": 2, "normalize": "scale"}
    cfg["train"] = {"epochs": 1, "batch_size": 32}
    return cfg


def with_changes(base: dict, **sections) -> dict:
    cfg = copy.deepcopy(base)
    for key, value in sections.items():
        cfg[key] = value
    return cfg


def tiny_from_logits(units: int, loss: str) -> dict:
    layers = copy.deepcopy(TINY["model"]["layers"])
    layers[-1] = {"type": "dense", "units": units}  # no activation: the loss takes logits
    return with_changes(TINY, name=f"logits-{units}", model={**TINY["model"], "layers": layers},
                        loss={"name": loss, "from_logits": True})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Run folders trained once for the module, by name."""
    runs_dir = tmp_path_factory.mktemp("export-runs")
    configs = {"tiny": TINY, "paper": paper_config(), "every": EVERY_LAYER,
               "softmax_logits": tiny_from_logits(2, "categorical_crossentropy"),
               "sigmoid_logits": tiny_from_logits(1, "binary_crossentropy"),
               "float64": with_changes(TINY, name="tiny64", train={**TINY["train"], "dtype": "float64"})}
    return {key: cnncli.train(cfg, runs_dir=runs_dir, handle_signals=False).path for key, cfg in configs.items()}


def raw_pixels(run_dir: Path, n: int = 9, seed: int = 0) -> np.ndarray:
    """Pixel values 0-255 (float32, NHWC) of the run's input size."""
    shape = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["input_shape"]
    return np.random.default_rng(seed).integers(0, 256, (n, *shape)).astype(np.float32)


# ------------------------------------------------------------------------------ ONNX
def onnx_outputs(path: Path, x_nhwc: np.ndarray, layout: str) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path))
    feed = x_nhwc if layout == "nhwc" else x_nhwc.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    return session.run(None, {"input": feed})[0]


def cnncli_outputs(run_dir: Path, x_normalized: np.ndarray) -> np.ndarray:
    _, network, loss, _, _ = load_run(run_dir, "best")
    return network.predict(x_normalized, loss=loss)


@pytest.mark.parametrize("name", ["paper", "every", "tiny", "softmax_logits", "sigmoid_logits"])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("preprocessing", [False, True], ids=["normalized", "raw-pixels"])
def test_onnxruntime_gives_what_cnncli_predicts(trained, tmp_path, name, layout, preprocessing):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from cnncli.export import export_run

    run_dir = trained[name]
    exported = export_run(run_dir, out=tmp_path / "m.onnx", layout=layout, include_preprocessing=preprocessing)
    _, network, _, info, _ = load_run(run_dir)
    raw = raw_pixels(run_dir)
    normalized = apply_normalization(raw, info["normalization"], np.float32)
    expected = cnncli_outputs(run_dir, normalized)
    got = onnx_outputs(exported.files[0], raw if preprocessing else normalized, layout)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() < TOLERANCE, np.abs(got - expected).max()
    assert (predicted_classes(got) == predicted_classes(expected)).all()
    assert exported.output_name == "probabilities"


def test_every_layer_matches_layer_by_layer(trained, tmp_path):
    """Each layer's tensor in the graph against ``network.layer_outputs`` (the layers as
    written), so a converter that is wrong cannot hide behind the final softmax."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from cnncli.export import export_run

    run_dir = trained["every"]
    _, network, _, info, _ = load_run(run_dir)
    x = apply_normalization(raw_pixels(run_dir), info["normalization"], np.float32)
    expected = network.layer_outputs(x)
    for layout in ("nhwc", "nchw"):
        exported = export_run(run_dir, out=tmp_path / f"{layout}.onnx", layout=layout)
        model = onnx.load(exported.files[0])
        names = [name for name, _ in exported.layer_tensors]
        for name in dict.fromkeys(names):  # every layer's tensor becomes an output too
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        session = ort.InferenceSession(model.SerializeToString())
        feed = x if layout == "nhwc" else x.transpose(0, 3, 1, 2)
        values = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": feed})))
        for index, ((name, tensor_layout), want) in enumerate(zip(exported.layer_tensors, expected)):
            got = values[name]
            if tensor_layout == "nchw":
                got = got.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
            assert got.shape == want.shape, (layout, index)
            scale = max(1.0, float(np.abs(want).max()))
            assert np.abs(got - want).max() < TOLERANCE * scale, (layout, index, network.layers[index].label(),
                                                                  np.abs(got - want).max())


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", {"name": "leaky_relu", "negative_slope": 0.2},
                                        "softplus", "softmax", "linear", {"name": "elu", "alpha": 0.7}, "gelu",
                                        {"name": "gelu", "approximate": "tanh"}, "silu", "swish"],
                         ids=lambda a: a if isinstance(a, str) else "-".join(map(str, a.values())))
def test_each_activation_over_a_wide_range(activation):
    """Far into the tails (|z| up to 1e4), where a naive formula overflows or cancels."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from cnncli.export import TrainedRun, onnx_model
    from cnncli.nn import Network, make_loss

    z = np.concatenate([np.linspace(-60, 60, 241), np.linspace(-4, 4, 81),
                        [-1e4, 1e4, -88, 88, 1e-7, -1e-7, 0]]).astype(np.float32)
    network = Network([{"type": "activation", "activation": activation}]).build((len(z),), seed=0)
    model, _ = onnx_model(TrainedRun(Path("activations"), "best", network, make_loss("mse"), {}, {}))
    x = np.stack([z, -z, 0.5 * z])  # (3, D)
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    want = network.predict(x)
    assert np.isfinite(got).all()
    assert (np.abs(got - want) / np.maximum(1.0, np.abs(want))).max() < TOLERANCE


@pytest.mark.parametrize("layers", [
    [{"type": "softmax"}, {"type": "global_avg_pool2d"}, {"type": "dense", "units": 3}],  # never leaves NHWC
    [{"type": "batch_norm"}, {"type": "flatten"}, {"type": "dense", "units": 4, "activation": "elu"}],
    [{"type": "avg_pool2d", "pool_size": 3, "stride": 2, "padding": "same"}, {"type": "softmax"},
     {"type": "flatten"}],
    [{"type": "conv2d", "filters": 5, "kernel_size": 2, "padding": "same", "activation": "tanh"}],  # 4-D output
], ids=["global-pool-nhwc", "batch-norm-first", "softmax-4d", "conv-output"])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_layouts_where_the_first_layer_is_not_a_conv(layers, layout):
    """Networks built here with random weights and statistics (no run): each converter in
    either layout, Transposes only where needed, a 4-D output in the input's layout."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from cnncli.export import TrainedRun, onnx_model
    from cnncli.nn import Network, make_loss

    network = Network(copy.deepcopy(layers)).build((7, 6, 4), seed=0)
    rng = np.random.default_rng(5)
    for layer in network.layers:
        for name, array in {**layer.params, **layer.buffers}.items():
            array[...] = rng.uniform(0.5, 1.5, array.shape) if name == "running_var" else rng.normal(size=array.shape)
    model, exported = onnx_model(TrainedRun(Path("built"), "best", network, make_loss("mse"), {}, {}), layout=layout)
    x = rng.normal(size=(5, 7, 6, 4)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString()).run(
        None, {"input": x if layout == "nhwc" else x.transpose(0, 3, 1, 2)})[0]
    want = network.predict(x)
    if want.ndim == 4 and layout == "nchw":
        want = want.transpose(0, 3, 1, 2)
    assert np.abs(got - want).max() < TOLERANCE * max(1.0, float(np.abs(want).max()))
    transposes = sum(node.op_type == "Transpose" for node in model.graph.node)
    assert transposes <= 2


def test_the_model_passes_the_checker_and_says_what_it_is(trained, tmp_path):
    onnx = pytest.importorskip("onnx")
    from cnncli.export import IR_VERSION, OPSET, export_run

    run_dir = trained["every"]
    path = export_run(run_dir, out=tmp_path / "m.onnx", layout="nchw").files[0]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == IR_VERSION and [o.version for o in model.opset_import] == [OPSET]
    graph_input, = model.graph.input
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert graph_input.name == "input" and dims == ["batch", 3, 15, 15]
    meta = {p.key: p.value for p in model.metadata_props}
    info = json.loads((run_dir / "data.json").read_text())
    assert json.loads(meta["class_names"]) == info["class_names"]
    assert json.loads(meta["normalization"]) == info["normalization"]
    assert json.loads(meta["input_shape"]) == [15, 15, 3] and meta["layout"] == "NCHW"
    assert meta["run"] == run_dir.name and meta["checkpoint"] == "best" and json.loads(meta["epoch"]) == 1
    assert meta["cnncli_version"] == cnncli.__version__ and meta["preprocessing_included"] == "false"
    assert meta["output"] == "probabilities" and meta["output_from_logits"] == "none"
    assert meta["dtype"] == "float32" and meta["trained_dtype"] == "float32"


def test_logits_and_float64_are_said_in_the_metadata(trained, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from cnncli.export import export_run

    logits = export_run(trained["sigmoid_logits"], out=tmp_path / "logits.onnx")
    meta = {p.key: p.value for p in onnx.load(logits.files[0]).metadata_props}
    assert meta["output_from_logits"] == "sigmoid" and "from_logits" in logits.notes[0]
    wide = export_run(trained["float64"], out=tmp_path / "wide.onnx")
    meta = {p.key: p.value for p in onnx.load(wide.files[0]).metadata_props}
    assert meta["trained_dtype"] == "float64" and "cast to float32" in wide.notes[0]
    _, network, loss, info, _ = load_run(trained["float64"])
    x = apply_normalization(raw_pixels(trained["float64"]), info["normalization"], np.float64)
    got = onnx_outputs(wide.files[0], x.astype(np.float32), "nhwc")
    assert np.abs(got - network.predict(x, loss=loss)).max() < TOLERANCE


def test_the_readme_script_prints_what_predict_prints(trained, tmp_path):
    """The README's five lines, run as a user runs them, on image files of other sizes."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from cnncli.export import export_run

    script = tmp_path / "predict.py"
    script.write_text(README_SCRIPT)
    assert len(README_SCRIPT.splitlines()) == 5
    rng = np.random.default_rng(1)
    for name in ("every", "paper"):  # standardized and softmax; scaled and one sigmoid unit
        images = []
        for i, size in enumerate([(15, 15), (40, 31), (28, 28), (9, 60)]):
            path = tmp_path / f"{name}-{i}.{'png' if i % 2 else 'jpg'}"
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
            images.append(path)
        model = export_run(trained[name], out=tmp_path / f"{name}.onnx", include_preprocessing=True).files[0]
        done = subprocess.run([sys.executable, str(script), str(model), *map(str, images)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        printed = [line.split() for line in done.stdout.splitlines()]
        rows = cnncli.predict(trained[name], images).rows
        assert [p[0] for p in printed] == [r["image"] for r in rows]
        assert [p[1] for p in printed] == [r["class"] for r in rows]
        assert all(abs(float(p[2]) - r["probability"]) < 1e-4 for p, r in zip(printed, rows))


# ------------------------------------------------------------------------- plugins
PLUGIN = '''
from cnncli.nn import Activation, Layer, register


class Scale(Layer):
    """y = gamma * x + beta per channel."""

    def setup(self, input_shape, rng):
        self.add_parameter("gamma", (input_shape[-1],), {"name": "random_uniform", "minval": 0.5, "maxval": 2}, rng)
        self.add_parameter("beta", (input_shape[-1],), {"name": "random_normal", "stddev": 0.5}, rng)
        return input_shape

    def forward(self, x, training=False):
        self.x = x
        return x * self.params["gamma"] + self.params["beta"]

    def backward(self, dy):
        axes = tuple(range(dy.ndim - 1))
        self.grads["gamma"], self.grads["beta"] = (dy * self.x).sum(axis=axes), dy.sum(axis=axes)
        return dy * self.params["gamma"]


@register("export_scale")
class ExportScale(Scale):
    """No to_onnx: the ONNX export refuses it."""


@register("export_scale_onnx")
class ExportScaleOnnx(Scale):
    def to_onnx(self, graph, input_name):
        x = graph.in_layout(input_name, "nhwc")
        y = graph.add_node("Mul", [x, graph.add_initializer("gamma", self.params["gamma"])])
        return graph.add_node("Add", [y, graph.add_initializer("beta", self.params["beta"])])


@register("export_cube")
class Cube(Activation):
    def forward(self, z):
        return z * z * z

    def derivative(self, z):
        return 3 * z * z
'''


@pytest.fixture
def registries_as_they_were():
    """The plugins registered here are forgotten after the test, as in a new process."""
    from cnncli.nn import REGISTRIES

    saved = {kind: dict(registry._entries) for kind, registry in REGISTRIES.items()}
    yield
    for kind, registry in REGISTRIES.items():
        registry._entries.clear()
        registry._entries.update(saved[kind])


def plugin_run(tmp_path: Path, layer: dict, activation: str = "relu") -> Path:
    (tmp_path / "blocks.py").write_text(PLUGIN)
    layers = [{"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": activation}, layer,
              {"type": "max_pool2d"}, {"type": "flatten"}, {"type": "dense", "units": 2, "activation": "softmax"}]
    cfg = with_changes(TINY, name=layer["type"], plugins=[str(tmp_path / "blocks.py")],
                       model={"input_shape": [8, 8, 3], "layers": layers},
                       data={**TINY["data"], "num_samples": 60}, train={"epochs": 1, "batch_size": 32})
    return cnncli.train(cfg, runs_dir=tmp_path / "runs", handle_signals=False).path


def test_a_plugin_without_a_converter_is_refused_by_name(tmp_path, registries_as_they_were):
    pytest.importorskip("onnx")
    run_dir = plugin_run(tmp_path, {"type": "export_scale"})
    line = assert_user_error(invoke("export", run_dir), "layers[1] export_scale (from plugin plugins/blocks.py)",
                             "to_onnx(graph, input_name) -> output_name", "--format npz")
    assert "Traceback" not in line and not (run_dir / "export" / "model.onnx").exists()
    run_dir = plugin_run(tmp_path, {"type": "batch_norm"}, activation="export_cube")
    assert_user_error(invoke("export", run_dir), "layers[0] conv2d: activation export_cube (from plugin "
                                                 "plugins/blocks.py)", "to_onnx")
    assert_ok(invoke("export", run_dir, "--format", "npz"))  # the npz export needs no converter


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_a_plugin_with_to_onnx_is_exported(tmp_path, registries_as_they_were, layout):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from cnncli.export import export_run

    run_dir = plugin_run(tmp_path, {"type": "export_scale_onnx"})
    exported = export_run(run_dir, out=tmp_path / "m.onnx", layout=layout)
    _, network, loss, info, _ = load_run(run_dir)
    x = apply_normalization(raw_pixels(run_dir), info["normalization"], np.float32)
    got = onnx_outputs(exported.files[0], x, layout)
    assert np.abs(got - network.predict(x, loss=loss)).max() < TOLERANCE


# ------------------------------------------------------------------------------ npz
def numpy_forward(folder: Path, x: np.ndarray) -> np.ndarray:
    """The forward pass from weights.npz and model.json alone: no cnncli, as another
    program would write it (the layers of the TINY network and the paper's)."""
    spec = json.loads((folder / "model.json").read_text())
    assert spec["format"] == "cnncli-npz" and spec["format_version"] == 1 and spec["layout"] == "NHWC"
    weights = np.load(folder / "weights.npz", allow_pickle=False)
    activations = {"linear": lambda z: z, "relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
                   "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
                   "softmax": lambda z: np.exp(z - z.max(-1, keepdims=True))
                   / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)}
    a = x.astype(spec["dtype"])
    for layer in spec["layers"]:
        cfg, arrays = layer["config"], {k: weights[v["name"]] for k, v in layer["arrays"].items()}
        if layer["type"] in ("conv2d", "max_pool2d"):
            top, bottom, left, right = layer["pads"]
            kh, kw = cfg["kernel_size"] if layer["type"] == "conv2d" else cfg["pool_size"]
            (sh, sw), (dh, dw) = cfg["stride"], cfg.get("dilation", [1, 1])
            fill = 0.0 if layer["type"] == "conv2d" else -np.inf
            a = np.pad(a, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
            ho, wo = layer["output_shape"][:2]
            # (N, H', W', kh, kw, C): every window, by its kernel offsets
            windows = np.stack([np.stack([a[:, p * dh: p * dh + sh * (ho - 1) + 1: sh,
                                            q * dw: q * dw + sw * (wo - 1) + 1: sw, :]
                                          for q in range(kw)], axis=3) for p in range(kh)], axis=3)
            if layer["type"] == "max_pool2d":
                a = windows.max(axis=(3, 4))
            else:
                a = np.einsum("nijpqc,pqcf->nijf", windows, arrays["kernel"]) + arrays.get("bias", 0)
        elif layer["type"] == "flatten":
            a = a.reshape(len(a), -1)  # (N, H*W*C), in (h, w, c) order
        elif layer["type"] == "dense":
            a = a @ arrays["kernel"] + arrays.get("bias", 0)
        else:
            raise AssertionError(f"this reader does not know {layer['type']}")
        activation = cfg.get("activation") or "linear"
        a = activations[activation if isinstance(activation, str) else activation["name"]](a)
    if spec["output"]["from_logits"]:
        a = activations[spec["output"]["from_logits"]](a)
    return a


@pytest.mark.parametrize("name", ["tiny", "paper", "softmax_logits"])
def test_the_npz_export_rebuilds_the_forward_pass_without_cnncli(trained, tmp_path, name):
    from cnncli.export import export_run

    run_dir = trained[name]
    exported = export_run(run_dir, fmt="npz", out=tmp_path / "npz")
    assert [p.name for p in exported.files] == ["weights.npz", "model.json"]
    spec = json.loads((tmp_path / "npz" / "model.json").read_text())
    _, network, loss, info, meta = load_run(run_dir)
    assert spec["normalization"] == info["normalization"] and spec["class_names"] == info["class_names"]
    assert spec["input_shape"] == list(network.input_shape) and spec["epoch"] == meta["epoch"]
    assert [layer["output_shape"] for layer in spec["layers"]] == [list(layer.output_shape)
                                                                   for layer in network.layers]
    with np.load(tmp_path / "npz" / "weights.npz", allow_pickle=False) as weights:
        assert sorted(weights.files) == sorted(network.state_dict())
    raw = raw_pixels(run_dir)
    # the reader normalizes as model.json says
    norm = spec["normalization"]
    x = raw / np.float32(norm["scale"])
    expected = network.predict(apply_normalization(raw, info["normalization"], np.float32), loss=loss)
    got = numpy_forward(tmp_path / "npz", x)
    assert np.abs(got - expected).max() < TOLERANCE
    assert (predicted_classes(got) == predicted_classes(expected)).all()


# --------------------------------------------------------------------------- the CLI
def test_the_command_writes_into_the_run_folder(trained, tmp_path):
    pytest.importorskip("onnx")
    run_dir = tmp_path / "run"
    shutil.copytree(trained["tiny"], run_dir)
    res = invoke("export", run_dir)
    assert_ok(res)
    assert (run_dir / "export" / "model.onnx").is_file()
    assert f"wrote {run_dir / 'export' / 'model.onnx'} (ONNX opset 17" in res.stdout
    assert "input 'input' (batch, 8, 8, 3) NHWC float32" in res.stdout
    res = invoke("export", run_dir, "--format", "npz", "--checkpoint", "last")
    assert_ok(res)
    assert {p.name for p in (run_dir / "export").iterdir()} == {"model.onnx", "weights.npz", "model.json"}
    res = invoke("export", "--runs-dir", tmp_path, "--layout", "nchw", "--include-preprocessing",
                 "--out", tmp_path / "raw.onnx")  # the most recent run under --runs-dir
    assert_ok(res)
    assert "(batch, 3, 8, 8) NCHW float32, raw pixel values 0-255" in res.stdout


def test_bad_arguments_are_refused_in_one_line(trained, tmp_path):
    pytest.importorskip("onnx")
    run_dir = tmp_path / "run"
    shutil.copytree(trained["tiny"], run_dir)
    assert_user_error(invoke("export", run_dir, "--format", "tflite"), "--format", "onnx or npz", "'tflite'")
    assert_user_error(invoke("export", run_dir, "--layout", "nwhc"), "--layout", "nhwc or nchw")
    assert_user_error(invoke("export", run_dir, "--format", "npz", "--layout", "nchw"), "npz", "NHWC")
    assert_user_error(invoke("export", run_dir, "--checkpoint", "final"), "checkpoint", "best or last")
    assert_user_error(invoke("export", run_dir, "--out", tmp_path / "missing" / "m.onnx"),
                      f"{tmp_path / 'missing'} does not exist")
    assert_user_error(invoke("export", run_dir, "--format", "npz", "--out", tmp_path / "missing" / "npz"),
                      f"{tmp_path / 'missing'} does not exist")
    assert not (tmp_path / "missing").exists()
    assert_user_error(invoke("export", run_dir, "--out", tmp_path / "m.txt"), "expected a .onnx file")
    assert_user_error(invoke("export", tmp_path / "nowhere"), "no such run folder")
    (run_dir / "checkpoints" / "best.npz").unlink()
    assert_user_error(invoke("export", run_dir), "best.npz", "never wrote its best checkpoint",
                      "--checkpoint last exists")
    (run_dir / "checkpoints" / "last.npz").unlink()
    assert_user_error(invoke("export", run_dir, "--format", "npz", "--checkpoint", "last"), "last.npz",
                      "stopped before writing any checkpoint")
    assert not (run_dir / "export").exists()  # nothing written, not even the folder
