"""The training and evaluation loops. No printing, no files: progress goes to callbacks.

``fit`` runs mini-batch epochs: shuffle (seeded), forward, backward, one optimizer update
per batch, then evaluation on the validation split. Reported losses are means per
example whatever the loss's reduction (a ``sum``-reduced batch loss is divided by the
batch size), so runs with either reduction compare.

Everything the loop needs to continue exactly where it stopped is in a
:class:`TrainState` (epochs and batches done, the shuffling generator's state at the
start of the current epoch, the partial sums of the epoch, the early-stopping
bookkeeping and the history). With the network's parameters, the optimizer's state and
the dropout generators, it makes a resumed run identical, bit for bit, to an
uninterrupted one: the epoch's order is drawn again from the saved generator state and
the batches already done are skipped.

A loss or gradient that is not finite is caught before it reaches the weights:
``on_nan: stop`` raises :class:`NonFiniteError` naming the epoch, step, learning rate and
the layer whose gradient went non-finite first (in backward order), the optimizer
checking the gradient in its own update pass (``Optimizer.step(check_finite=True)``, the
same single pass as ``Network.train_step``); ``skip_batch`` measures the gradient norm
first and drops the whole batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from cnncli.data import Split
from cnncli.errors import InputError
from cnncli.metrics import accuracy, predicted_classes
from cnncli.nn import parallel
from cnncli.nn.dynamics import Probe, layer_records, norm, parameter_dynamics
from cnncli.nn.losses import Loss
from cnncli.nn.network import Network
from cnncli.nn.optimizers import Optimizer


class NonFiniteError(InputError):
    """Training produced a NaN or infinite loss or gradient (a runtime failure: exit 1)."""

    exit_code = 1


class TrialPruned(Exception):
    """Raised by a callback after an epoch to stop a sweep's trial that its pruner judged
    hopeless: the run keeps every epoch and checkpoint it finished, with status ``pruned``."""


@dataclass
class EpochMetrics:
    epoch: int
    step: int
    lr: float
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    images_per_second: float
    skipped_batches: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainState:
    """Where training stands; JSON-serializable (see the module docstring)."""

    epoch: int = 0                      # epochs completed
    batch: int = 0                      # batches completed in epoch ``epoch + 1``
    epoch_rng_state: dict | None = None  # shuffle generator state when that epoch began
    epoch_lr: float | None = None        # learning rate of that epoch's first update
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    skipped: int = 0
    seconds: float = 0.0                # time spent in the current epoch before a stop
    best_epoch: int | None = None
    best_value: float | None = None
    waited: int = 0
    history: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        return cls(**d)


def monitored_metric(early_stopping: dict | None, has_validation: bool) -> str:
    """The metric that picks the best epoch: ``train.early_stopping.monitor`` (val_loss
    by default), its training counterpart when there is no validation data."""
    monitor = (early_stopping or {}).get("monitor", "val_loss")
    return monitor[4:] if not has_validation and monitor.startswith("val_") else monitor


class Callback:
    """Hooks of :func:`fit`; every method is optional."""

    def on_train_start(self, epochs: int, steps_per_epoch: int, state: TrainState) -> None: ...

    def on_epoch_start(self, epoch: int) -> None: ...

    def on_batch_end(self, epoch: int, batch: int, loss: float, accuracy: float, images_per_second: float) -> None: ...

    def on_step_end(self, state: TrainState) -> None: ...

    def on_epoch_end(self, metrics: EpochMetrics, improved: bool, state: TrainState) -> None: ...

    def on_dynamics(self, record: dict) -> None: ...

    def on_interrupt(self, state: TrainState) -> None: ...

    def on_train_end(self, result: "FitResult") -> None: ...


@dataclass
class DynamicsSchedule:
    """Which training steps record their dynamics (``train.dynamics``): every ``count``
    epochs (the epoch's last full batch, so every record sees a whole batch) or every
    ``count`` optimizer steps."""

    count: int = 1
    unit: str = "epochs"

    @classmethod
    def from_config(cls, value) -> "DynamicsSchedule | None":
        """From the resolved ``train.dynamics``: false, or ``{every: N}`` (epochs) or
        ``{every: "N steps"}``."""
        if not value:
            return None
        every = value["every"]
        if isinstance(every, int):
            return cls(every, "epochs")
        return cls(int(every.split()[0]), "steps")

    def due(self, epoch: int, batch: int, full_batches: int, step: int) -> bool:
        """Whether update number ``step`` (1-based), batch ``batch`` (0-based) of ``epoch``, records."""
        if self.unit == "steps":
            return step % self.count == 0
        return epoch % self.count == 0 and batch == max(full_batches, 1) - 1


def record_dynamics(network: Network, probe: Probe, before: dict, grad_norms: dict, *, epoch: int, batch: int,
                    step: int, lr: float, examples: int) -> dict:
    """One row of ``dynamics.jsonl``: where in training, and each layer's figures."""
    params = parameter_dynamics(before, network.trainable_parameters(), grad_norms)
    return {"epoch": epoch, "batch": batch, "step": step, "lr": lr, "examples": examples,
            "layers": layer_records(network, probe, params)}


@dataclass
class FitResult:
    history: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    monitor: str = "val_loss"
    stopped_early: bool = False
    interrupted: bool = False
    state: TrainState | None = None

    @property
    def best(self) -> EpochMetrics | None:
        for m in self.history:
            if m.epoch == self.best_epoch:
                return m
        return None


def targets_for(network: Network, labels: np.ndarray, loss: Loss | None = None) -> np.ndarray:
    """Loss targets from class labels: 0/1 floats for one output unit; class indices for
    the losses that take them (categorical cross-entropy, KL); one-hot rows for the
    others (mse, mae, huber on several outputs)."""
    if network.output_shape == (1,):
        return labels.astype(network.dtype)
    if loss is not None and not loss.takes_class_indices and len(network.output_shape) == 1:
        onehot = np.zeros((len(labels), network.output_shape[0]), dtype=network.dtype)
        onehot[np.arange(len(labels)), labels] = 1
        return onehot
    return labels


def evaluate(network: Network, loss: Loss, split: Split, batch_size: int = 256) -> tuple[float, float, np.ndarray]:
    """(mean loss per example, accuracy, predictions (N, ...)) with training=False."""
    outputs, total = [], 0.0
    fused = network.uses_logits(loss)
    for i in range(0, len(split), batch_size):
        xb, yb = split.x[i:i + batch_size], split.y[i:i + batch_size]
        out = network.forward(xb, training=False, logits=fused)
        value, _ = loss.value_and_grad(out, targets_for(network, yb, loss), from_logits=fused)
        total += value if loss.reduction == "sum" else value * len(yb)
        outputs.append(network.predictions(out, loss, fused))
    out = np.concatenate(outputs) if outputs else np.zeros((0,) + network.output_shape)
    n = max(len(split), 1)
    return total / n, accuracy(out, split.y), out


def first_nonfinite_layer(network: Network) -> str | None:
    """The layer (in backward order) whose parameter gradient first holds NaN or inf."""
    for i in range(len(network.layers) - 1, -1, -1):
        layer = network.layers[i]
        for key, g in layer.grads.items():
            if key in layer.params and not np.all(np.isfinite(g)):
                return f"layers[{i}] ({layer.type_name}) {key}"
    return None


def _apply_update(network: Network, optimizer: Optimizer, value: float, on_nan: str) -> bool:
    """The optimizer's update for the gradients just computed, unless the loss or a
    gradient is not finite (then False). ``stop`` checks the gradient inside the update
    pass; ``skip_batch`` measures the norm first, so a dropped batch leaves no trace."""
    if not math.isfinite(value):
        return False
    params, grads = network.trainable_parameters(), network.gradients()
    if on_nan == "skip_batch":
        norm = optimizer.gradient_norm(grads)
        if not math.isfinite(norm):
            return False
        return optimizer.step(params, grads, grad_norm=norm)
    return optimizer.step(params, grads, check_finite=True)


def fit(network: Network, loss: Loss, optimizer: Optimizer, train: Split, validation: Split | None, *,
        epochs: int, batch_size: int, shuffle: bool = True, rng: np.random.Generator | None = None,
        early_stopping: dict | None = None, callbacks: tuple[Callback, ...] = (),
        eval_batch_size: int = 256, on_nan: str = "stop", state: TrainState | None = None,
        should_stop: Callable[[], bool] | None = None, augment=None, augment_seed: int = 0,
        class_weights: np.ndarray | None = None, dynamics: DynamicsSchedule | None = None) -> FitResult:
    """Train until ``epochs`` epochs are done (continuing ``state`` if given).

    ``augment`` (a ``cnncli.data.augment.Augmenter``) changes each training batch with a
    generator made from (``augment_seed``, epoch, batch): the same batch gets the same
    changes in a resumed run, with no state to save. ``class_weights`` (one per class)
    weight each training example's loss by its class (validation is not weighted).
    ``dynamics`` says which steps record their training dynamics (``cnncli.nn.dynamics``),
    handed to the callbacks' ``on_dynamics``; recording does not change the step.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    state = state if state is not None else TrainState()
    n = len(train)
    steps_per_epoch = math.ceil(n / batch_size)
    monitor = monitored_metric(early_stopping, validation is not None and len(validation) > 0)
    mode_max = monitor.endswith("accuracy")
    min_delta = (early_stopping or {}).get("min_delta", 0.0)
    patience = (early_stopping or {}).get("patience")
    result = FitResult(monitor=monitor, history=[EpochMetrics(**h) for h in state.history], state=state,
                       best_epoch=state.best_epoch, best_value=state.best_value)
    for cb in callbacks:
        cb.on_train_start(epochs, steps_per_epoch, state)
    if patience is not None and state.waited >= patience:
        result.stopped_early = True
    while state.epoch < epochs and not result.stopped_early:
        epoch = state.epoch + 1
        if state.batch == 0:
            state.epoch_rng_state = rng.bit_generator.state
        else:  # resuming mid-epoch: draw this epoch's order again
            rng.bit_generator.state = state.epoch_rng_state
        for cb in callbacks:
            cb.on_epoch_start(epoch)
        order = rng.permutation(n) if shuffle else np.arange(n)
        if state.batch == 0:
            state.epoch_lr = optimizer.current_lr()
        start = time.perf_counter() - state.seconds
        for b in range(state.batch, steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            xb, yb = train.x[idx], train.y[idx]
            if augment is not None and augment.enabled:
                xb = augment(xb, np.random.default_rng([augment_seed, epoch, b]))
            # A skipped batch must leave no trace: its forward pass updates buffers (batch norm).
            kept = {k: v.copy() for k, v in network.buffers().items()} if on_nan == "skip_batch" else None
            # One engine scope for the whole step (see Network.train_step): BLAS is set to one
            # thread at most once per step, not once per phase.
            with parallel.engine():
                weights = class_weights[yb] if class_weights is not None else None
                probe = Probe() if dynamics is not None and dynamics.due(epoch, b, n // batch_size,
                                                                         optimizer.t + 1) else None
                value, out = network.loss_and_gradients(xb, targets_for(network, yb, loss), loss,
                                                        sample_weight=weights, probe=probe)
                if probe is not None:  # the gradients and weights as the update finds them
                    lr = optimizer.current_lr()
                    grad_norms = {k: norm(g) for k, g in network.gradients().items()}
                    before = {k: v.astype(np.float64) for k, v in network.trainable_parameters().items()}
                if _apply_update(network, optimizer, value, on_nan):
                    state.loss_sum += value if loss.reduction == "sum" else value * len(idx)
                    state.correct += int(np.sum(predicted_classes(out) == yb))
                    state.seen += len(idx)
                    if probe is not None:
                        record = record_dynamics(network, probe, before, grad_norms, epoch=epoch, batch=b + 1,
                                                 step=optimizer.t, lr=lr, examples=len(idx))
                        for cb in callbacks:
                            cb.on_dynamics(record)
                elif on_nan == "skip_batch":
                    state.skipped += 1
                    for k, v in network.buffers().items():
                        v[...] = kept[k]
                else:
                    layer = first_nonfinite_layer(network)
                    what = f"the gradient of {layer}" if layer and math.isfinite(value) else f"the loss ({value})"
                    raise NonFiniteError(f"{what} is not finite at epoch {epoch}, step {optimizer.t + 1} "
                                         f"(batch {b + 1} of {steps_per_epoch}), learning rate "
                                         f"{optimizer.current_lr():.6g}")
            state.batch = b + 1
            elapsed = time.perf_counter() - start
            state.seconds = elapsed
            seen = max(state.seen, 1)
            for cb in callbacks:
                cb.on_batch_end(epoch, b + 1, state.loss_sum / seen, state.correct / seen,
                                state.seen / max(elapsed, 1e-9))
                cb.on_step_end(state)
            if should_stop is not None and should_stop() and b + 1 < steps_per_epoch:
                result.interrupted = True
                for cb in callbacks:
                    cb.on_interrupt(state)
                return result
        seconds = time.perf_counter() - start
        val_loss = val_acc = None
        if validation is not None and len(validation):
            val_loss, val_acc, _ = evaluate(network, loss, validation, eval_batch_size)
        seen = state.seen or math.nan  # every batch skipped: no loss or accuracy (NaN), not 0
        metrics = EpochMetrics(epoch=epoch, step=optimizer.t, lr=state.epoch_lr, loss=state.loss_sum / seen,
                               accuracy=state.correct / seen, val_loss=val_loss, val_accuracy=val_acc,
                               seconds=seconds, images_per_second=n / max(seconds, 1e-9),
                               skipped_batches=state.skipped)
        result.history.append(metrics)
        # Before the callbacks: the checkpoint they write holds the schedule's new state.
        optimizer.schedule.epoch_end(metrics.as_dict())
        value = getattr(metrics, monitor)
        improved = value is not None and math.isfinite(value) and (state.best_value is None or (
            value > state.best_value + min_delta if mode_max else value < state.best_value - min_delta))
        if improved:
            state.best_epoch, state.best_value, state.waited = epoch, value, 0
        else:
            state.waited += 1
        result.best_epoch, result.best_value = state.best_epoch, state.best_value
        state.epoch, state.batch = epoch, 0
        state.loss_sum, state.correct, state.seen, state.skipped, state.seconds = 0.0, 0, 0, 0, 0.0
        state.history.append(metrics.as_dict())
        if patience is not None and state.waited >= patience:
            result.stopped_early = True
        for cb in callbacks:
            cb.on_epoch_end(metrics, improved, state)
        if should_stop is not None and should_stop() and state.epoch < epochs and not result.stopped_early:
            result.interrupted = True
            for cb in callbacks:
                cb.on_interrupt(state)
            return result
    for cb in callbacks:
        cb.on_train_end(result)
    return result

