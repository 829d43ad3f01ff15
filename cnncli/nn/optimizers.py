r"""Optimizers of the paper's Tables 3-4, corrected as ERRATA.md says, and LR schedules.

``t`` counts updates (mini-batches), not epochs (ERRATA 6). ``g`` is the gradient of the
loss for the current mini-batch, after clipping and weight decay (below); ``eta`` is the
learning rate of this update, from the schedule. Every rule is applied to each parameter
array elementwise.

=========  =======================================================================  ==============
name       update                                                                   defaults
=========  =======================================================================  ==============
sgd        W <- W - eta g                                                    (22)   eta 0.01
momentum   M <- gamma M + eta g;  W <- W - M               (ERRATA 7, Ruder's form)  gamma 0.9
nesterov   M <- gamma M + eta g;  W <- W - (eta g + gamma M)                 (ERRATA 8)  gamma 0.9
adagrad    G <- G + g^2;  W <- W - eta g / (sqrt(G) + eps)                   (25)   eta 0.01, eps 1e-10
adadelta   E_g <- rho E_g + (1-rho) g^2                                       (ERRATA 9)
           D <- sqrt(E_d + eps) / sqrt(E_g + eps) * g                               eta 1.0, rho 0.9,
           E_d <- rho E_d + (1-rho) D^2;  W <- W - eta D                            eps 1e-6
rmsprop    E <- rho E + (1-rho) g^2;  W <- W - eta g / (sqrt(E) + eps)       (27)   eta 0.001, rho 0.9,
                                                                                    eps 1e-8
adam       m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2                     (28)   eta 0.001, b1 0.9,
           W <- W - eta (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)                 b2 0.999, eps 1e-8
=========  =======================================================================  ==============

Notes on the corrections:

* Momentum: the paper's Eq. 23 multiplies ``gamma`` by ``W`` and subtracts the gradient;
  the velocity ``M`` accumulates ``eta g``. With a constant rate this is exactly
  ``torch.optim.SGD(momentum=gamma)`` (whose buffer is ``M / eta``).
* Nesterov: Eq. 24 evaluates the gradient at the look-ahead ``W - gamma M``. cnncli uses the
  equivalent form of Sutskever et al. (and PyTorch): the stored weights *are* the
  look-ahead point, so the gradient of the ordinary forward pass is the look-ahead
  gradient, and ``W <- W - (eta g + gamma M_new)`` moves the look-ahead point.
* Adadelta is Zeiler's (2012), not the paper's Eq. 26 (which repeats RMSprop); its
  ``eta`` multiplies the step and is 1 by default, as in PyTorch.
* Adagrad, RMSprop and Adam put ``eps`` outside the square root (Kingma & Ba, PyTorch);
  the paper's Eqs. 25, 27, 28 put it inside (ERRATA 10).

Before the rule: **gradient clipping** by global norm ``clip_norm`` scales every
gradient by ``clip_norm / (||g||_2 + 1e-6)`` when that is below 1, ``||g||_2`` taken over
all parameters together (``torch.nn.utils.clip_grad_norm_``); then **weight decay** (L2)
adds ``weight_decay * W`` to ``g`` (``torch.optim``'s ``weight_decay``).

**Schedules** give ``eta`` for update ``t = 0, 1, ...`` from the base rate ``eta_0``:

* ``constant``: ``eta_0``
* ``step``: ``eta_0 * gamma^floor(t / step_size)``
* ``exponential``: ``eta_0 * gamma^(t / decay_steps)``
* ``cosine``: ``min_lr + (eta_0 - min_lr)(1 + cos(pi min(t, t_max) / t_max)) / 2``
* ``decay`` (the paper's "decay" hyperparameter, Keras' legacy ``decay``):
  ``eta_0 / (1 + decay * t)``

State (``state_dict``) holds ``t`` and each slot as ``"<parameter>/<slot>"``: plain arrays
that save with ``np.savez`` and load with ``allow_pickle=False``, keyed like the
parameters.
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.errors import CheckpointError
from cnncli.nn import _check, parallel
from cnncli.registry import Registry, construct

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("schedule")


# --------------------------------------------------------------------------- schedules
class Schedule:
    name = "constant"

    def __call__(self, base_lr: float, t: int) -> float:
        return base_lr

    def config(self) -> dict:
        return {"name": self.name}


@SCHEDULES.register("constant")
class Constant(Schedule):
    name = "constant"


@SCHEDULES.register("step")
class StepDecay(Schedule):
    name = "step"

    def __init__(self, *, step_size, gamma=0.1):
        self.step_size = _check.positive_int("step_size", step_size)
        self.gamma = _check.number("gamma", gamma, low=0.0, low_open=True)

    def __call__(self, base_lr, t):
        return base_lr * self.gamma ** (t // self.step_size)

    def config(self):
        return {"name": self.name, "step_size": self.step_size, "gamma": self.gamma}


@SCHEDULES.register("exponential")
class ExponentialDecay(Schedule):
    name = "exponential"

    def __init__(self, *, gamma, decay_steps=1):
        self.gamma = _check.number("gamma", gamma, low=0.0, low_open=True)
        self.decay_steps = _check.positive_int("decay_steps", decay_steps)

    def __call__(self, base_lr, t):
        return base_lr * self.gamma ** (t / self.decay_steps)

    def config(self):
        return {"name": self.name, "gamma": self.gamma, "decay_steps": self.decay_steps}


@SCHEDULES.register("cosine")
class CosineDecay(Schedule):
    name = "cosine"

    def __init__(self, *, t_max, min_lr=0.0):
        self.t_max = _check.positive_int("t_max", t_max)
        self.min_lr = _check.number("min_lr", min_lr, low=0.0)

    def __call__(self, base_lr, t):
        frac = min(t, self.t_max) / self.t_max
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * frac)) / 2

    def config(self):
        return {"name": self.name, "t_max": self.t_max, "min_lr": self.min_lr}


@SCHEDULES.register("decay")
class InverseTimeDecay(Schedule):
    name = "decay"

    def __init__(self, *, decay):
        self.decay = _check.number("decay", decay, low=0.0)

    def __call__(self, base_lr, t):
        return base_lr / (1 + self.decay * t)

    def config(self):
        return {"name": self.name, "decay": self.decay}


def make_schedule(spec: object, path: str = "schedule") -> Schedule:
    """A Schedule from None (constant), a name, a ``{name: ..., ...}`` dict or an instance."""
    if spec is None:
        return Constant()
    if isinstance(spec, Schedule):
        return spec
    return construct(SCHEDULES, spec, path)


# -------------------------------------------------------------------------- optimizers
def _stretches(sizes: list[int], a: int, b: int):
    """(index, lo, hi) of each array whose elements lo..hi fall in elements a..b of arrays
    of ``sizes`` laid end to end."""
    offset = 0
    for i, size in enumerate(sizes):
        lo, hi = max(a - offset, 0), min(b - offset, size)
        if lo < hi:
            yield i, lo, hi
        offset += size


def _sum_of_squares(flat: list[np.ndarray], a: int, b: int) -> float:
    """Sum of squares of elements a..b of the 1-D arrays ``flat`` laid end to end."""
    return sum(float(np.vdot(flat[i][lo:hi], flat[i][lo:hi]))
               for i, lo, hi in _stretches([g.size for g in flat], a, b))


def _norm(sum_of_squares: float) -> float:
    """sqrt, keeping inf and nan as they are."""
    finite = sum_of_squares == sum_of_squares and sum_of_squares != math.inf
    return math.sqrt(sum_of_squares) if finite else sum_of_squares


class Optimizer:
    """Base class. ``step(params, grads)`` updates ``params`` in place.

    ``params`` and ``grads`` are dicts of arrays with the same keys (a network's
    ``parameters()`` and ``gradients()``). Slots are created on the first step.
    """

    name = "optimizer"
    slots: tuple[str, ...] = ()
    default_lr = 0.01

    def __init__(self, *, lr=None, weight_decay=0.0, clip_norm=None, schedule=None):
        self.lr = self.default_lr if lr is None else _check.number("lr", lr, low=0.0, low_open=True)
        self.weight_decay = _check.number("weight_decay", weight_decay, low=0.0)
        self.clip_norm = None if clip_norm is None else _check.number("clip_norm", clip_norm, low=0.0,
                                                                      low_open=True)
        self.schedule = make_schedule(schedule)
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {}
        #: Global gradient norm of the last step, before clipping.
        self.last_grad_norm: float | None = None

    def hyperparameters(self) -> dict:
        return {}

    def config(self) -> dict:
        cfg = {"name": self.name, "lr": self.lr, **self.hyperparameters(),
               "weight_decay": self.weight_decay, "clip_norm": self.clip_norm,
               "schedule": self.schedule.config()}
        return cfg

    def current_lr(self) -> float:
        """The learning rate the next update will use."""
        return self.schedule(self.lr, self.t)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], *,
             grad_norm: float | None = None) -> None:
        """One update of every parameter. ``grad_norm`` may pass :meth:`gradient_norm` if
        the caller has computed it already (the training loop checks it is finite).

        Every update rule is elementwise, so the engine's threads each update one
        contiguous stretch of all the parameters laid end to end. Without clipping or
        weight decay nothing depends on the gradient norm before the update, so each
        thread also sums the squares of its stretch (``last_grad_norm``) in the same pass.
        """
        eta = self.current_lr()
        entries = []
        for key, w in params.items():
            slots = self.state.get(key)
            if slots is None:
                slots = self.state[key] = {s: np.zeros_like(w) for s in self.slots}
            entries.append((key, w, slots))
        contiguous = all(a.flags.c_contiguous for key, w, slots in entries
                         for a in (w, grads[key], *slots.values()))
        norm_in_update = (contiguous and grad_norm is None and self.clip_norm is None
                          and self.weight_decay == 0.0)
        if not norm_in_update:
            grads = self._preprocess(params, grads, grad_norm)
        flat = []
        for key, w, slots in entries:
            g = grads[key]
            if contiguous:
                flat.append((w.reshape(-1), g.reshape(-1), list(slots), [a.reshape(-1) for a in slots.values()]))
            else:  # views that cannot be flattened in place: one whole update each, here
                self._update(w, g, slots, eta)

        sizes = [w.size for w, *_ in flat]

        def update(a, b):  # elements a..b of the parameters laid end to end
            squares = _sum_of_squares([g for _, g, *_ in flat], a, b) if norm_in_update else 0.0
            for i, lo, hi in _stretches(sizes, a, b):
                w, g, names, slot_arrays = flat[i]
                self._update(w[lo:hi], g[lo:hi], {n: s[lo:hi] for n, s in zip(names, slot_arrays)}, eta)
            return squares

        squares = parallel.run(update, parallel.chunks(sum(sizes), 2 + len(self.slots)))
        if norm_in_update:
            self.last_grad_norm = _norm(sum(squares))
        self.t += 1

    @staticmethod
    def gradient_norm(grads: dict[str, np.ndarray]) -> float:
        """Global L2 norm over every gradient (inf or nan if any entry is)."""
        flat = [g.reshape(-1) for g in grads.values()]
        parts = parallel.run(lambda a, b: _sum_of_squares(flat, a, b), parallel.chunks(sum(g.size for g in flat)))
        return _norm(sum(parts))

    def _preprocess(self, params, grads, grad_norm=None):
        self.last_grad_norm = self.gradient_norm(grads) if grad_norm is None else grad_norm
        scale = 1.0
        if self.clip_norm is not None:
            coef = self.clip_norm / (self.last_grad_norm + 1e-6)
            scale = min(coef, 1.0)
        if scale == 1.0 and self.weight_decay == 0.0:
            return grads
        out = {}
        for key, g in grads.items():
            g = g * g.dtype.type(scale) if scale != 1.0 else g
            if self.weight_decay:
                g = g + params[key] * params[key].dtype.type(self.weight_decay)
            out[key] = g
        return out

    def _update(self, w, g, slots, eta):
        raise NotImplementedError

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        out = {"t": np.array(self.t, dtype=np.int64)}
        for key, slots in self.state.items():
            for slot, arr in slots.items():
                out[f"{key}/{slot}"] = arr.copy()
        return out

    def load_state_dict(self, state: dict[str, np.ndarray], params: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`state_dict`; shapes are checked against ``params``."""
        if "t" not in state:
            raise CheckpointError("optimizer state has no step counter 't'")
        restored: dict[str, dict[str, np.ndarray]] = {}
        t = int(np.asarray(state["t"]))
        if t > 0 or len(state) > 1:
            for key, w in params.items():
                restored[key] = {}
                for slot in self.slots:
                    name = f"{key}/{slot}"
                    if name not in state:
                        raise CheckpointError(f"optimizer state lacks {name!r}")
                    arr = np.asarray(state[name])
                    if arr.shape != w.shape:
                        raise CheckpointError(f"optimizer state {name!r} has shape {arr.shape}; "
                                              f"the parameter has {w.shape}")
                    restored[key][slot] = arr.astype(w.dtype, copy=True)
        known = {f"{key}/{slot}" for key in params for slot in self.slots} | {"t"}
        extra = sorted(set(state) - known)
        if extra:
            raise CheckpointError(f"optimizer state has entries this {self.name} optimizer and network do not: "
                                  f"{', '.join(extra[:5])}")
        self.t = t
        self.state = restored

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


@OPTIMIZERS.register("sgd")
class SGD(Optimizer):
    name = "sgd"

    def _update(self, w, g, slots, eta):
        w -= eta * g


@OPTIMIZERS.register("momentum")
class Momentum(Optimizer):
    name = "momentum"
    slots = ("velocity",)

    def __init__(self, *, momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.momentum = _check.number("momentum", momentum, low=0.0, high=1.0, high_open=True)

    def hyperparameters(self):
        return {"momentum": self.momentum}

    def _update(self, w, g, slots, eta):
        m = slots["velocity"]
        m *= self.momentum
        m += eta * g
        w -= m


@OPTIMIZERS.register("nesterov")
class Nesterov(Momentum):
    name = "nesterov"

    def _update(self, w, g, slots, eta):
        m = slots["velocity"]
        m *= self.momentum
        step = eta * g
        m += step
        step += self.momentum * m
        w -= step


@OPTIMIZERS.register("adagrad")
class Adagrad(Optimizer):
    name = "adagrad"
    slots = ("sum_sq",)

    def __init__(self, *, epsilon=1e-10, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = _check.number("epsilon", epsilon, low=0.0, low_open=True)

    def hyperparameters(self):
        return {"epsilon": self.epsilon}

    def _update(self, w, g, slots, eta):
        acc = slots["sum_sq"]
        acc += g * g
        w -= eta * g / (np.sqrt(acc) + self.epsilon)


@OPTIMIZERS.register("adadelta")
class Adadelta(Optimizer):
    name = "adadelta"
    slots = ("avg_sq_grad", "avg_sq_delta")
    default_lr = 1.0

    def __init__(self, *, rho=0.9, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.rho = _check.number("rho", rho, low=0.0, high=1.0, high_open=True)
        self.epsilon = _check.number("epsilon", epsilon, low=0.0, low_open=True)

    def hyperparameters(self):
        return {"rho": self.rho, "epsilon": self.epsilon}

    def _update(self, w, g, slots, eta):
        eg, ed = slots["avg_sq_grad"], slots["avg_sq_delta"]
        rho, eps = self.rho, self.epsilon
        eg *= rho
        eg += (1 - rho) * g * g
        delta = np.sqrt(ed + eps) / np.sqrt(eg + eps) * g
        ed *= rho
        ed += (1 - rho) * delta * delta
        w -= eta * delta


@OPTIMIZERS.register("rmsprop")
class RMSprop(Optimizer):
    name = "rmsprop"
    slots = ("avg_sq_grad",)
    default_lr = 0.001

    def __init__(self, *, rho=0.9, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.rho = _check.number("rho", rho, low=0.0, high=1.0, high_open=True)
        self.epsilon = _check.number("epsilon", epsilon, low=0.0, low_open=True)

    def hyperparameters(self):
        return {"rho": self.rho, "epsilon": self.epsilon}

    def _update(self, w, g, slots, eta):
        e = slots["avg_sq_grad"]
        e *= self.rho
        e += (1 - self.rho) * g * g
        w -= eta * g / (np.sqrt(e) + self.epsilon)


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    name = "adam"
    slots = ("m", "v")
    default_lr = 0.001

    def __init__(self, *, beta1=0.9, beta2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.beta1 = _check.number("beta1", beta1, low=0.0, high=1.0, high_open=True)
        self.beta2 = _check.number("beta2", beta2, low=0.0, high=1.0, high_open=True)
        self.epsilon = _check.number("epsilon", epsilon, low=0.0, low_open=True)

    def hyperparameters(self):
        return {"beta1": self.beta1, "beta2": self.beta2, "epsilon": self.epsilon}

    def _update(self, w, g, slots, eta):
        m, v = slots["m"], slots["v"]
        b1, b2 = self.beta1, self.beta2
        t = self.t + 1  # this update's number, 1-based as in Kingma & Ba
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        w -= eta * m_hat / (np.sqrt(v_hat) + self.epsilon)


def make_optimizer(spec: object, path: str = "optimizer") -> Optimizer:
    """An Optimizer from a name, a ``{name: ..., lr: ..., ...}`` dict or an instance."""
    if isinstance(spec, Optimizer):
        return spec
    return construct(OPTIMIZERS, spec, path)
