"""The Layer interface and the LAYERS registry.

A layer is built eagerly: ``build(input_shape, rng, dtype)`` validates the shape it
receives, creates its parameters (:meth:`Layer.setup`) and returns its output shape, so
shape errors and parameter counts need no data. ``forward(x, training)`` caches what
``backward`` needs; ``backward(dy)`` fills ``grads`` (same keys as ``params``) and
returns ``dx``.

Shapes exclude the batch axis everywhere except in arrays: ``input_shape = (H, W, C)``
while ``x.shape = (N, H, W, C)``.

A layer also answers for itself what ``cnncli summary``, ``explain`` and the memory check
ask: its parameter arithmetic (:meth:`parameter_calculation`), FLOPs
(:meth:`forward_flops`, :meth:`backward_flops`), the values it keeps per example
(:meth:`values_per_example`) and its equations (:meth:`explain`). Each has a default, so a
new layer needs only ``setup``, ``forward`` and ``backward``.
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.nn.activations import Activation, make_activation
from cnncli.nn.describe import Equation, Explanation, batch_shape, docstring_notes
from cnncli.nn.errors import ConfigError, ShapeError
from cnncli.nn.initializers import initialize, make_initializer
from cnncli.nn.registry import Component, Registry, placeholder

LAYERS: Registry = Registry("layer")


def _trainable(path: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, "true or false", value)
    return value


LAYERS.common_keys["trainable"] = _trainable


class Layer(Component):
    """Base class of every layer."""

    registry = LAYERS
    name_attribute = "type_name"
    required_methods = (("forward",), ("backward",))
    #: Registry name, also the ``type`` key of a config entry.
    type_name = "layer"
    #: Whether ``Network.build`` runs a small forward pass to check that the output has
    #: the shape ``setup`` announced (on for layers from plugins; the built-ins are
    #: proven by their tests).
    check_output_shape = True
    #: ``trainable: false`` in a config (any layer, plugins' too) freezes the layer's
    #: parameters: the optimizer never sees them (no update, no state, no weight decay)
    #: and backward skips their gradients (``needs_param_grads``).
    trainable = True

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls, *args, **kwargs)
        # Set here, not in __init__, so that a subclass that forgets super().__init__() works.
        obj.params: dict[str, np.ndarray] = {}
        obj.grads: dict[str, np.ndarray] = {}
        #: Non-trainable state saved with the parameters (batch-norm running statistics).
        obj.buffers: dict[str, np.ndarray] = {}
        obj.input_shape = None
        obj.output_shape = None
        obj.dtype = np.dtype(np.float32)
        #: The network clears this on its first layer: nothing needs dL/d(input) there.
        obj.needs_input_grad = True
        obj._workspace = {}
        obj._rng_for_setup = None
        return obj

    def __init__(self) -> None:
        pass

    def workspace(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A scratch array kept between steps (uninitialized contents).

        Large per-step temporaries (im2col matrices, their gradients, padded inputs) are
        reused rather than allocated anew: fresh pages for tens of megabytes cost
        milliseconds every step. A workspace never leaves the layer that owns it except
        as the input gradient, which the layer before consumes at once.
        """
        buf = self._workspace.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._workspace[name] = np.empty(shape, dtype=dtype)
        return buf

    def growing_workspace(self, name: str, size: int, dtype) -> np.ndarray:
        """A flat scratch array of at least ``size`` values (its first ``size`` returned),
        kept between steps and only ever enlarged: a layer that alternates between a
        training batch and a larger or smaller evaluation batch does not allocate (and
        page-fault) its largest temporary anew at each switch."""
        buf = self._workspace.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self._workspace[name] = np.empty(size, dtype=dtype)
        return buf[:size]

    # -- construction -------------------------------------------------------------
    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator | None, dtype) -> tuple[int, ...]:
        """Check ``input_shape``, create the parameters (none are allocated when ``rng`` is
        None: see ``Network.build(allocate=False)``) and return the output shape."""
        self.input_shape = tuple(int(d) for d in input_shape)
        self.dtype = np.dtype(dtype)
        self.params, self.grads, self.buffers = {}, {}, {}
        shape = self.setup(self.input_shape, rng)
        if shape is None or not all(isinstance(d, (int, np.integer)) and d > 0 for d in tuple(shape)):
            raise self.shape_error(f"setup() returned {shape!r}; expected the output shape, a tuple of "
                                   "positive ints")
        self.output_shape = tuple(int(d) for d in shape)
        return self.output_shape

    def setup(self, input_shape: tuple[int, ...], rng: np.random.Generator | None) -> tuple[int, ...]:
        """Check the input shape, create the parameters (:meth:`add_parameter`), return
        the output shape. The default keeps the shape and creates nothing."""
        return input_shape

    def add_parameter(self, name: str, shape: tuple[int, ...], initializer: object,
                      rng: np.random.Generator | None, fan_in: int | None = None,
                      fan_out: int | None = None) -> np.ndarray:
        """Create the trainable array ``params[name]`` of ``shape`` with ``initializer``
        (a name such as ``"zeros"``, a ``{name: ...}`` mapping or an Initializer)."""
        self.params[name] = initialize(make_initializer(initializer, name), tuple(shape), rng, self.dtype,
                                       fan_in, fan_out)
        return self.params[name]

    def config(self) -> dict:
        """The keyword arguments that rebuild this layer (``type`` included; the network
        adds ``trainable: false`` for a frozen layer, whatever a subclass returns here)."""
        return {"type": self.type_name, **self.init_arguments()}

    @property
    def needs_param_grads(self) -> bool:
        """Whether backward must compute the parameters' gradients (not for a frozen layer)."""
        return self.trainable

    # -- computation --------------------------------------------------------------
    @placeholder
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    @placeholder
    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- what summary, explain and the memory check ask ---------------------------------
    def label(self) -> str:
        """How summary names this layer: ``dense (tanh)``."""
        return self.type_name

    def weight_count(self) -> int:
        """Trainable weights (kernels and batch-norm scales)."""
        return sum(v.size for k, v in self.params.items() if k not in ("bias", "beta"))

    def bias_count(self) -> int:
        """Trainable biases (and batch-norm shifts)."""
        return sum(v.size for k, v in self.params.items() if k in ("bias", "beta"))

    def parameter_calculation(self) -> str | None:
        """The parameter count as arithmetic (``[(5x5x3)+1]x64``), or None without
        parameters. The default adds up the parameter shapes."""
        if not self.params:
            return None
        return " + ".join("x".join(str(d) for d in p.shape) or "1" for p in self.params.values())

    def parameter_text(self) -> str:
        """``[(5x5x3)+1]x64 = 4,864``, or ``-`` without parameters."""
        calc = self.parameter_calculation()
        return "-" if calc is None else f"{calc} = {self.weight_count() + self.bias_count():,}"

    def forward_flops(self) -> int | None:
        """FLOPs of the forward pass for one example (a multiply-add is 2); None: not declared."""
        return None

    def backward_flops(self, input_grad: bool = True) -> int | None:
        """FLOPs of one example's backward pass (``input_grad``: dL/dx is computed too)."""
        return None

    def values_per_example(self) -> int:
        """Values a training step keeps per example for this layer (the memory estimate):
        by default its input and output, each twice (forward caches, backward gradients)."""
        return 2 * (math.prod(self.input_shape) + math.prod(self.output_shape))

    def workspace_bytes(self, batch: int, itemsize: int) -> int:
        """Bytes of scratch a training step at ``batch`` uses beyond :meth:`values_per_example`
        (a conv layer's im2col, bounded by its memory budget); 0 by default."""
        return 0

    def explain(self, index: int, first: bool) -> Explanation:
        """What ``cnncli explain`` prints for this layer (``first``: nothing before it)."""
        return Explanation(f"layers[{index}]: {self.type_name}", notes=docstring_notes(self),
                           forward=[Equation("y = f(x)", "y = f(x)", f"{batch_shape(self.input_shape)} -> "
                                                                    f"{batch_shape(self.output_shape)}")])

    def shape_error(self, message: str) -> ShapeError:
        return ShapeError(None, f"{self.type_name}: {message}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


class ActivatedLayer(Layer):
    """A layer followed by its own activation (``activation:`` in a config).

    Subclasses define ``forward_linear(x, training) -> z`` and ``backward_linear(dz) ->
    dx``. ``forward(x, training, logits=True)`` returns the pre-activation ``z`` instead
    of ``g(z)``, and ``backward(dz, logits=True)`` takes ``dL/dz``: the network uses this
    on its last layer when the loss is computed from logits (sigmoid + binary
    cross-entropy, softmax + categorical cross-entropy).
    """

    required_methods = (("forward_linear", "forward"), ("backward_linear", "backward"))

    def __init__(self, activation: object = None) -> None:
        super().__init__()
        self.activation: Activation = make_activation(activation)
        self._z: np.ndarray | None = None
        self._out: np.ndarray | None = None

    def forward(self, x, training=False, *, logits=False):
        z = self.forward_linear(x, training)
        if logits or self.activation.name == "linear":
            self._z = self._out = None
            return z
        self._out = self.activation.forward(z)
        self._z = None if self.activation.backward_from_output else z
        return self._out

    def backward(self, dy, *, logits=False):
        if logits or self.activation.name == "linear":
            dz = dy
        else:
            dz = self.activation.backward(self._out, dy, self._z)
        return self.backward_linear(dz)

    @placeholder
    def forward_linear(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    @placeholder
    def backward_linear(self, dz: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def activation_config(self):
        cfg = self.activation.config()
        return cfg["name"] if len(cfg) == 1 else cfg

    def config(self) -> dict:
        return {**super().config(), "activation": self.activation_config()}

    def label(self) -> str:
        act = self.activation.name
        return self.type_name if act == "linear" else f"{self.type_name} ({act})"

    def kept_z_values(self) -> int:
        """Values per example kept for the activation's backward pass beyond the output:
        ``z`` itself, when the activation cannot back-propagate from its output alone."""
        if self.activation.name == "linear" or self.activation.backward_from_output:
            return 0
        return math.prod(self.output_shape)

    def values_per_example(self) -> int:
        return super().values_per_example() + self.kept_z_values()

    def activation_backward_flops(self) -> int | None:
        """FLOPs of dL/da * g'(z) for one example's output."""
        per_element = self.activation.backward_flops
        return None if per_element is None else per_element * math.prod(self.output_shape)

    def linear_backward_flops(self, input_grad: bool) -> int | None:
        """FLOPs of the backward pass before the activation (weights, bias, input)."""
        return None

    def backward_flops(self, input_grad: bool = True) -> int | None:
        act, linear = self.activation_backward_flops(), self.linear_backward_flops(input_grad)
        return None if act is None or linear is None else act + linear
