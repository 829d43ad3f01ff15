"""What a component says about its mathematics: equations, arithmetic, FLOPs.

Layers, activations, losses and optimizers each describe themselves with these plain
data classes (``Layer.explain``, ``Activation.formula``, ``Loss.explain``,
``Optimizer.explain``); ``cnncli explain`` renders them as text, Markdown or LaTeX. A
component that describes nothing is explained by its docstring.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field


@dataclass
class Equation:
    """One equation: plain text and LaTeX; ``shape`` says the array's shape, if any."""

    text: str
    tex: str
    shape: str = ""


@dataclass
class Explanation:
    """Everything ``explain`` prints about one layer, the loss or the optimizer."""

    title: str
    notes: list[str] = field(default_factory=list)
    forward: list[Equation] = field(default_factory=list)
    arithmetic: list[str] = field(default_factory=list)
    backward: list[Equation] = field(default_factory=list)
    flops: list[str] = field(default_factory=list)


def docstring_notes(obj: object) -> list[str]:
    """The first paragraph of the docstring of ``obj``'s class, as notes, or a line
    saying that it describes nothing."""
    doc = inspect.getdoc(type(obj) if not isinstance(obj, type) else obj)
    if not doc:
        return ["(no equations or docstring given for this component)"]
    first = doc.split("\n\n")[0]
    return [" ".join(first.split())]


def shape_text(shape) -> str:
    """(24, 24, 64) -> '24x24x64'."""
    return "x".join(str(d) for d in shape)


def batch_shape(shape) -> str:
    """(24, 24, 64) -> '(N, 24, 24, 64)'."""
    return "(N, " + ", ".join(str(d) for d in shape) + ")"


def size_arithmetic(n: int, before: int, after: int, k: int, s: int, d: int, out: int) -> str:
    """The output-size formula of a window along one axis, with this layer's numbers."""
    pad = f"2*{before}" if before == after else f"{before} + {after}"
    span = f"{k}" if d == 1 else f"({d}*({k}-1)+1)"  # the dilated kernel's extent, subtracted whole
    inner = f"({n} + {pad} - {span})"
    exact = (n + before + after - (d * (k - 1) + 1)) % s == 0
    return f"{inner}/{s} + 1 = {out}" if exact else f"floor({inner}/{s}) + 1 = {out}"


def window_index(var: str, s: int, d: int, off: str) -> tuple[str, str]:
    """'s*i + d*p' written simply, in text and TeX."""
    parts = [var if s == 1 else f"{s}{var}", off if d == 1 else f"{d}{off}"]
    return " + ".join(parts), " + ".join(parts)


def human_flops(n: float) -> str:
    for unit, scale in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:g} FLOP" if isinstance(n, float) else f"{n} FLOP"
