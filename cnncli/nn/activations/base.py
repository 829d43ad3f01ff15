r"""The Activation interface and the ACTIVATIONS registry.

An activation maps the pre-activation ``z`` to ``a = g(z)`` elementwise (softmax: along
the last axis). Back-propagation multiplies the incoming ``dL/da`` by ``g'(z)``:

.. math::  \delta = \frac{\partial L}{\partial z} = \frac{\partial L}{\partial a} \odot g'(z)

A new activation subclasses :class:`Activation` and defines ``forward(z)`` and
``derivative(z)`` (or ``backward(a, da, z)`` when ``g'`` is not elementwise). It may also
say more, which the engine and ``cnncli`` use:

* ``backward_from_output = True`` when ``backward`` needs only ``a`` (then ``z`` is not
  kept between forward and backward; every built-in but the newest ones does this);
* ``monotonic = True`` when ``g`` never decreases, so max pooling may run first and
  ``g`` only on the pooled values (``cnncli.nn.fusion``);
* ``output_range`` and ``sums_to_one``, so a loss can refuse outputs it cannot use
  (training dynamics also count outputs near both finite bounds as saturated);
* ``zero_on_half_line = True`` when ``g`` is exactly 0 for ``z <= 0`` (relu), so that
  training dynamics count dead units;
* ``backward_flops``, the FLOPs of ``dL/da * g'(z)`` per element, for ``summary``;
* ``formula()`` and ``derivative_formula()``, (text, LaTeX) for ``explain``.
"""

from __future__ import annotations

import numpy as np

from cnncli.nn.describe import Equation, docstring_notes
from cnncli.nn.registry import Component, Registry, construct, placeholder

ACTIVATIONS: Registry = Registry("activation")


class Activation(Component):
    """Base class: ``forward(z) -> a`` and ``derivative(z) -> g'(z)``."""

    registry = ACTIVATIONS
    required_methods = (("forward",), ("derivative", "backward"))
    name = "activation"
    #: ``g`` is non-decreasing, so max pooling commutes with it.
    monotonic = False
    #: ``backward`` reads only the output ``a`` (``z`` may be None).
    backward_from_output = False
    #: (lowest, highest) value of ``g``, where known.
    output_range: tuple[float, float] | None = None
    #: Each row of ``g(z)`` sums to 1 along the last axis (a probability distribution).
    sums_to_one = False
    #: ``g`` is exactly 0, with ``g' = 0``, on a half-line (relu): a unit that is 0 for
    #: every input gets no gradient and stops learning (a dead unit; training dynamics
    #: report their fraction).
    zero_on_half_line = False
    #: FLOPs of ``dL/da * g'(z)`` per element; None where not declared.
    backward_flops: int | None = None

    @placeholder
    def forward(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @placeholder
    def derivative(self, z: np.ndarray) -> np.ndarray:
        """g'(z) elementwise (for plots and tests; softmax gives the diagonal of its Jacobian)."""
        a = self.forward(z)
        return self.backward(a, np.ones_like(a), z)

    @placeholder
    def backward(self, a: np.ndarray, da: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
        """dL/dz from the output ``a`` and dL/da; ``z`` is given unless ``backward_from_output``."""
        return da * self.derivative(z).astype(da.dtype, copy=False)

    # -- what explain and summary print ----------------------------------------------
    def formula(self) -> tuple[str, str] | None:
        """(text, LaTeX) of ``a = g(z)``, or None."""
        return None

    def derivative_formula(self) -> tuple[str, str] | None:
        """(text, LaTeX) of ``g'(z)``, preferably written with ``a``, or None."""
        return None

    def equations(self, shape: str) -> tuple[list[Equation], list[Equation], list[str]]:
        """(forward, backward, notes) for a layer whose output has ``shape``."""
        forward, derivative = self.formula(), self.derivative_formula()
        notes = [] if forward and derivative else [f"{self.name}: " + docstring_notes(self)[0]]
        if forward is None:
            forward = (f"a = {self.name}(z)", rf"a = \mathrm{{{_tex_name(self.name)}}}(z)")
        if derivative is None:
            derivative = (f"g'(z) = {self.name}'(z)", rf"g'(z) = \mathrm{{{_tex_name(self.name)}}}'(z)")
        dt, dtex = derivative
        backward = Equation(f"delta = dL/da * g'(z),  {dt}",
                            r"\delta = \frac{\partial L}{\partial a} \odot g'(z),\quad " + dtex, shape)
        return [Equation(forward[0], forward[1], shape)], [backward], notes

    def config(self) -> dict:
        return {"name": self.name, **self.init_arguments()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.init_arguments().items())
        return f"{type(self).__name__}({args})"


def _tex_name(name: str) -> str:
    return name.replace("_", r"\_")


def make_activation(spec: object, path: str = "activation") -> Activation:
    """An Activation from a name, a ``{name: ..., **kwargs}`` dict, an instance, or None (linear)."""
    if spec is None:
        spec = "linear"
    if isinstance(spec, Activation):
        return spec
    return construct(ACTIVATIONS, spec, path)
