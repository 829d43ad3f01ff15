r"""Learning-rate schedules: ``eta`` for update ``t = 0, 1, ...`` from the base rate ``eta_0``.

``t`` counts updates (mini-batches), not epochs (ERRATA 6).

* ``constant``: ``eta_0``
* ``step``: ``eta_0 * gamma^floor(t / step_size)``
* ``exponential``: ``eta_0 * gamma^(t / decay_steps)``
* ``cosine``: ``min_lr + (eta_0 - min_lr)(1 + cos(pi min(t, t_max) / t_max)) / 2``
* ``decay`` (the paper's "decay" hyperparameter, Keras' legacy ``decay``):
  ``eta_0 / (1 + decay * t)``

A schedule of your own subclasses :class:`Schedule` and defines ``__call__(base_lr, t)``.
"""

from __future__ import annotations

import math

from cnncli.nn import validate
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


def make_schedule(spec: object, path: str = "schedule") -> Schedule:
    """A Schedule from a name, a ``{name: ..., ...}`` dict, an instance, or None (constant)."""
    if spec is None:
        return Constant()
    if isinstance(spec, Schedule):
        return spec
    return construct(SCHEDULES, spec, path)
