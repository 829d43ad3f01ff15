r"""Learning-rate schedules: ``eta`` for update ``t = 0, 1, ...`` from the base rate ``eta_0``.

``t`` counts updates (mini-batches), not epochs (ERRATA 6).

* ``constant``: ``eta_0``
* ``step``: ``eta_0 * gamma^floor(t / step_size)``
* ``exponential``: ``eta_0 * gamma^(t / decay_steps)``
* ``cosine``: ``min_lr + (eta_0 - min_lr)(1 + cos(pi min(t, t_max) / t_max)) / 2``
* ``decay`` (the paper's "decay" hyperparameter, Keras' legacy ``decay``):
  ``eta_0 / (1 + decay * t)``
* ``warmup``: ``eta_0 (t + 1) / steps`` for ``t < steps``, then the schedule ``then``
  (constant by default) counting its own ``t`` from the end of the warmup
  (``torch.optim.lr_scheduler.LinearLR(start_factor=1/steps, total_iters=steps-1)``
  followed by ``then``)
* ``reduce_on_plateau`` (Keras's ``ReduceLROnPlateau``): ``max(eta_0 s, min_lr)``, where
  the scale ``s`` starts at 1 and is multiplied by ``factor`` each time ``monitor`` has
  not improved by more than ``min_delta`` for ``patience`` epochs in a row (then the
  count starts again). It hears each epoch's metrics through :meth:`Schedule.epoch_end`
  and keeps its state in the run's checkpoints (:meth:`Schedule.state_dict`), so a
  resumed run reduces exactly when an uninterrupted one would.

A schedule of your own subclasses :class:`Schedule` and defines ``__call__(base_lr, t)``;
one that follows a metric also defines ``epoch_end(metrics)`` and, for resumes,
``state_dict()`` / ``load_state_dict(state)``.
"""

from __future__ import annotations

import math

from cnncli.nn import validate
from cnncli.nn.errors import ConfigError
from cnncli.nn.registry import Component, Registry, construct, placeholder, register

SCHEDULES: Registry = Registry("schedule")


class Schedule(Component):
    """``schedule(base_lr, t)`` -> the learning rate of update ``t`` (0-based)."""

    registry = SCHEDULES
    required_methods = (("__call__",),)
    name = "schedule"

    @placeholder
    def __call__(self, base_lr: float, t: int) -> float:
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": self.name, **self.init_arguments()}

    def describe(self) -> str:
        """``step_size 10, gamma 0.1``: the settings, for explain."""
        return ", ".join(f"{k} {v}" for k, v in self.config().items() if k != "name")

    def epoch_end(self, metrics: dict) -> None:
        """Hear the metrics of the epoch just finished (``loss``, ``val_loss``, ...)."""

    def state_dict(self) -> dict:
        """What a resumed run needs to continue the schedule exactly (JSON-ready)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def run_notes(self, total_updates: int) -> list[str]:
        """Lines worth saying once about this schedule in a run of ``total_updates`` updates."""
        return []


@register("constant")
class Constant(Schedule):
    def __call__(self, base_lr, t):
        return base_lr


@register("step")
class StepDecay(Schedule):
    def __init__(self, *, step_size, gamma=0.1):
        self.step_size = validate.positive_int("step_size", step_size)
        self.gamma = validate.number("gamma", gamma, low=0.0, low_open=True)

    def __call__(self, base_lr, t):
        return base_lr * self.gamma ** (t // self.step_size)

    def config(self):
        return {"name": self.name, "step_size": self.step_size, "gamma": self.gamma}


@register("exponential")
class ExponentialDecay(Schedule):
    def __init__(self, *, gamma, decay_steps=1):
        self.gamma = validate.number("gamma", gamma, low=0.0, low_open=True)
        self.decay_steps = validate.positive_int("decay_steps", decay_steps)

    def __call__(self, base_lr, t):
        return base_lr * self.gamma ** (t / self.decay_steps)

    def config(self):
        return {"name": self.name, "gamma": self.gamma, "decay_steps": self.decay_steps}


@register("cosine")
class CosineDecay(Schedule):
    def __init__(self, *, t_max, min_lr=0.0):
        self.t_max = validate.positive_int("t_max", t_max)
        self.min_lr = validate.number("min_lr", min_lr, low=0.0)

    def __call__(self, base_lr, t):
        frac = min(t, self.t_max) / self.t_max
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * frac)) / 2

    def config(self):
        return {"name": self.name, "t_max": self.t_max, "min_lr": self.min_lr}


@register("decay")
class InverseTimeDecay(Schedule):
    """The paper's decay: ``lr / (1 + decay * t)``."""

    def __init__(self, *, decay):
        self.decay = validate.number("decay", decay, low=0.0)

    def __call__(self, base_lr, t):
        return base_lr / (1 + self.decay * t)

    def config(self):
        return {"name": self.name, "decay": self.decay}


@register("warmup")
class Warmup(Schedule):
    """Linear warmup: ``eta_0 (t + 1) / steps`` for the first ``steps`` updates, then ``then``."""

    def __init__(self, *, steps, then=None):
        self.steps = validate.positive_int("steps", steps)
        self.then = make_schedule(then, "then")
        if isinstance(self.then, (Warmup, ReduceOnPlateau)):
            raise ConfigError("then", "a schedule that follows the warmup (not warmup or reduce_on_plateau)",
                              self.then.name)

    def __call__(self, base_lr, t):
        if t < self.steps:
            return base_lr * (t + 1) / self.steps
        return self.then(base_lr, t - self.steps)

    def config(self):
        return {"name": self.name, "steps": self.steps, "then": self.then.config()}

    def run_notes(self, total_updates):
        if self.steps > total_updates:
            return [f"the warmup ({self.steps} updates) is longer than the run ({total_updates} updates): the rate "
                    f"never reaches its base value"]
        return []


@register("reduce_on_plateau")
class ReduceOnPlateau(Schedule):
    """``max(eta_0 s, min_lr)``; ``s`` is multiplied by ``factor`` after ``patience``
    epochs without an improvement of ``monitor`` by more than ``min_delta``."""

    MONITORS = ("val_loss", "val_accuracy", "loss", "accuracy")

    def __init__(self, *, monitor="val_loss", factor=0.1, patience=10, min_lr=0.0, min_delta=1e-4):
        self.monitor = validate.choice("monitor", monitor, self.MONITORS)
        self.factor = validate.number("factor", factor, low=0.0, high=1.0, low_open=True, high_open=True)
        self.patience = validate.positive_int("patience", patience)
        self.min_lr = validate.number("min_lr", min_lr, low=0.0)
        self.min_delta = validate.number("min_delta", min_delta, low=0.0)
        self.scale, self.best, self.wait = 1.0, None, 0

    def __call__(self, base_lr, t):
        return max(base_lr * self.scale, self.min_lr)

    def config(self):
        return {"name": self.name, "monitor": self.monitor, "factor": self.factor, "patience": self.patience,
                "min_lr": self.min_lr, "min_delta": self.min_delta}

    def epoch_end(self, metrics):
        key = self.monitor
        if metrics.get(key) is None and key.startswith("val_"):  # no validation split: the training figure
            key = key[4:]
        value = metrics.get(key)
        if value is None or not math.isfinite(value):
            return
        higher_is_better = key.endswith("accuracy")
        improved = self.best is None or (value > self.best + self.min_delta if higher_is_better
                                         else value < self.best - self.min_delta)
        if improved:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.scale *= self.factor
            self.wait = 0

    def state_dict(self):
        return {"scale": self.scale, "best": self.best, "wait": self.wait}

    def load_state_dict(self, state):
        self.scale, self.best, self.wait = float(state["scale"]), state["best"], int(state["wait"])


def make_schedule(spec: object, path: str = "schedule") -> Schedule:
    """A Schedule from a name, a ``{name: ..., ...}`` dict, an instance, or None (constant)."""
    if spec is None:
        return Constant()
    if isinstance(spec, Schedule):
        return spec
    return construct(SCHEDULES, spec, path)
