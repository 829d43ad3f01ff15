"""The sequential network: build eagerly, forward, backward, parameters and state.

>>> from cnncli.nn import Network
>>> net = Network([
...     {"type": "conv2d", "filters": 8, "kernel_size": 3, "activation": "relu"},
...     {"type": "max_pool2d", "pool_size": 2},
...     {"type": "flatten"},
...     {"type": "dense", "units": 1, "activation": "sigmoid"},
... ]).build((8, 8, 3), seed=0)
>>> net.output_shape
(1,)

Parameters are named ``layers.<index>.<name>`` (``layers.0.kernel``, ``layers.0.bias``,
``layers.3.gamma``); batch-norm running statistics are buffers with the same naming.
"""

from __future__ import annotations

import contextlib

import numpy as np

from cnncli.errors import CheckpointError, ConfigError, ShapeError
from cnncli.nn import parallel
from cnncli.nn.activations import Linear
from cnncli.nn.layers import LAYERS, ActivatedLayer, Layer
from cnncli.nn.losses import Loss
from cnncli.nn.optimizers import Optimizer
from cnncli.registry import construct

DTYPES = {"float32": np.float32, "float64": np.float64}


class Network:
    """A stack of layers applied in order."""

    def __init__(self, layers: list[Layer | dict]):
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ConfigError("layers", "a non-empty list of layers", layers)
        self.layers: list[Layer] = []
        for i, spec in enumerate(layers):
            layer = spec if isinstance(spec, Layer) else construct(LAYERS, spec, f"layers[{i}]", key="type")
            self.layers.append(layer)
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        self.dtype = np.dtype(np.float32)
        self.seed: int | None = None

    # -- construction ---------------------------------------------------------------
    def build(self, input_shape, seed: int | np.random.Generator | None = 0, dtype="float32", *,
              allocate: bool = True) -> "Network":
        """Create every parameter now, from a seeded generator; check every shape.

        Raises ShapeError naming the layer index when a layer cannot take its input.
        ``allocate=False`` checks shapes and sizes only: parameters are zero-strided
        placeholders that take no memory, so a size estimate can come before allocation.
        """
        shape = tuple(input_shape)
        if not shape or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
            raise ConfigError("input_shape", "a list of positive ints such as [28, 28, 3]", list(shape))
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ConfigError("dtype", "float32 or float64", dtype)
            dtype = DTYPES[dtype]
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ConfigError("dtype", "float32 or float64", str(self.dtype))
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        if not allocate:
            rng = None
        self.seed = None if isinstance(seed, np.random.Generator) else seed
        self.input_shape = tuple(int(d) for d in shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.build(shape, rng, self.dtype)
            except ShapeError as err:
                raise ShapeError(i, err.message) from None
        self.output_shape = tuple(shape)
        self._fuse_pooling()
        return self

    def _fuse_pooling(self) -> None:
        """Let max pooling apply the monotonic activation of the layer before it.

        ``maxpool(g(z)) = g(maxpool(z))`` for non-decreasing ``g``, so the activation and
        its derivative run on the pooled values only. The network computes the same
        function; only the order of two operations changes.
        """
        from cnncli.nn.layers import MaxPool2D

        from cnncli.nn.layers import Conv2D

        for before, pool in zip(self.layers, self.layers[1:]):
            if not isinstance(pool, MaxPool2D):
                continue
            if (isinstance(before, ActivatedLayer) and not isinstance(before.activation, Linear)
                    and before.activation.monotonic):
                before.activation_deferred = True
                pool.post_activation = before.activation
            # A pooling that tiles its input exactly (stride = pool size, no padding) lets the
            # conv before it emit rows grouped by window offset: the pooling then reads
            # contiguous blocks instead of strided views, forward and backward.
            if (isinstance(before, Conv2D) and (before.activation_deferred or isinstance(before.activation, Linear))
                    and pool.stride == pool.pool_size and not any(pool.pads)
                    and before.out_hw[0] % pool.pool_size[0] == 0 and before.out_hw[1] % pool.pool_size[1] == 0
                    and pool.out_hw == (before.out_hw[0] // pool.pool_size[0],
                                        before.out_hw[1] // pool.pool_size[1])):
                before.blocks = pool.pool_size
                pool.blocked_input = True

    @contextlib.contextmanager
    def unfused(self):
        """Run the layers as written (activation, then pooling; NHWC between every pair),
        for code that looks at each layer's output, such as feature-map pictures."""
        saved = [(l, getattr(l, "activation_deferred", None), getattr(l, "blocks", None),
                  getattr(l, "post_activation", None), getattr(l, "blocked_input", None)) for l in self.layers]
        for layer in self.layers:
            for attr, off in (("activation_deferred", False), ("blocks", None), ("post_activation", None),
                              ("blocked_input", False)):
                if hasattr(layer, attr):
                    setattr(layer, attr, off)
        try:
            yield self
        finally:
            for layer, deferred, blocks, post, blocked in saved:
                for attr, value in (("activation_deferred", deferred), ("blocks", blocks),
                                    ("post_activation", post), ("blocked_input", blocked)):
                    if value is not None:
                        setattr(layer, attr, value)

    @property
    def output_activation(self) -> str | None:
        """Name of the last layer's activation (None when it ends without one)."""
        last = self.layers[-1]
        if isinstance(last, ActivatedLayer) and not isinstance(last.activation, Linear):
            return last.activation.name
        return None

    def config(self) -> list[dict]:
        return [layer.config() for layer in self.layers]

    # -- computation ----------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False, *, logits: bool = False) -> np.ndarray:
        """x (N, *input_shape) -> (N, *output_shape).

        ``logits=True`` leaves out the last layer's activation (returns its ``z``).
        """
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        last = len(self.layers) - 1
        with parallel.engine():
            for i, layer in enumerate(self.layers):
                if i == last and logits and isinstance(layer, ActivatedLayer):
                    x = layer.forward(x, training, logits=True)
                else:
                    x = layer.forward(x, training)
        return x

    def backward(self, dy: np.ndarray, *, logits: bool = False, input_grad: bool = False):
        """Back-propagate dL/d(output) (dL/dz of the last layer with ``logits``).

        Fills every layer's ``grads``; returns dL/dx when ``input_grad`` (otherwise the
        first layer skips that product and None is returned).
        """
        self.layers[0].needs_input_grad = input_grad
        last = len(self.layers) - 1
        with parallel.engine():
            for i in range(last, -1, -1):
                layer = self.layers[i]
                if i == last and logits and isinstance(layer, ActivatedLayer):
                    dy = layer.backward(dy, logits=True)
                else:
                    dy = layer.backward(dy)
        # The first layer's input gradient may live in its reusable workspace: hand out a copy.
        return dy.copy() if input_grad else None

    def uses_logits(self, loss: Loss) -> bool:
        """Whether ``loss`` is computed from the last layer's pre-activation."""
        act = self.output_activation
        return act is not None and act == loss.fused_activation

    def loss_and_gradients(self, x: np.ndarray, y: np.ndarray, loss: Loss, *, training: bool = True,
                           input_grad: bool = False):
        """One forward and backward pass: returns (loss value, predictions[, dL/dx]).

        Sigmoid + binary cross-entropy and softmax + categorical cross-entropy (or KL)
        are differentiated through the fused pair, from the logits.
        """
        fused = self.uses_logits(loss)
        with parallel.engine():  # one scope: forward and backward share BLAS's setting
            out = self.forward(x, training, logits=fused)
            value, dout = loss.value_and_grad(out, y, from_logits=fused)
            dx = self.backward(dout, logits=fused, input_grad=input_grad)
        if fused:
            out = self.layers[-1].activation.forward(out)
        return (value, out, dx) if input_grad else (value, out)

    def train_step(self, x, y, loss: Loss, optimizer: Optimizer):
        """Forward, backward and one optimizer update; returns (loss value, predictions)."""
        with parallel.engine():
            value, out = self.loss_and_gradients(x, y, loss, training=True)
            optimizer.step(self.parameters(), self.gradients())
        return value, out

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Inference in batches (training=False)."""
        if len(x) == 0:  # no batch to run: an empty (0, *output_shape) result
            return np.zeros((0, *self.output_shape), dtype=self.dtype)
        outs = [self.forward(x[i:i + batch_size], training=False) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs, axis=0)

    # -- parameters and state ---------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """Trainable arrays by name (the arrays themselves: optimizers update them in place)."""
        return {f"layers.{i}.{k}": v for i, l in enumerate(self.layers) for k, v in l.params.items()}

    def gradients(self) -> dict[str, np.ndarray]:
        """dL/d(parameter) from the last backward pass, keyed like :meth:`parameters`."""
        return {f"layers.{i}.{k}": l.grads[k] for i, l in enumerate(self.layers) for k in l.params}

    def buffers(self) -> dict[str, np.ndarray]:
        return {f"layers.{i}.{k}": v for i, l in enumerate(self.layers) for k, v in l.buffers.items()}

    def parameter_count(self) -> int:
        return sum(v.size for v in self.parameters().values())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer: plain arrays for ``np.savez``."""
        return {k: v.copy() for k, v in {**self.parameters(), **self.buffers()}.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the network; keys and shapes must match exactly."""
        own = {**self.parameters(), **self.buffers()}
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise CheckpointError(f"state does not fit the network: missing {missing}, unexpected {extra}")
        for key, target in own.items():
            value = np.asarray(state[key])
            if value.shape != target.shape:
                raise CheckpointError(f"{key}: shape {value.shape} does not fit the network's {target.shape}")
            target[...] = value

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(l) for l in self.layers)
        return f"Network([\n  {inner}\n])"
