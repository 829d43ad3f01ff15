r"""The Optimizer interface, the OPTIMIZERS registry, and what every optimizer shares.

``t`` counts updates (mini-batches), not epochs (ERRATA 6). ``g`` is the gradient of the
loss for the current mini-batch, after clipping and weight decay (below); ``eta`` is the
learning rate of this update, from the schedule (``cnncli.nn.schedules``). Every rule is
applied to each parameter array elementwise, in place.

Before the rule: **gradient clipping** by global norm ``clip_norm`` scales every
gradient by ``clip_norm / (||g||_2 + 1e-6)`` when that is below 1, ``||g||_2`` taken over
all parameters together (``torch.nn.utils.clip_grad_norm_``); then **weight decay** (L2)
adds ``weight_decay * W`` to ``g`` (``torch.optim``'s ``weight_decay``), unless the
optimizer decays the weights itself (``decoupled_weight_decay``, as AdamW).

A new optimizer subclasses :class:`Optimizer`, lists its per-parameter state in
``slots`` and defines ``update(w, g, slots, lr)``; its keyword arguments are its
hyperparameters. ``update_flops`` (per parameter) and ``rule()`` (the equations) are
what ``summary`` and ``explain`` print.

State (``state_dict``) holds ``t`` and each slot as ``"<parameter>/<slot>"``: plain arrays
that save with ``np.savez`` and load with ``allow_pickle=False``, keyed like the
parameters.
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.nn import parallel, validate
from cnncli.nn.describe import Equation, Explanation, docstring_notes, human_flops
from cnncli.nn.errors import CheckpointError
from cnncli.nn.registry import Component, Registry, construct, placeholder
from cnncli.nn.schedules import make_schedule

OPTIMIZERS: Registry = Registry("optimizer")

#: The keywords every optimizer takes (the rest are its hyperparameters).
COMMON_KEYS = ("lr", "weight_decay", "clip_norm", "schedule")


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
    return math.sqrt(sum_of_squares) if math.isfinite(sum_of_squares) else sum_of_squares


class Optimizer(Component):
    """Base class. ``step(params, grads)`` updates ``params`` in place.

    ``params`` and ``grads`` are dicts of arrays with the same keys (a network's
    ``parameters()`` and ``gradients()``). Slots are created on the first step.
    """

    registry = OPTIMIZERS
    required_methods = (("update",),)
    name = "optimizer"
    #: Per-parameter state arrays, created as zeros on the first step.
    slots: tuple[str, ...] = ()
    default_lr = 0.01
    #: The optimizer applies ``weight_decay`` itself in ``update`` (not added to ``g``).
    decoupled_weight_decay = False
    #: FLOPs of the rule per parameter element (its elementwise operations); None: not declared.
    update_flops: int | None = None

    def __init__(self, *, lr=None, weight_decay=0.0, clip_norm=None, schedule=None):
        self.lr = self.default_lr if lr is None else validate.number("lr", lr, low=0.0, low_open=True)
        self.weight_decay = validate.number("weight_decay", weight_decay, low=0.0)
        self.clip_norm = None if clip_norm is None else validate.number("clip_norm", clip_norm, low=0.0,
                                                                        low_open=True)
        self.schedule = make_schedule(schedule)
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {}
        #: Global gradient norm of the last step, before clipping.
        self.last_grad_norm: float | None = None

    def hyperparameters(self) -> dict:
        """The optimizer's own keywords (its rule's constants), defaults included."""
        return {k: v for k, v in self.init_arguments().items() if k not in COMMON_KEYS}

    def config(self) -> dict:
        return {"name": self.name, "lr": self.lr, **self.hyperparameters(),
                "weight_decay": self.weight_decay, "clip_norm": self.clip_norm,
                "schedule": self.schedule.config()}

    def current_lr(self) -> float:
        """The learning rate the next update will use."""
        return self.schedule(self.lr, self.t)

    # -- the update ---------------------------------------------------------------------
    @placeholder
    def update(self, w: np.ndarray, g: np.ndarray, slots: dict[str, np.ndarray], lr: float) -> None:
        """The rule: update ``w`` (and the ``slots``) in place from the gradient ``g``.

        Called on whole parameters or on contiguous stretches of them (the engine's
        threads each take one); ``self.t`` is the number of updates before this one."""
        raise NotImplementedError

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], *,
             grad_norm: float | None = None, check_finite: bool = False) -> bool:
        """One update of every parameter; returns whether it was made.

        ``grad_norm`` may pass :meth:`gradient_norm` if the caller has computed it. With
        ``check_finite`` a non-finite gradient is not applied: when the norm is needed
        before the update (clipping, L2 weight decay), nothing changes; otherwise each
        thread checks its own stretch before updating it, so stretches with finite
        gradients may have been updated (the training loop stops the run then).

        Every rule is elementwise, so the engine's threads each update one contiguous
        stretch of all the parameters laid end to end; when nothing needs the gradient
        norm first, each thread also sums the squares of its stretch (``last_grad_norm``)
        in the same pass.
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
        decay_in_gradient = self.weight_decay != 0.0 and not self.decoupled_weight_decay
        norm_in_update = contiguous and grad_norm is None and self.clip_norm is None and not decay_in_gradient
        if not norm_in_update:
            norm = self.gradient_norm(grads) if grad_norm is None else grad_norm
            if check_finite and not math.isfinite(norm):
                self.last_grad_norm = norm
                return False
            grads = self._preprocess(params, grads, norm)
        flat = []
        for key, w, slots in entries:
            g = grads[key]
            if contiguous:
                flat.append((w.reshape(-1), g.reshape(-1), list(slots), [a.reshape(-1) for a in slots.values()]))
            else:  # views that cannot be flattened in place: one whole update each, here
                self.update(w, g, slots, eta)
        sizes = [w.size for w, *_ in flat]

        def update(a, b):  # elements a..b of the parameters laid end to end
            squares = _sum_of_squares([g for _, g, *_ in flat], a, b) if norm_in_update else 0.0
            if check_finite and not math.isfinite(squares):
                return squares  # this stretch is left as it was
            for i, lo, hi in _stretches(sizes, a, b):
                w, g, names, slot_arrays = flat[i]
                self.update(w[lo:hi], g[lo:hi], {n: s[lo:hi] for n, s in zip(names, slot_arrays)}, eta)
            return squares

        squares = parallel.run(update, parallel.chunks(sum(sizes), 2 + len(self.slots)))
        if norm_in_update:
            self.last_grad_norm = _norm(sum(squares))
            if check_finite and not math.isfinite(self.last_grad_norm):
                return False
        self.t += 1
        return True

    @staticmethod
    def gradient_norm(grads: dict[str, np.ndarray]) -> float:
        """Global L2 norm over every gradient (inf or nan if any entry is)."""
        flat = [g.reshape(-1) for g in grads.values()]
        parts = parallel.run(lambda a, b: _sum_of_squares(flat, a, b), parallel.chunks(sum(g.size for g in flat)))
        return _norm(sum(parts))

    def _preprocess(self, params, grads, norm):
        """Clipping and L2 weight decay, from the global norm ``norm``."""
        self.last_grad_norm = norm
        scale = 1.0
        if self.clip_norm is not None:
            scale = min(self.clip_norm / (norm + 1e-6), 1.0)
        decay = self.weight_decay if not self.decoupled_weight_decay else 0.0
        if scale == 1.0 and decay == 0.0:
            return grads
        out = {}
        for key, g in grads.items():
            g = g * g.dtype.type(scale) if scale != 1.0 else g
            if decay:
                g = g + params[key] * params[key].dtype.type(decay)
            out[key] = g
        return out

    # -- what summary and explain ask -----------------------------------------------------
    def flops_per_parameter(self) -> int | None:
        """FLOPs of one update per parameter element: the rule, plus L2 weight decay folded
        into the gradient (2; a decoupled decay is part of the rule) and clipping (3);
        None when the rule declares none."""
        if self.update_flops is None:
            return None
        decay = 2 if self.weight_decay and not self.decoupled_weight_decay else 0
        return self.update_flops + decay + (3 if self.clip_norm is not None else 0)

    def rule(self) -> list[tuple[str, str]] | None:
        """The update rule with this optimizer's numbers, as (text, TeX) lines; None when
        not declared (explain then prints the docstring)."""
        return None

    def explain(self, batch_size: int, parameter_count: int) -> Explanation:
        lr = self.lr
        sec = Explanation(f"update: {self.name}, lr {lr:g}")
        pre = []
        if self.clip_norm is not None:
            c = self.clip_norm
            pre.append(Equation(f"g <- g * min(1, {c:g} / (||g||_2 + 1e-6))   (global norm over all parameters)",
                                rf"g \leftarrow g\,\min\!\Big(1, \frac{{{c:g}}}{{\lVert g\rVert_2 + 10^{{-6}}}}\Big)"))
        if self.weight_decay and not self.decoupled_weight_decay:
            wd = self.weight_decay
            pre.append(Equation(f"g <- g + {wd:g} W   (L2 weight decay)", rf"g \leftarrow g + {wd:g}\, W"))
        rule = self.rule()
        if rule is None:
            sec.notes += docstring_notes(self)
            rule = [(f"W <- {self.name}(W, g, lr {lr:g})", rf"W \leftarrow \mathrm{{{self.name}}}(W, g)")]
        sec.backward = pre + [Equation(text, tex) for text, tex in rule]
        sec.notes.append(f"g = dL/dW of the mini-batch for every parameter W; t counts updates (mini-batches of "
                         f"{batch_size}), not epochs (ERRATA 6).")
        if self.schedule.name != "constant":
            sec.notes.append(f"The learning rate follows the {self.schedule.name} schedule "
                             f"({self.schedule.describe()}) from {lr:g}.")
        per = self.flops_per_parameter()
        if per is None:
            sec.flops.append("update: n/a FLOPs (the optimizer declares no update_flops)")
        else:
            total = per * parameter_count
            sec.flops.append(f"update: {human_flops(total)} per step ({total / batch_size:,.0f} per example "
                             f"at batch {batch_size})")
        return sec

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


def make_optimizer(spec: object, path: str = "optimizer") -> Optimizer:
    """An Optimizer from a name, a ``{name: ..., lr: ..., ...}`` dict or an instance."""
    if isinstance(spec, Optimizer):
        return spec
    return construct(OPTIMIZERS, spec, path)
