"""The paper's Table 5 for any network: per layer its output shape, the parameter
calculation, weights, biases, total and FLOPs; and the totals.

Every figure comes from the layers themselves (``Layer.parameter_calculation``,
``forward_flops``, ``backward_flops``, ``weight_count``...), of the network built on the
config's input shape, and the calculation string is checked against the arrays the
layer allocates, so the text can never disagree with the counts. FLOPs count a
multiply-add as 2 and are per example; pooling counts one operation per window cell. A
layer (or optimizer) that declares no FLOPs shows ``n/a`` and the totals say they leave
it out.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field

from cnncli.errors import ConfigError
from cnncli.nn.describe import human_flops, shape_text
from cnncli.nn.layers import Layer
from cnncli.nn.network import Network
from cnncli.nn.optimizers import make_optimizer

__all__ = ["Row", "Summary", "summarize", "to_markdown", "to_csv", "to_json", "calculation_text", "human_bytes",
           "human_flops", "shape_text", "training_flops", "SOURCES"]


@dataclass
class Row:
    index: int
    layer: str
    output_shape: tuple[int, ...]
    calculation: str
    weights: int
    biases: int
    params: int
    flops: int | None
    backward_flops: int | None = 0


@dataclass
class Summary:
    input_shape: tuple[int, ...]
    rows: list[Row]
    params: int
    weights: int
    biases: int
    param_bytes: int
    activation_bytes: int
    flops: int
    dtype: str
    backward_flops: int = 0
    update_flops: int | None = 0   # one optimizer step, all parameters
    batch_size: int = 0
    optimizer: str = ""
    #: Layers left out of the FLOP totals because they declare none ("layers[3] (my_layer)").
    undeclared: list[str] = field(default_factory=list)
    #: Parameters of layers frozen with ``trainable: false`` (Keras's "non-trainable").
    non_trainable: int = 0

    @property
    def trainable(self) -> int:
        return self.params - self.non_trainable

    def trainable_text(self) -> str:
        """``trainable 1,024,500, non-trainable 210,293 (frozen)``, or "" when nothing is frozen."""
        return (f"trainable {self.trainable:,}, non-trainable {self.non_trainable:,} (frozen)"
                if self.non_trainable else "")

    @property
    def step_flops_per_example(self) -> float:
        """Forward + backward + the update's share of one example in a batch."""
        update = (self.update_flops or 0) / self.batch_size if self.batch_size else 0
        return self.flops + self.backward_flops + update

    def as_dict(self) -> dict:
        d = asdict(self)
        for r in d["rows"]:
            r["output_shape"] = list(r["output_shape"])
        d["input_shape"] = list(self.input_shape)
        return d


def evaluate_calculation(calc: str) -> int | None:
    """The value of a calculation string (digits, x, +, brackets, parentheses) without
    eval; None when it is not such a string."""
    tokens, i = [], 0
    expr = calc.replace("[", "(").replace("]", ")").replace(" ", "")
    while i < len(expr):
        if expr[i].isdigit():
            j = i
            while j < len(expr) and expr[j].isdigit():
                j += 1
            tokens.append(int(expr[i:j]))
            i = j
        elif expr[i] in "x+()":
            tokens.append(expr[i])
            i += 1
        else:
            return None
    pos = 0

    def parse(level):  # level 0: sums, 1: products, 2: atoms
        nonlocal pos
        if level == 2:
            tok = tokens[pos]
            pos += 1
            if tok == "(":
                value = parse(0)
                if tokens[pos] != ")":
                    raise ValueError
                pos += 1
                return value
            if not isinstance(tok, int):
                raise ValueError
            return tok
        value = parse(level + 1)
        op = "+" if level == 0 else "x"
        while pos < len(tokens) and tokens[pos] == op:
            pos += 1
            other = parse(level + 1)
            value = value + other if op == "+" else value * other
        return value

    try:
        value = parse(0)
    except (ValueError, IndexError):
        return None
    return value if pos == len(tokens) else None


def layer_row(index: int, layer: Layer, first: bool = False) -> Row:
    """One row of Table 5, from what the layer says of itself (its calculation checked)."""
    weights, biases = layer.weight_count(), layer.bias_count()
    calc = layer.parameter_calculation()
    if calc is not None and evaluate_calculation(calc) != weights + biases:
        raise ConfigError(f"model.layers[{index}]", "", None, raw=(
            f"{layer.type_name}: parameter_calculation() gives {calc!r}, which is not its {weights + biases:,} "
            "parameters"))
    label = layer.label() + ("" if layer.trainable else ", frozen")
    return Row(index, label, tuple(layer.output_shape), calc or "-", weights, biases, weights + biases,
               layer.forward_flops(), layer.backward_flops(input_grad=not first))


def summarize(network: Network, optimizer: dict | None = None, batch_size: int = 0) -> Summary:
    """Table 5 rows for ``network``; with an optimizer config and batch size, also the
    backward and update FLOPs of a training step."""
    rows = [layer_row(i, layer, i == 0) for i, layer in enumerate(network.layers)]
    itemsize = network.dtype.itemsize
    activation_values = math.prod(network.input_shape) + sum(math.prod(r.output_shape) for r in rows)
    weights = sum(r.weights for r in rows)
    biases = sum(r.biases for r in rows)
    undeclared = [f"layers[{r.index}] ({r.layer})" for r in rows if r.flops is None or r.backward_flops is None]
    return Summary(tuple(network.input_shape), rows, weights + biases, weights, biases,
                   (weights + biases) * itemsize, activation_values * itemsize,
                   sum(r.flops or 0 for r in rows), str(network.dtype),
                   backward_flops=sum(r.backward_flops or 0 for r in rows),
                   update_flops=update_flops(network, optimizer) if optimizer else 0, batch_size=batch_size,
                   optimizer=(optimizer or {}).get("name", ""), undeclared=undeclared,
                   non_trainable=sum(r.params for r, layer in zip(rows, network.layers) if not layer.trainable))


SOURCES = ("Figures come from the network built on the config's input shape: parameter counts are the sizes of "
           "the arrays it allocates; FLOPs are per example, a multiply-add counting 2: forward = the layer's "
           "products and bias adds (pooling: one per window cell); backward = the activation derivative, the "
           "weight, bias and input gradients (the first layer computes no input gradient) and col2im's adds; "
           "update = the optimizer's elementwise operations on every parameter, once per step, shared by the "
           "batch's examples.")


def calculation_text(row: Row) -> str:
    return f"{row.calculation} = {row.params:,}" if row.calculation != "-" else "-"


def flops_text(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def undeclared_note(s: Summary) -> str:
    """The sentence saying which layers the FLOP totals leave out, or ''."""
    if not s.undeclared:
        return ""
    return f"FLOP totals leave out {', '.join(s.undeclared)}, which declare no FLOPs (n/a)."


def to_markdown(s: Summary) -> str:
    lines = [f"Input {shape_text(s.input_shape)}, {s.dtype}.", "",
             "| # | layer | output | calculation | weights | biases | parameters | forward FLOPs | backward FLOPs |",
             "|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for r in s.rows:
        lines.append(f"| {r.index} | {r.layer} | {shape_text(r.output_shape)} | {calculation_text(r)} | "
                     f"{r.weights:,} | {r.biases:,} | {r.params:,} | {flops_text(r.flops)} | "
                     f"{flops_text(r.backward_flops)} |")
    lines.append(f"| | **total** | | | **{s.weights:,}** | **{s.biases:,}** | **{s.params:,}** | **{s.flops:,}** "
                 f"| **{s.backward_flops:,}** |")
    lines += ["", f"Parameters: {s.params:,} = {s.weights:,} weights + {s.biases:,} biases "
              f"({human_bytes(s.param_bytes)}{'; ' + s.trainable_text() if s.non_trainable else ''}). "
              f"Activations per example: {human_bytes(s.activation_bytes)}. "
              f"Per example: forward {human_flops(s.flops)}, backward {human_flops(s.backward_flops)}."]
    if s.batch_size:
        if s.update_flops is None:
            lines.append(f"One {s.optimizer} update: n/a FLOPs (the optimizer declares none).")
        else:
            lines.append(f"One {s.optimizer} update: {human_flops(s.update_flops)} "
                         f"({s.update_flops / s.batch_size:,.0f} per example at batch {s.batch_size}); a training "
                         f"step costs {human_flops(int(s.step_flops_per_example))} per example.")
    if s.undeclared:
        lines.append(undeclared_note(s))
    lines += ["", SOURCES, ""]
    return "\n".join(lines)


def to_csv(s: Summary) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "layer", "output_shape", "calculation", "weights", "biases", "params", "flops",
                "backward_flops"])
    for r in s.rows:
        w.writerow([r.index, r.layer, shape_text(r.output_shape), r.calculation, r.weights, r.biases, r.params,
                    "n/a" if r.flops is None else r.flops, "n/a" if r.backward_flops is None else r.backward_flops])
    w.writerow(["total", "", "", "", s.weights, s.biases, s.params, s.flops, s.backward_flops])
    return buf.getvalue()


def to_json(s: Summary) -> str:
    return json.dumps(s.as_dict(), indent=2)


# --------------------------------------------------------------- training-step FLOPs
def update_flops(network: Network, optimizer: dict) -> int | None:
    """FLOPs of one optimizer step over all parameters (weight decay and clipping
    included); None when the optimizer declares none."""
    per = make_optimizer(optimizer).flops_per_parameter()
    return None if per is None else network.parameter_count() * per


def training_flops(network: Network, optimizer: dict, batch_size: int) -> dict:
    """Per example: forward, backward, update (one step's update shared by the batch),
    total; layers or optimizers that declare no FLOPs count 0 (see ``summarize``)."""
    fwd = sum(layer.forward_flops() or 0 for layer in network.layers)
    bwd = sum(layer.backward_flops(input_grad=i > 0) or 0 for i, layer in enumerate(network.layers))
    upd = update_flops(network, optimizer)
    per_example = (upd or 0) / batch_size
    return {"forward": fwd, "backward": bwd, "update_per_step": upd, "update": per_example,
            "total": fwd + bwd + per_example, "batch_size": batch_size}
