"""The training and evaluation loops. No printing, no files: progress goes to callbacks.

``fit`` runs mini-batch epochs: shuffle (seeded), forward, backward, one optimizer
update per batch, then evaluation on the validation split. Reported losses are means
per example whatever the loss's reduction (a ``sum``-reduced batch loss is divided by
the batch size), so runs with either reduction compare.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from cnncli.data import Split
from cnncli.metrics import accuracy
from cnncli.nn.losses import Loss
from cnncli.nn.network import Network
from cnncli.nn.optimizers import Optimizer


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

    def as_dict(self) -> dict:
        return asdict(self)


class Callback:
    """Hooks of :func:`fit`; every method is optional."""

    def on_train_start(self, epochs: int, steps_per_epoch: int) -> None: ...

    def on_epoch_start(self, epoch: int) -> None: ...

    def on_batch_end(self, epoch: int, batch: int, loss: float, accuracy: float, images_per_second: float) -> None: ...

    def on_epoch_end(self, metrics: EpochMetrics, improved: bool) -> None: ...

    def on_train_end(self, result: "FitResult") -> None: ...


@dataclass
class FitResult:
    history: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    monitor: str = "val_loss"
    stopped_early: bool = False

    @property
    def best(self) -> EpochMetrics | None:
        for m in self.history:
            if m.epoch == self.best_epoch:
                return m
        return None


def targets_for(network: Network, labels: np.ndarray) -> np.ndarray:
    """Loss targets: 0/1 floats for one output unit, class indices otherwise."""
    if network.output_shape == (1,):
        return labels.astype(network.dtype)
    return labels


def evaluate(network: Network, loss: Loss, split: Split, batch_size: int = 256) -> tuple[float, float, np.ndarray]:
    """(mean loss per example, accuracy, outputs (N, ...)) with training=False."""
    outputs, total = [], 0.0
    for i in range(0, len(split), batch_size):
        xb, yb = split.x[i:i + batch_size], split.y[i:i + batch_size]
        fused = network.uses_logits(loss)
        out = network.forward(xb, training=False, logits=fused)
        value, _ = loss.value_and_grad(out, targets_for(network, yb), from_logits=fused)
        if fused:
            out = network.layers[-1].activation.forward(out)
        total += value if loss.reduction == "sum" else value * len(yb)
        outputs.append(out)
    out = np.concatenate(outputs) if outputs else np.zeros((0,) + network.output_shape)
    n = max(len(split), 1)
    return total / n, accuracy(out, split.y), out


def fit(network: Network, loss: Loss, optimizer: Optimizer, train: Split, validation: Split | None, *,
        epochs: int, batch_size: int, shuffle: bool = True, rng: np.random.Generator | None = None,
        early_stopping: dict | None = None, callbacks: tuple[Callback, ...] = (),
        eval_batch_size: int = 256) -> FitResult:
    """Train for ``epochs`` epochs; see the module docstring."""
    rng = rng if rng is not None else np.random.default_rng(0)
    n = len(train)
    steps_per_epoch = math.ceil(n / batch_size)
    monitor = (early_stopping or {}).get("monitor", "val_loss")
    if validation is None and monitor.startswith("val_"):
        monitor = monitor[4:]
    mode_max = monitor.endswith("accuracy")
    min_delta = (early_stopping or {}).get("min_delta", 0.0)
    patience = (early_stopping or {}).get("patience")
    result = FitResult(monitor=monitor)
    waited = 0
    for cb in callbacks:
        cb.on_train_start(epochs, steps_per_epoch)
    for epoch in range(1, epochs + 1):
        for cb in callbacks:
            cb.on_epoch_start(epoch)
        order = rng.permutation(n) if shuffle else np.arange(n)
        lr = optimizer.current_lr()
        start = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            xb, yb = train.x[idx], train.y[idx]
            value, out = network.train_step(xb, targets_for(network, yb), loss, optimizer)
            loss_sum += value if loss.reduction == "sum" else value * len(idx)
            correct += int(round(accuracy(out, yb) * len(idx)))
            seen += len(idx)
            elapsed = time.perf_counter() - start
            for cb in callbacks:
                cb.on_batch_end(epoch, b + 1, loss_sum / seen, correct / seen, seen / max(elapsed, 1e-9))
        seconds = time.perf_counter() - start
        val_loss = val_acc = None
        if validation is not None and len(validation):
            val_loss, val_acc, _ = evaluate(network, loss, validation, eval_batch_size)
        metrics = EpochMetrics(epoch=epoch, step=optimizer.t, lr=lr, loss=loss_sum / n, accuracy=correct / n,
                               val_loss=val_loss, val_accuracy=val_acc, seconds=seconds,
                               images_per_second=n / max(seconds, 1e-9))
        result.history.append(metrics)
        value = getattr(metrics, monitor)
        improved = result.best_value is None or (
            value > result.best_value + min_delta if mode_max else value < result.best_value - min_delta)
        if improved:
            result.best_epoch, result.best_value = epoch, value
            waited = 0
        else:
            waited += 1
        for cb in callbacks:
            cb.on_epoch_end(metrics, improved)
        if patience is not None and waited >= patience:
            result.stopped_early = True
            break
    for cb in callbacks:
        cb.on_train_end(result)
    return result
