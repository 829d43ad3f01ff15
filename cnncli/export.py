r"""Exporting a trained run for other programs: an ONNX graph, or plain arrays described in JSON.

``cnncli export [RUN_DIR]`` reads a run's checkpoint (``best`` or ``last``) and writes one
of two things into ``RUN_DIR/export/`` (or ``--out``):

**ONNX** (``--format onnx``, :func:`export_onnx`): ``model.onnx``, opset :data:`OPSET`
(17), IR version :data:`IR_VERSION` (8, which every onnxruntime since 1.13 reads), built
with ``onnx.helper`` and checked with ``onnx.checker.check_model(full_check=True)``
before it is written. The graph reproduces ``network.predict(x, loss=loss)``:

* input ``input``, float32, ``(batch, H, W, C)`` (NHWC, cnncli's own layout) or
  ``(batch, C, H, W)`` with ``layout="nchw"``; the batch dimension is dynamic;
* output ``probabilities`` when the last activation gives probabilities (sigmoid,
  softmax; or a loss computed ``from_logits``, whose ``loss.probabilities`` (its fused
  activation) the graph applies), otherwise ``output``; a 4-D output comes out in the
  input's layout;
* with ``include_preprocessing`` the run's normalization (``data.json``) opens the graph,
  so that it takes raw pixel values (0-255) as float32:

  .. math::  x' = (x / s - \mu_c) / \sigma_c   \quad(\mu, \sigma \text{ only for ``standardize``})

  otherwise the graph expects normalized inputs and the normalization is in its
  metadata;
* ``metadata_props`` (strings; JSON where structured): ``cnncli_version``, ``run``,
  ``checkpoint``, ``epoch``, ``class_names``, ``input_shape`` (cnncli's ``[H, W, C]``),
  ``layout`` (the graph input's: ``NHWC`` or ``NCHW``), ``normalization``,
  ``preprocessing_included``, ``output``, ``output_from_logits`` (the activation the graph
  applies to the logits, or ``none``), ``dtype`` (``float32``) and ``trained_dtype`` (a
  float64 run is cast to float32).

Each layer maps to ONNX nodes by a table in this module (:data:`LAYER_CONVERTERS`,
:data:`ACTIVATION_CONVERTERS`), keyed by the registered name; ``conv`` and pooling run in
NCHW, so a Transpose to NCHW comes before the first of them and one back to NHWC before a
``flatten`` of a 4-D tensor (cnncli flattens in (h, w, c) order, which the dense weights
after it depend on):

=================  ==============================================================
cnncli             ONNX
=================  ==============================================================
conv2d             Conv: kernel HWIO -> OIHW, ``pads`` = the layer's resolved
                   (top, left, bottom, right) (``same`` is TF/Keras's, asymmetric
                   when the total is odd), ``strides``, ``dilations``; no bias
                   input with ``use_bias: false``
max_pool2d         MaxPool (padding never wins, as cnncli's -inf)
avg_pool2d         AveragePool, ``count_include_pad`` as configured
global_avg_pool2d  ReduceMean over the two spatial axes, keepdims 0
flatten            (Transpose to NHWC) Flatten(axis=1)
dense              Gemm (MatMul without a bias); its input is always (N, D): cnncli's
                   dense refuses any other rank
dropout            nothing (identity at inference)
batch_norm         BatchNormalization with the running mean and variance, epsilon
activation         the activation's nodes
=================  ==============================================================

and each activation (a layer's ``activation:`` becomes nodes after it): sigmoid Sigmoid,
tanh Tanh, relu Relu, leaky_relu LeakyRelu(alpha = negative_slope), softplus Softplus,
softmax Softmax over the channel axis (cnncli's last axis: 1 in NCHW), linear nothing,
elu Elu(alpha), gelu ``none`` ``0.5 z (1 + erf(z / sqrt 2))``, gelu ``tanh``
``z sigmoid(2 sqrt(2/pi) (c + 0.044715 c^3))`` with ``c = clip(z, -100, 100)`` as cnncli
computes it, silu (swish) ``z sigmoid(z)``.

**Components of your own.** A layer or activation without an entry in the tables (a
plugin's) is exported when its class has a method ``to_onnx(graph, input_name) ->
output_name``; otherwise the export is refused in one line naming it. The ``graph`` is an
:class:`OnnxGraph`: ``graph.add_node(op_type, inputs, outputs=None, **attributes)``
returns the (new) output name, ``graph.add_initializer(name_hint, array)`` the name of a
constant (floats are stored as float32), ``graph.layout`` is ``"nchw"`` or ``"nhwc"``:
the layout of a 4-D input (the output must be in ``graph.layout`` too; call
``graph.in_layout(name, "nhwc")`` first to work in cnncli's own), ``graph.rank`` the
input's rank, batch included, and ``graph.channel_axis()`` the axis that is cnncli's last.
For a layer with an ``activation:`` (an ``ActivatedLayer``), ``to_onnx`` converts the
layer's ``forward_linear`` only; the activation's nodes follow. For example::

    def to_onnx(self, graph, input_name):                  # y = gamma * x + beta per channel
        x = graph.in_layout(input_name, "nhwc")            # channels last: (C,) broadcasts
        y = graph.add_node("Mul", [x, graph.add_initializer("gamma", self.params["gamma"])])
        return graph.add_node("Add", [y, graph.add_initializer("beta", self.params["beta"])])

**NPZ** (``--format npz``, :func:`export_npz`): two files that rebuild the forward pass
without cnncli.

* ``weights.npz``: every parameter and buffer as a plain array named
  ``layers.<i>.<name>`` (``layers.0.kernel``, ``layers.0.bias``,
  ``layers.3.running_mean``), in the run's dtype; ``np.load(path, allow_pickle=False)``.
* ``model.json``: ``format`` (``cnncli-npz``), ``format_version`` (:data:`NPZ_FORMAT_VERSION`),
  ``cnncli_version``, ``run``, ``checkpoint``, ``epoch``, ``input_shape`` ``[H, W, C]``,
  ``layout`` (``NHWC``), ``dtype``, ``normalization`` and ``class_names`` (as in
  ``data.json``), ``output`` (``{"name": "probabilities" | "output", "from_logits":
  "sigmoid" | "softmax" | null}``: apply that activation to the last layer's output), and
  ``layers``: per layer its ``index``, ``type``, ``config`` (the keyword arguments that
  build it, ``activation`` included), ``input_shape``, ``output_shape`` (without the
  batch axis), ``pads`` (conv and pooling: ``[top, bottom, left, right]``, resolved) and
  ``arrays`` (``{param: {"name": "layers.<i>.<param>", "shape": [...]}}``).

  The conventions a reader needs: arrays are NHWC; conv is cross-correlation with kernel
  ``(kh, kw, C_in, C_out)``, ``z[n,i,j,f] = b[f] + sum W[p,q,r,f] X_pad[n, s_h i + d_h p,
  s_w j + d_w q, r]``; max pooling pads with -inf, average pooling with zeros and divides
  by the real (non-padding) cells of each window unless ``count_include_pad``; flatten
  keeps (h, w, c) order; dense is ``x @ kernel + bias`` with kernel ``(D, U)``;
  batch_norm is ``(x - running_mean) / sqrt(running_var + epsilon) * gamma + beta`` over
  the last axis; dropout does nothing; an activation's formula is in
  ``cnncli/nn/activations/<name>.py``; the inputs are normalized as ``normalization`` says
  (``x / scale``, then for ``standardize`` ``(x - mean) / std`` per channel).

Nothing here prints; ``cnncli.cli.export`` does. Everything is built in memory and each
file written atomically, so a refused export leaves nothing behind.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cnncli import runs
from cnncli.data import normalization_of
from cnncli.errors import CheckpointError, CnnCliError
from cnncli.experiment import load_run
from cnncli.nn.activations import Activation, make_activation
from cnncli.nn.activations.gelu import _CUBIC_CLIP, _KAPPA, _SQRT_2_OVER_PI, _SQRT_HALF
from cnncli.nn.layers import ActivatedLayer, Layer
from cnncli.nn.registry import origin_of

#: The ONNX operator set the graph uses (Softmax on any axis: 13; nothing newer needed).
OPSET = 17
#: The IR version that goes with opset 17 (onnx's own table); onnxruntime >= 1.13 reads it.
IR_VERSION = 8
#: ``model.json``'s format version; a reader should refuse any other.
NPZ_FORMAT_VERSION = 1
FORMATS = ("onnx", "npz")
LAYOUTS = ("nhwc", "nchw")
#: NHWC -> NCHW and back, as Transpose permutations.
TO_NCHW = [0, 3, 1, 2]
TO_NHWC = [0, 2, 3, 1]


@dataclass
class Exported:
    """What an export wrote: the files, and what a reader of them should know."""

    format: str
    files: list[Path]
    input_name: str | None = None
    output_name: str | None = None
    #: The graph input's dimensions, ``"batch"`` first.
    input_dims: list = field(default_factory=list)
    output_dims: list = field(default_factory=list)
    layout: str = "NHWC"
    notes: list[str] = field(default_factory=list)
    #: ONNX: per layer, the graph's tensor that holds its output and that tensor's layout
    #: (``"nhwc"``/``"nchw"`` for 4-D, else None): to compare a converter layer by layer.
    layer_tensors: list[tuple[str, str | None]] = field(default_factory=list)


def check_options(fmt: str, layout: str = "nhwc", include_preprocessing: bool = False) -> None:
    """Refuse, in one line, a format or layout cnncli does not write."""
    if fmt not in FORMATS:
        raise CnnCliError(f"--format: expected onnx or npz; got {fmt!r}")
    if layout not in LAYOUTS:
        raise CnnCliError(f"--layout: expected nhwc or nchw; got {layout!r}")
    if fmt == "npz" and layout != "nhwc":
        raise CnnCliError("--layout nchw: the npz export keeps cnncli's NHWC arrays (model.json says so); "
                          "--layout applies to --format onnx")
    if fmt == "npz" and include_preprocessing:
        raise CnnCliError("--include-preprocessing applies to --format onnx; the npz export records the "
                          "normalization in model.json")


def export_run(run_dir: str | Path, *, fmt: str = "onnx", checkpoint: str = "best", out: str | Path | None = None,
               layout: str = "nhwc", include_preprocessing: bool = False) -> Exported:
    """``cnncli export``: :func:`export_onnx` or :func:`export_npz` of a run folder."""
    check_options(fmt, layout, include_preprocessing)
    if fmt == "npz":
        return export_npz(run_dir, checkpoint=checkpoint, out=out)
    return export_onnx(run_dir, checkpoint=checkpoint, out=out, layout=layout,
                       include_preprocessing=include_preprocessing)


# ------------------------------------------------------------------------ the run and paths
@dataclass
class TrainedRun:
    """A run's network with the checkpoint's weights, and what the export records of it
    (:func:`load_trained`; a network built in Python can be wrapped in one too, with
    ``info`` the contents of a ``data.json`` and ``meta`` a checkpoint's, or ``{}``)."""

    run_dir: Path
    checkpoint: str
    network: object
    loss: object
    info: dict
    meta: dict

    @property
    def normalization(self) -> dict:
        return normalization_of(self.info)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.get("class_names") or [])


def load_trained(run_dir: str | Path, checkpoint: str) -> TrainedRun:
    """The run's ``checkpoint`` (best or last), refused in one line when it was never written."""
    run_dir = Path(run_dir)
    path = runs.checkpoint_file(run_dir, checkpoint)  # refuses a name other than best or last
    if not path.is_file():
        other = "last" if checkpoint == "best" else "best"
        hint = (f"; --checkpoint {other} exists" if runs.checkpoint_file(run_dir, other).is_file()
                else "; the run stopped before writing any checkpoint (train it again)")
        raise CheckpointError(f"{path}: the run never wrote its {checkpoint} checkpoint{hint}")
    _, network, loss, info, meta = load_run(run_dir, checkpoint)
    return TrainedRun(run_dir, checkpoint, network, loss, info, meta)


def _output_file(run_dir: Path, out: str | Path | None, default_name: str, suffix: str) -> Path:
    """Where a one-file export goes, checked before anything is read: ``RUN_DIR/export/
    <default_name>`` (the caller makes ``export/``), an existing folder given by
    ``--out``, or a ``--out`` file whose folder exists (never made: a mistyped path should
    not grow folders)."""
    if out is None:
        return run_dir / "export" / default_name
    out = Path(out)
    if out.is_dir():
        return out / default_name
    if out.suffix.lower() != suffix:
        raise CnnCliError(f"--out: expected a {suffix} file or an existing folder; got {out}")
    if not out.parent.is_dir():
        raise CnnCliError(f"--out: the folder {out.parent} does not exist (create it first)")
    return out


def _output_folder(run_dir: Path, out: str | Path | None) -> Path:
    """The folder of the npz export, checked before anything is read: ``RUN_DIR/export``,
    or ``--out`` (the caller makes it, when its parent exists; never its parents)."""
    if out is None:
        return run_dir / "export"
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise CnnCliError(f"--out: {folder} is a file; the npz export writes a folder (weights.npz, model.json)")
    if not folder.parent.is_dir():
        raise CnnCliError(f"--out: the folder {folder.parent} does not exist (create it first)")
    return folder


def _output_meaning(trained: TrainedRun) -> tuple[str, Activation | None]:
    """(the output's name, the activation the graph applies after the last layer): a loss
    from logits turns the logits into probabilities as ``loss.probabilities`` does."""
    loss = trained.loss
    applied = make_activation(loss.fused_activation) if loss.from_logits and loss.fused_activation else None
    final = applied or trained.network.output_activation
    low, high = final.output_range or (-np.inf, np.inf)
    probabilities = final.sums_to_one or (low >= 0 and high <= 1)
    return ("probabilities" if probabilities else "output"), applied


def _describe_origin(component: object, run_dir: Path) -> str:
    origin = origin_of(type(component))
    if origin is None:
        return "a built-in of cnncli"
    path = Path(origin.path)
    try:
        shown = path.resolve().relative_to(run_dir.resolve())
    except ValueError:
        shown = path
    return f"from plugin {shown}"


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)  # a plugin's keyword of another kind: shown, not rebuilt


# ------------------------------------------------------------------------------- ONNX graph
def _onnx():
    """The ``onnx`` package, or one line saying how to install it."""
    try:
        import onnx
        import onnx.checker
        import onnx.numpy_helper
    except ImportError:
        raise CnnCliError("the ONNX export needs the onnx package: pip install 'cnncli[onnx]' (or "
                          "pip install onnx onnxruntime); --format npz needs nothing more") from None
    return onnx


class OnnxGraph:
    """The graph under construction, as converters (built-in or ``to_onnx``) see it.

    Attributes:
        layout: ``"nhwc"`` or ``"nchw"``: the layout of the current 4-D tensor. A
            converter receives its input in this layout and returns its output in it
            (or sets ``layout`` to say otherwise).
        rank: the rank of the converter's input, batch axis included (4 for images).
        where: the layer being converted (``layers[3] conv2d``), for messages.
    """

    def __init__(self, layout: str):
        self._onnx = _onnx()
        self.layout = layout
        self.rank = 4
        self.where = ""
        self.prefix = "input"
        self.nodes: list = []
        self.initializers: list = []
        self._taken: set[str] = {"input"}

    def fresh(self, hint: str) -> str:
        """A tensor or node name not used yet, from ``hint`` (``layers.0.kernel``)."""
        name, count = hint, 1
        while name in self._taken:
            name, count = f"{hint}_{count}", count + 1
        self._taken.add(name)
        return name

    def add_node(self, op_type: str, inputs: list[str], outputs: list[str] | None = None, **attributes):
        """Append the node ``op_type(*inputs)`` with ONNX ``attributes``; returns its output
        name (a new one unless ``outputs`` names them; a list when there are several)."""
        if outputs is None:
            outputs = [self.fresh(f"{self.prefix}/{op_type.lower()}")]
        else:
            self._taken.update(outputs)
        node = self._onnx.helper.make_node(op_type, list(inputs), list(outputs),
                                           name=self.fresh(f"{self.prefix}/{op_type}"), **attributes)
        self.nodes.append(node)
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def add_initializer(self, name_hint: str, array) -> str:
        """A constant tensor of the graph (floats stored as float32); returns its name,
        ``<layer prefix>.<name_hint>`` made unique."""
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        name = self.fresh(f"{self.prefix}.{name_hint}")
        self.initializers.append(self._onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def in_layout(self, name: str, layout: str) -> str:
        """``name`` in ``layout`` (a Transpose when the current 4-D layout differs); the
        graph's ``layout`` becomes ``layout``. Tensors of another rank pass unchanged."""
        if self.rank != 4 or layout == self.layout:
            return name
        perm = TO_NCHW if layout == "nchw" else TO_NHWC
        self.layout = layout
        return self.add_node("Transpose", [name], perm=perm)

    def channel_axis(self) -> int:
        """The axis that is cnncli's last (the channels of a 4-D tensor)."""
        return 1 if self.rank == 4 and self.layout == "nchw" else -1

    def channel_shape(self, channels: int) -> tuple[int, ...]:
        """The shape a per-channel constant broadcasts with: ``(C, 1, 1)`` in NCHW, else ``(C,)``."""
        return (channels, 1, 1) if self.rank == 4 and self.layout == "nchw" else (channels,)


# -- converters of the built-in layers: (graph, layer, input name) -> output name -------------
def _conv2d(graph: OnnxGraph, layer, x: str) -> str:
    x = graph.in_layout(x, "nchw")
    kernel = layer.params["kernel"].transpose(3, 2, 0, 1)  # HWIO (kh, kw, C, F) -> OIHW (F, C, kh, kw)
    inputs = [x, graph.add_initializer("kernel", kernel)]
    if layer.use_bias:
        inputs.append(graph.add_initializer("bias", layer.params["bias"]))
    top, bottom, left, right = layer.pads
    return graph.add_node("Conv", inputs, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                          dilations=list(layer.dilation), pads=[top, left, bottom, right])


def _pool_attributes(layer) -> dict:
    top, bottom, left, right = layer.pads
    return {"kernel_shape": list(layer.pool_size), "strides": list(layer.stride),
            "pads": [top, left, bottom, right]}


def _max_pool2d(graph: OnnxGraph, layer, x: str) -> str:
    # ONNX's MaxPool ignores its padding cells, as cnncli's -inf padding never wins.
    return graph.add_node("MaxPool", [graph.in_layout(x, "nchw")], **_pool_attributes(layer))


def _avg_pool2d(graph: OnnxGraph, layer, x: str) -> str:
    return graph.add_node("AveragePool", [graph.in_layout(x, "nchw")], **_pool_attributes(layer),
                          count_include_pad=int(layer.count_include_pad))


def _global_avg_pool2d(graph: OnnxGraph, layer, x: str) -> str:
    spatial = [2, 3] if graph.layout == "nchw" else [1, 2]  # either layout will do: no Transpose
    return graph.add_node("ReduceMean", [x], axes=spatial, keepdims=0)


def _flatten(graph: OnnxGraph, layer, x: str) -> str:
    if graph.rank == 2:
        return x  # (N, D) is flat already
    # cnncli flattens NHWC memory, feature (h, w, c) at (h W + w) C + c: the dense weights after it expect that.
    return graph.add_node("Flatten", [graph.in_layout(x, "nhwc")], axis=1)  # (N, H*W*C)


def _dense(graph: OnnxGraph, layer, x: str) -> str:
    # x is (N, D): cnncli's dense refuses any other input shape when the network is built.
    kernel = graph.add_initializer("kernel", layer.params["kernel"])  # (D, U)
    if not layer.use_bias:
        return graph.add_node("MatMul", [x, kernel])
    return graph.add_node("Gemm", [x, kernel, graph.add_initializer("bias", layer.params["bias"])])  # x W + b


def _dropout(graph: OnnxGraph, layer, x: str) -> str:
    return x  # inverted dropout: nothing at inference


def _batch_norm(graph: OnnxGraph, layer, x: str) -> str:
    x = graph.in_layout(x, "nchw")  # BatchNormalization's channels are axis 1: NCHW, or (N, D)
    inputs = [x] + [graph.add_initializer(name, source[name]) for name, source in
                    (("gamma", layer.params), ("beta", layer.params), ("running_mean", layer.buffers),
                     ("running_var", layer.buffers))]
    return graph.add_node("BatchNormalization", inputs, epsilon=float(layer.epsilon))


def _identity(graph: OnnxGraph, layer, x: str) -> str:
    return x  # the activation layer: its activation's nodes follow


#: Built-in layer types and their converters; an ActivatedLayer's activation is added after.
LAYER_CONVERTERS: dict[str, Callable[[OnnxGraph, Layer, str], str]] = {
    "conv2d": _conv2d, "max_pool2d": _max_pool2d, "avg_pool2d": _avg_pool2d,
    "global_avg_pool2d": _global_avg_pool2d, "flatten": _flatten, "dense": _dense, "dropout": _dropout,
    "batch_norm": _batch_norm, "activation": _identity,
}


# -- converters of the built-in activations: (graph, activation, input name) -> output name --------
def _scalar(graph: OnnxGraph, name: str, value: float) -> str:
    return graph.add_initializer(name, np.float32(value))


def _one_op(op_type: str, **attributes_of) -> Callable:
    def convert(graph: OnnxGraph, activation, z: str) -> str:
        return graph.add_node(op_type, [z], **{k: float(getattr(activation, attr))
                                               for k, attr in attributes_of.items()})

    return convert


def _softmax(graph: OnnxGraph, activation, z: str) -> str:
    return graph.add_node("Softmax", [z], axis=graph.channel_axis())  # cnncli's last axis


def _linear(graph: OnnxGraph, activation, z: str) -> str:
    return z


def _gelu(graph: OnnxGraph, activation, z: str) -> str:
    if activation.approximate == "tanh":
        # As cnncli computes it: z sigmoid(2u), u = sqrt(2/pi) (c + 0.044715 c^3), c = clip(z, +-100).
        clipped = graph.add_node("Clip", [z, _scalar(graph, "clip_low", -_CUBIC_CLIP),
                                          _scalar(graph, "clip_high", _CUBIC_CLIP)])
        cube = graph.add_node("Mul", [graph.add_node("Mul", [clipped, clipped]), clipped])
        inner = graph.add_node("Add", [clipped, graph.add_node("Mul", [cube, _scalar(graph, "kappa", _KAPPA)])])
        twice_u = graph.add_node("Mul", [inner, _scalar(graph, "twice_sqrt_2_over_pi", 2 * _SQRT_2_OVER_PI)])
        return graph.add_node("Mul", [z, graph.add_node("Sigmoid", [twice_u])])
    # Exact: z Phi(z) = 0.5 z (1 + erf(z / sqrt 2)).
    erf = graph.add_node("Erf", [graph.add_node("Mul", [z, _scalar(graph, "sqrt_half", _SQRT_HALF)])])
    phi = graph.add_node("Mul", [graph.add_node("Add", [erf, _scalar(graph, "one", 1.0)]),
                                 _scalar(graph, "half", 0.5)])
    return graph.add_node("Mul", [z, phi])


def _silu(graph: OnnxGraph, activation, z: str) -> str:
    return graph.add_node("Mul", [z, graph.add_node("Sigmoid", [z])])  # z sigmoid(z)


#: Built-in activations and their converters.
ACTIVATION_CONVERTERS: dict[str, Callable[[OnnxGraph, Activation, str], str]] = {
    "sigmoid": _one_op("Sigmoid"), "tanh": _one_op("Tanh"), "relu": _one_op("Relu"),
    "leaky_relu": _one_op("LeakyRelu", alpha="negative_slope"), "softplus": _one_op("Softplus"),
    "softmax": _softmax, "linear": _linear, "elu": _one_op("Elu", alpha="alpha"), "gelu": _gelu, "silu": _silu,
}


def _converter(component, table: dict, name: str, what: str, run_dir: Path):
    """(convert(graph, x), whether a plugin wrote it): the component's own ``to_onnx``, or
    the table's entry for a built-in; anything else is refused in one line."""
    if callable(getattr(component, "to_onnx", None)):
        return (lambda graph, x: component.to_onnx(graph, x)), True
    if origin_of(type(component)) is None and name in table:
        return (lambda graph, x: table[name](graph, component, x)), False
    raise CnnCliError(f"{what} ({_describe_origin(component, run_dir)}) has no ONNX converter: give its class a "
                      "method to_onnx(graph, input_name) -> output_name (see cnncli/export.py), or export with "
                      "--format npz")


def _run_converter(convert, graph: OnnxGraph, x: str, what: str, by_plugin: bool) -> str:
    if not by_plugin:
        return convert(graph, x)
    try:
        out = convert(graph, x)
    except CnnCliError:
        raise
    except Exception as err:  # the plugin's own code: said in one line, naming it
        raise CnnCliError(f"{what}: its to_onnx raised {type(err).__name__}: {err}") from None
    if not isinstance(out, str):
        raise CnnCliError(f"{what}: its to_onnx returned {out!r}; expected the name of its output tensor")
    return out


def onnx_model(trained: TrainedRun, *, layout: str = "nhwc", include_preprocessing: bool = False):
    """The ONNX ModelProto of a trained network (checked by ``onnx.checker``), and the
    :class:`Exported` description of it (no files yet)."""
    onnx = _onnx()
    network, run_dir = trained.network, trained.run_dir
    graph = OnnxGraph(layout)
    input_shape = tuple(network.input_shape)
    graph.rank = len(input_shape) + 1
    x = _preprocessing(graph, "input", trained.normalization, input_shape) if include_preprocessing else "input"
    x, layer_tensors, by_plugin = _convert_layers(graph, network, x, run_dir)
    output_name, applied = _output_meaning(trained)
    notes: list[str] = []
    if applied is not None:
        graph.where = graph.prefix = "output"
        convert, _ = _converter(applied, ACTIVATION_CONVERTERS, applied.name, f"loss from logits: {applied.name}",
                                run_dir)
        x = convert(graph, x)
        notes.append(f"the loss was computed from logits (from_logits: true): the graph applies {applied.name} "
                     "to the last layer's output, as cnncli's predict does")
    graph.prefix = "output"
    x = graph.in_layout(x, layout)  # a 4-D output leaves in the input's layout
    graph.add_node("Identity", [x], outputs=[output_name])
    if network.dtype != np.float32:
        notes.append(f"the run's {network.dtype} weights are cast to float32")

    def graph_dims(shape: tuple[int, ...]) -> list:  # (H, W, C) -> (C, H, W) for NCHW
        dims = list(shape) if layout == "nhwc" or len(shape) != 3 else [shape[2], shape[0], shape[1]]
        return ["batch", *dims]

    float32 = onnx.TensorProto.FLOAT
    model_graph = onnx.helper.make_graph(
        graph.nodes, f"cnncli-{run_dir.name}",
        [onnx.helper.make_tensor_value_info("input", float32, graph_dims(input_shape))],
        [onnx.helper.make_tensor_value_info(output_name, float32, graph_dims(tuple(network.output_shape)))],
        initializer=graph.initializers)
    import cnncli

    model = onnx.helper.make_model(model_graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   ir_version=IR_VERSION, producer_name="cnncli",
                                   producer_version=cnncli.__version__,
                                   doc_string=f"cnncli run {run_dir.name}, {trained.checkpoint} checkpoint")
    shown_layout = layout.upper() if len(input_shape) == 3 else "NHWC"
    onnx.helper.set_model_props(model, {
        "cnncli_version": cnncli.__version__, "run": run_dir.name, "checkpoint": trained.checkpoint,
        "epoch": json.dumps(trained.meta.get("epoch")), "class_names": json.dumps(trained.class_names),
        "input_shape": json.dumps(list(input_shape)), "layout": shown_layout,
        "normalization": json.dumps(trained.normalization),
        "preprocessing_included": json.dumps(include_preprocessing),
        "output": output_name, "output_from_logits": applied.name if applied is not None else "none",
        "dtype": "float32", "trained_dtype": str(network.dtype),
    })
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:  # onnx's ValidationError or InferenceError
        if not by_plugin:
            raise  # cnncli's own converters made a graph onnx refuses: a bug, with its traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CnnCliError(f"the graph with the plugins' to_onnx nodes does not pass onnx.checker: {first}") from None
    return model, Exported("onnx", [], "input", output_name, graph_dims(input_shape),
                           graph_dims(tuple(network.output_shape)), shown_layout, notes, layer_tensors)


def _convert_layers(graph: OnnxGraph, network, x: str, run_dir: Path):
    """Every layer's nodes, then its activation's: (the last tensor's name, per layer its
    tensor and layout, whether a plugin's ``to_onnx`` took part)."""
    layer_tensors: list[tuple[str, str | None]] = []
    by_plugin = False
    for index, layer in enumerate(network.layers):
        graph.where = f"layers[{index}] {layer.type_name}"
        graph.prefix = f"layers.{index}"
        graph.rank = len(layer.input_shape) + 1
        convert, plugin = _converter(layer, LAYER_CONVERTERS, layer.type_name, graph.where, run_dir)
        x = _run_converter(convert, graph, x, graph.where, plugin)
        by_plugin |= plugin
        graph.rank = len(layer.output_shape) + 1
        if isinstance(layer, ActivatedLayer) and layer.activation.name != "linear":
            act = layer.activation
            what = f"{graph.where}: activation {act.name}"
            convert, plugin = _converter(act, ACTIVATION_CONVERTERS, act.name, what, run_dir)
            x = _run_converter(convert, graph, x, what, plugin)
            by_plugin |= plugin
        layer_tensors.append((x, graph.layout if graph.rank == 4 else None))
    return x, layer_tensors, by_plugin


def _preprocessing(graph: OnnxGraph, x: str, norm: dict, input_shape: tuple[int, ...]) -> str:
    """The run's normalization as the graph's first nodes: raw pixel values in, what the
    network was trained on out (``apply_normalization``, in float32 as cnncli does)."""
    graph.prefix = "preprocessing"
    scale = float(norm.get("scale", 1.0))
    if scale != 1.0:
        x = graph.add_node("Div", [x, _scalar(graph, "scale", scale)])
    if norm.get("mode") == "standardize":
        per_channel = graph.channel_shape(input_shape[-1])
        mean = np.asarray(norm["mean"], dtype=np.float32).reshape(per_channel)
        std = np.asarray(norm["std"], dtype=np.float32).reshape(per_channel)
        x = graph.add_node("Sub", [x, graph.add_initializer("mean", mean)])
        x = graph.add_node("Div", [x, graph.add_initializer("std", std)])
    return x


def export_onnx(run_dir: str | Path, *, checkpoint: str = "best", out: str | Path | None = None,
                layout: str = "nhwc", include_preprocessing: bool = False) -> Exported:
    """Write the run's checkpoint as ONNX (``RUN_DIR/export/model.onnx`` by default);
    see the module docstring."""
    check_options("onnx", layout, include_preprocessing)
    _onnx()  # a missing package is said before anything is read
    path = _output_file(Path(run_dir), out, "model.onnx", ".onnx")
    trained = load_trained(run_dir, checkpoint)
    model, exported = onnx_model(trained, layout=layout, include_preprocessing=include_preprocessing)
    path.parent.mkdir(exist_ok=True)  # RUN_DIR/export; a --out folder exists already
    runs.atomic_write_bytes(path, model.SerializeToString())
    exported.files.append(path)
    return exported


# ------------------------------------------------------------------------------------- NPZ
def npz_description(trained: TrainedRun) -> tuple[dict[str, np.ndarray], dict]:
    """(the arrays of weights.npz, the contents of model.json); see the module docstring."""
    import cnncli

    network = trained.network
    arrays: dict[str, np.ndarray] = {}
    layers = []
    configs = network.config()  # each layer's keyword arguments (trainable: false on a frozen one)
    for index, layer in enumerate(network.layers):
        entry = {"index": index, "type": layer.type_name, "config": configs[index],
                 "input_shape": list(layer.input_shape), "output_shape": list(layer.output_shape)}
        if hasattr(layer, "pads") and layer.type_name in ("conv2d", "max_pool2d", "avg_pool2d"):
            entry["pads"] = [int(p) for p in layer.pads]  # (top, bottom, left, right)
        entry["arrays"] = {}
        for name, array in {**layer.params, **layer.buffers}.items():
            key = f"layers.{index}.{name}"
            arrays[key] = np.ascontiguousarray(array)
            entry["arrays"][name] = {"name": key, "shape": list(array.shape)}
        if origin_of(type(layer)) is not None:
            entry["origin"] = _describe_origin(layer, trained.run_dir)
        layers.append(entry)
    output_name, applied = _output_meaning(trained)
    description = {
        "format": "cnncli-npz", "format_version": NPZ_FORMAT_VERSION, "cnncli_version": cnncli.__version__,
        "run": trained.run_dir.name, "checkpoint": trained.checkpoint, "epoch": trained.meta.get("epoch"),
        "input_shape": list(network.input_shape), "layout": "NHWC", "dtype": str(network.dtype),
        "weights": "weights.npz", "normalization": trained.normalization, "class_names": trained.class_names,
        "output": {"name": output_name, "from_logits": applied.name if applied is not None else None},
        "layers": layers,
    }
    return arrays, description


def export_npz(run_dir: str | Path, *, checkpoint: str = "best", out: str | Path | None = None) -> Exported:
    """Write ``weights.npz`` and ``model.json`` (``RUN_DIR/export/`` by default); see the
    module docstring."""
    folder = _output_folder(Path(run_dir), out)
    trained = load_trained(run_dir, checkpoint)
    arrays, description = npz_description(trained)
    text = json.dumps(description, indent=2, default=_jsonable) + "\n"  # a failure here writes nothing
    folder.mkdir(exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    # weights first: model.json names them, so a reader never finds a description without its arrays
    runs.atomic_write_bytes(folder / "weights.npz", buffer.getvalue())
    runs.atomic_write_text(folder / "model.json", text)
    output = description["output"]["name"]
    notes = []
    if description["output"]["from_logits"]:
        notes.append(f"the loss was computed from logits: apply {description['output']['from_logits']} to the "
                     "last layer's output (model.json: output.from_logits)")
    return Exported("npz", [folder / "weights.npz", folder / "model.json"], None, output,
                    ["batch", *trained.network.input_shape], ["batch", *trained.network.output_shape], "NHWC", notes)
