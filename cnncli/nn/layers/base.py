"""The Layer interface and the LAYERS registry.

A layer is built eagerly: ``build(input_shape, rng, dtype)`` validates the shape it
receives, allocates its parameters and returns its output shape, so shape errors and
parameter counts need no data. ``forward(x, training)`` caches what ``backward`` needs;
``backward(dy)`` fills ``grads`` (same keys as ``params``) and returns ``dx``.

Shapes exclude the batch axis everywhere except in arrays: ``input_shape = (H, W, C)``
while ``x.shape = (N, H, W, C)``.
"""

from __future__ import annotations

import numpy as np

from cnncli.errors import ShapeError
from cnncli.nn.activations import Activation, Linear, make_activation
from cnncli.registry import Registry, allowed_keys

LAYERS: Registry = Registry("layer")


class Layer:
    """Base class of every layer."""

    #: Registry name, also the ``type`` key of a config entry.
    type_name = "layer"

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        #: Non-trainable state saved with the parameters (batch-norm running statistics).
        self.buffers: dict[str, np.ndarray] = {}
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        self.dtype = np.dtype(np.float32)
        #: The network clears this on its first layer: nothing needs dL/d(input) there.
        self.needs_input_grad = True
        self._workspace: dict[str, np.ndarray] = {}

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

    # -- construction -------------------------------------------------------------
    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype) -> tuple[int, ...]:
        self.input_shape = tuple(int(d) for d in input_shape)
        self.dtype = np.dtype(dtype)
        self.output_shape = tuple(self._build(self.input_shape, rng))
        return self.output_shape

    def _build(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
        return input_shape

    def config(self) -> dict:
        """The keyword arguments that rebuild this layer (``type`` included)."""
        return {"type": self.type_name}

    # -- computation --------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- bookkeeping used by summaries ------------------------------------------------
    def weight_count(self) -> int:
        """Trainable weights (kernels and batch-norm scales)."""
        return sum(v.size for k, v in self.params.items() if k != "bias" and k != "beta")

    def bias_count(self) -> int:
        """Trainable biases (and batch-norm shifts)."""
        return sum(v.size for k, v in self.params.items() if k in ("bias", "beta"))

    def forward_flops(self) -> int:
        """Floating-point operations of the forward pass for one example (a multiply-add is 2)."""
        return 0

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"

    def _shape_error(self, message: str) -> ShapeError:
        return ShapeError(None, f"{self.type_name}: {message}")


class ActivatedLayer(Layer):
    """A layer followed by its own activation (``activation:`` in a config).

    ``forward(x, training, logits=True)`` returns the pre-activation ``z`` instead of
    ``g(z)``, and ``backward(dz, logits=True)`` takes ``dL/dz``: the network uses this
    on its last layer when the loss is computed from logits (sigmoid + binary
    cross-entropy, softmax + categorical cross-entropy).
    """

    def __init__(self, activation: object = None) -> None:
        super().__init__()
        self.activation: Activation = make_activation(activation)
        self._out: np.ndarray | None = None
        #: Set by the network when a max-pool layer follows and applies this layer's
        #: (monotonic) activation after pooling: see ``Network.build``.
        self.activation_deferred = False

    def forward(self, x, training=False, *, logits=False):
        z = self.forward_linear(x, training)
        if logits or self.activation_deferred or isinstance(self.activation, Linear):
            self._out = None
            return z
        self._out = self.activation.forward(z)
        return self._out

    def backward(self, dy, *, logits=False):
        if logits or self.activation_deferred or isinstance(self.activation, Linear):
            dz = dy
        else:
            dz = self.activation.backward(self._out, dy)
        return self.backward_linear(dz)

    def forward_linear(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward_linear(self, dz: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def activation_config(self):
        cfg = self.activation.config()
        return cfg["name"] if len(cfg) == 1 else cfg


@LAYERS.register("activation")
class ActivationLayer(ActivatedLayer):
    """An activation on its own: ``{type: activation, activation: relu}``."""

    type_name = "activation"

    def __init__(self, *, activation: object = "relu") -> None:
        super().__init__(activation)

    def forward_linear(self, x, training):
        return x

    def backward_linear(self, dz):
        return dz

    def config(self):
        return {"type": self.type_name, "activation": self.activation_config()}


def _register_activation_shortcuts() -> None:
    """``{type: relu}`` works like ``{type: activation, activation: relu}``."""
    from cnncli.nn.activations import ACTIVATIONS

    for name, cls in ACTIVATIONS.items():
        def make(_name=name, **kwargs):
            return ActivationLayer(activation={"name": _name, **kwargs})
        make.allowed_keys, make.required_keys = allowed_keys(cls)
        LAYERS.register(name)(make)


_register_activation_shortcuts()
