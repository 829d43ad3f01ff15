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

``layers`` are the layers as configured; ``steps`` is how they run (``cnncli.nn.fusion``:
a conv and the max pooling after it may run as one step).
"""

from __future__ import annotations

import numpy as np

from cnncli.nn import parallel
from cnncli.nn.activations import Activation, make_activation
from cnncli.nn.dynamics import Probe
from cnncli.nn.errors import CheckpointError, ConfigError, ShapeError
from cnncli.nn.fusion import Step, plan
from cnncli.nn.layers import LAYERS, ActivatedLayer, Layer
from cnncli.nn.losses import Loss
from cnncli.nn.optimizers import Optimizer
from cnncli.nn.registry import construct

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
        self.steps: list[Step] = []
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        self.dtype = np.dtype(np.float32)
        self.seed: int | None = None

    # -- construction ---------------------------------------------------------------
    def build(self, input_shape, seed: int | np.random.Generator | None = 0, dtype="float32", *,
              allocate: bool = True, fuse: bool = True) -> "Network":
        """Create every parameter now, from a seeded generator; check every shape.

        Raises ShapeError naming the layer index when a layer cannot take its input (or,
        for a layer that asks for it, when a forward pass of two examples does not give
        the output shape it announced). ``allocate=False`` checks shapes and sizes only:
        parameters are zero-strided placeholders that take no memory, so a size estimate
        can come before allocation. ``fuse=False`` runs every layer as written.
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
                out = layer.build(shape, rng, self.dtype)
                if allocate and layer.check_output_shape:
                    _probe(layer, shape, out, self.dtype)
            except ShapeError as err:
                raise ShapeError(i, err.message) from None
            shape = out
        self.output_shape = tuple(shape)
        self.steps = plan(self.layers, fuse)
        return self

    @property
    def output_activation(self) -> Activation:
        """The last layer's activation (``linear`` when it has none)."""
        last = self.layers[-1]
        return last.activation if isinstance(last, ActivatedLayer) else make_activation(None)

    def config(self) -> list[dict]:
        """Each layer's keyword arguments, with ``trainable: false`` on a frozen one."""
        return [{**layer.config(), **({} if layer.trainable else {"trainable": False})} for layer in self.layers]

    # -- computation ----------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False, *, logits: bool = False,
                probe: Probe | None = None) -> np.ndarray:
        """x (N, *input_shape) -> (N, *output_shape).

        ``logits=True`` leaves out the last layer's activation (returns its ``z``).
        ``probe`` (``cnncli.nn.dynamics``) sees each step's output.
        """
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        last = len(self.steps) - 1
        with parallel.engine():
            for i, step in enumerate(self.steps):
                step.observed = probe is not None
                x = step.forward(x, training, logits=logits and i == last)
                if probe is not None:
                    probe.forward(step, x, logits and i == last)
        return x

    def backward(self, dy: np.ndarray, *, logits: bool = False, input_grad: bool = False,
                 probe: Probe | None = None):
        """Back-propagate dL/d(output) (dL/dz of the last layer with ``logits``).

        Fills every layer's ``grads``; returns dL/dx when ``input_grad`` (otherwise the
        first layer skips that product and None is returned). ``probe`` sees the delta
        that reaches each step.
        """
        # Below the lowest layer with trainable parameters nothing needs a gradient (frozen
        # layers at the bottom of a fine-tuned network): the pass stops there.
        lowest = 0 if input_grad else self.lowest_trainable()
        for j, layer in enumerate(self.layers):
            layer.needs_input_grad = input_grad or j > lowest
        last = len(self.steps) - 1
        with parallel.engine():
            for i in range(last, -1, -1):
                if max(self.steps[i].indices) < lowest:
                    break
                if probe is not None:
                    probe.backward(self.steps[i], dy)
                dy = self.steps[i].backward(dy, logits=logits and i == last)
        # The first layer's input gradient may live in its reusable workspace: hand out a copy.
        return dy.copy() if input_grad else None

    def layer_outputs(self, x: np.ndarray, training: bool = False) -> list[np.ndarray]:
        """Every layer's output, running the layers as written (no fused steps): for
        pictures of feature maps and for gradient checks."""
        outputs = []
        a = x.astype(self.dtype, copy=False)
        for layer in self.layers:
            a = layer.forward(a, training)
            outputs.append(a)
        return outputs

    def uses_logits(self, loss: Loss) -> bool:
        """Whether ``loss`` is differentiated together with the last layer's activation
        (sigmoid + binary cross-entropy, softmax + categorical cross-entropy or KL)."""
        return (not loss.from_logits and loss.fused_activation is not None
                and self.output_activation.name == loss.fused_activation)

    def check_loss(self, loss: Loss) -> None:
        """Refuse a loss that cannot learn from this network's output (ConfigError)."""
        loss.check_output(self.output_activation, self.output_shape)

    def predictions(self, out: np.ndarray, loss: Loss | None, fused: bool = False) -> np.ndarray:
        """What the outputs mean: ``fused``: ``out`` is the last layer's ``z``; a loss from
        logits turns the network's output into probabilities."""
        if fused:
            return self.layers[-1].activation.forward(out)
        return loss.probabilities(out) if loss is not None else out

    def loss_and_gradients(self, x: np.ndarray, y: np.ndarray, loss: Loss, *, training: bool = True,
                           input_grad: bool = False, sample_weight: np.ndarray | None = None,
                           probe: Probe | None = None):
        """One forward and backward pass: returns (loss value, predictions[, dL/dx]).

        Sigmoid + binary cross-entropy and softmax + categorical cross-entropy (or KL)
        are differentiated through the fused pair, from the logits. ``sample_weight``
        (N,) weights each example's loss (``Loss.value_and_grad``). ``probe``
        (``cnncli.nn.dynamics.Probe``) records each layer's delta and activation.
        """
        fused = self.uses_logits(loss)
        with parallel.engine():  # one scope: forward and backward share BLAS's setting
            out = self.forward(x, training, logits=fused, probe=probe)
            value, dout = loss.value_and_grad(out, y, from_logits=fused, sample_weight=sample_weight)
            dx = self.backward(dout, logits=fused, input_grad=input_grad, probe=probe)
        out = self.predictions(out, loss, fused)
        return (value, out, dx) if input_grad else (value, out)

    def train_step(self, x, y, loss: Loss, optimizer: Optimizer):
        """Forward, backward and one optimizer update; returns (loss value, predictions)."""
        with parallel.engine():
            value, out = self.loss_and_gradients(x, y, loss, training=True)
            optimizer.step(self.trainable_parameters(), self.gradients())
        return value, out

    def predict(self, x: np.ndarray, batch_size: int = 256, loss: Loss | None = None) -> np.ndarray:
        """Inference in batches (training=False); with a loss from logits, probabilities."""
        if len(x) == 0:  # no batch to run: an empty (0, *output_shape) result
            return np.zeros((0, *self.output_shape), dtype=self.dtype)
        outs = [self.forward(x[i:i + batch_size], training=False) for i in range(0, len(x), batch_size)]
        out = np.concatenate(outs, axis=0)
        return loss.probabilities(out) if loss is not None else out

    # -- parameters and state ---------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """Every parameter by name, frozen layers' too (the arrays themselves)."""
        return {f"layers.{i}.{k}": v for i, l in enumerate(self.layers) for k, v in l.params.items()}

    def trainable_parameters(self) -> dict[str, np.ndarray]:
        """The parameters an optimizer updates (in place): those of layers not frozen with
        ``trainable: false``."""
        return {f"layers.{i}.{k}": v for i, l in enumerate(self.layers) if l.trainable for k, v in l.params.items()}

    def gradients(self) -> dict[str, np.ndarray]:
        """dL/d(parameter) from the last backward pass, keyed like :meth:`trainable_parameters`."""
        return {f"layers.{i}.{k}": l.grads[k] for i, l in enumerate(self.layers) if l.trainable for k in l.params}

    def lowest_trainable(self) -> int:
        """Index of the lowest layer with trainable parameters (the number of layers when
        there is none)."""
        return next((i for i, l in enumerate(self.layers) if l.trainable and l.params), len(self.layers))

    def buffers(self) -> dict[str, np.ndarray]:
        return {f"layers.{i}.{k}": v for i, l in enumerate(self.layers) for k, v in l.buffers.items()}

    def parameter_count(self) -> int:
        return sum(v.size for v in self.parameters().values())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer: plain arrays for ``np.savez``."""
        return {k: v.copy() for k, v in {**self.parameters(), **self.buffers()}.items()}

    def check_state(self, state: dict[str, np.ndarray]) -> None:
        """Refuse (CheckpointError) a state whose keys or shapes are not this network's."""
        own = {**self.parameters(), **self.buffers()}
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise CheckpointError(f"state does not fit the network: missing {missing}, unexpected {extra}")
        for key, target in own.items():
            shape = np.shape(state[key])
            if shape != target.shape:
                raise CheckpointError(f"{key}: shape {shape} does not fit the network's {target.shape}")

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the network; keys and shapes must match exactly."""
        self.check_state(state)
        for key, target in {**self.parameters(), **self.buffers()}.items():
            target[...] = np.asarray(state[key])

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(l) for l in self.layers)
        return f"Network([\n  {inner}\n])"


def _probe(layer: Layer, input_shape: tuple[int, ...], output_shape: tuple[int, ...], dtype) -> None:
    """Run ``layer`` on two random examples: its output must have the shape it announced."""
    x = np.random.default_rng(0).standard_normal((2, *input_shape)).astype(dtype)
    try:
        y = layer.forward(x, False)
    except Exception as err:  # a plugin's bug, reported as a shape problem of this layer
        raise layer.shape_error(f"forward failed on a probe batch of shape {x.shape}: "
                                f"{type(err).__name__}: {err}") from None
    if np.shape(y) != (2, *output_shape):
        raise layer.shape_error(f"forward returned an array of shape {np.shape(y)} for a batch of shape {x.shape}; "
                                f"setup() announced the output shape {output_shape}, so expected "
                                f"{(2, *output_shape)}")
