"""The paper's Table 5 for any network: per layer its output shape, the parameter
calculation, weights, biases, total and forward FLOPs; and the totals.

Figures come from the built network itself (the arrays it allocated), and the
calculation string is checked against them, so the text can never disagree with the
counts. FLOPs count a multiply-add as 2 and are per example; pooling counts one
operation per window cell.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass

from cnncli.nn.layers import BatchNorm, Conv2D, Dense, Layer
from cnncli.nn.network import Network


@dataclass
class Row:
    index: int
    layer: str
    output_shape: tuple[int, ...]
    calculation: str
    weights: int
    biases: int
    params: int
    flops: int
    backward_flops: int = 0


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
    update_flops: int = 0          # one optimizer step, all parameters
    batch_size: int = 0
    optimizer: str = ""

    @property
    def step_flops_per_example(self) -> float:
        """Forward + backward + the update's share of one example in a batch."""
        return self.flops + self.backward_flops + (self.update_flops / self.batch_size if self.batch_size else 0)

    def as_dict(self) -> dict:
        d = asdict(self)
        for r in d["rows"]:
            r["output_shape"] = list(r["output_shape"])
        d["input_shape"] = list(self.input_shape)
        return d


def layer_label(layer: Layer) -> str:
    act = getattr(layer, "activation", None)
    if act is not None and act.name != "linear" and layer.type_name != "activation":
        return f"{layer.type_name} ({act.name})"
    if layer.type_name == "activation":
        return f"activation ({act.name})"
    return layer.type_name


def calculation(layer: Layer) -> str:
    """``[(5x5x3)+1]x64`` for a conv, ``[2048+1]x500`` for a dense layer, ``-`` without parameters."""
    if isinstance(layer, Conv2D):
        kh, kw = layer.kernel_size
        c = layer.input_shape[2]
        inner = f"({kh}x{kw}x{c})"
        text = f"[{inner}+1]x{layer.filters}" if layer.use_bias else f"{inner}x{layer.filters}"
    elif isinstance(layer, Dense):
        d = layer.input_shape[0]
        text = f"[{d}+1]x{layer.units}" if layer.use_bias else f"{d}x{layer.units}"
    elif isinstance(layer, BatchNorm):
        text = f"2x{layer.input_shape[-1]}"
    else:
        return "-"
    return text


def _evaluate(calc: str) -> int:
    """The value of a calculation string (digits, x, +, brackets) without eval."""
    expr = calc.replace("[", "(").replace("]", ")")
    tokens, i = [], 0
    while i < len(expr):
        ch = expr[i]
        if ch.isdigit():
            j = i
            while j < len(expr) and expr[j].isdigit():
                j += 1
            tokens.append(int(expr[i:j]))
            i = j
        else:
            tokens.append(ch)
            i += 1
    pos = 0

    def parse_sum():
        nonlocal pos
        value = parse_product()
        while pos < len(tokens) and tokens[pos] == "+":
            pos += 1
            value += parse_product()
        return value

    def parse_product():
        nonlocal pos
        value = parse_atom()
        while pos < len(tokens) and tokens[pos] == "x":
            pos += 1
            value *= parse_atom()
        return value

    def parse_atom():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            value = parse_sum()
            pos += 1  # ")"
            return value
        return tok

    return parse_sum()


def summarize(network: Network, optimizer: dict | None = None, batch_size: int = 0) -> Summary:
    """Table 5 rows for ``network``; with an optimizer config and batch size, also the
    backward and update FLOPs of a training step."""
    rows = []
    itemsize = network.dtype.itemsize
    activation_values = math.prod(network.input_shape)
    for i, layer in enumerate(network.layers):
        weights, biases = layer.weight_count(), layer.bias_count()
        calc = calculation(layer)
        if calc != "-":
            assert _evaluate(calc) == weights + biases, (calc, weights, biases)
        rows.append(Row(i, layer_label(layer), tuple(layer.output_shape), calc, weights, biases,
                        weights + biases, layer.forward_flops(), backward_flops(layer, i > 0)))
        activation_values += math.prod(layer.output_shape)
    weights = sum(r.weights for r in rows)
    biases = sum(r.biases for r in rows)
    return Summary(tuple(network.input_shape), rows, weights + biases, weights, biases,
                   (weights + biases) * itemsize, activation_values * itemsize, sum(r.flops for r in rows),
                   str(network.dtype), backward_flops=sum(r.backward_flops for r in rows),
                   update_flops=update_flops(network, optimizer) if optimizer else 0, batch_size=batch_size,
                   optimizer=(optimizer or {}).get("name", ""))


SOURCES = ("Figures come from the network built on the config's input shape: parameter counts are the sizes of "
           "the arrays it allocates; FLOPs are per example, a multiply-add counting 2: forward = the layer's "
           "products and bias adds (pooling: one per window cell); backward = the activation derivative, the "
           "weight, bias and input gradients (the first layer computes no input gradient) and col2im's adds; "
           "update = the optimizer's elementwise operations on every parameter, once per step, shared by the "
           "batch's examples.")


def calculation_text(row: Row) -> str:
    return f"{row.calculation} = {row.params:,}" if row.calculation != "-" else "-"


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def human_flops(n: int) -> str:
    for unit, scale in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n} FLOP"


def shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)


def to_markdown(s: Summary) -> str:
    lines = [f"Input {shape_text(s.input_shape)}, {s.dtype}.", "",
             "| # | layer | output | calculation | weights | biases | parameters | forward FLOPs | backward FLOPs |",
             "|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for r in s.rows:
        lines.append(f"| {r.index} | {r.layer} | {shape_text(r.output_shape)} | {calculation_text(r)} | "
                     f"{r.weights:,} | {r.biases:,} | {r.params:,} | {r.flops:,} | {r.backward_flops:,} |")
    lines.append(f"| | **total** | | | **{s.weights:,}** | **{s.biases:,}** | **{s.params:,}** | **{s.flops:,}** "
                 f"| **{s.backward_flops:,}** |")
    lines += ["", f"Parameters: {s.params:,} = {s.weights:,} weights + {s.biases:,} biases "
              f"({human_bytes(s.param_bytes)}). Activations per example: {human_bytes(s.activation_bytes)}. "
              f"Per example: forward {human_flops(s.flops)}, backward {human_flops(s.backward_flops)}."]
    if s.batch_size:
        lines.append(f"One {s.optimizer} update: {human_flops(s.update_flops)} ({s.update_flops / s.batch_size:,.0f} "
                     f"per example at batch {s.batch_size}); a training step costs "
                     f"{human_flops(int(s.step_flops_per_example))} per example.")
    lines += ["", SOURCES, ""]
    return "\n".join(lines)


def to_csv(s: Summary) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "layer", "output_shape", "calculation", "weights", "biases", "params", "flops",
                "backward_flops"])
    for r in s.rows:
        w.writerow([r.index, r.layer, shape_text(r.output_shape), r.calculation, r.weights, r.biases, r.params,
                    r.flops, r.backward_flops])
    w.writerow(["total", "", "", "", s.weights, s.biases, s.params, s.flops, s.backward_flops])
    return buf.getvalue()


def to_json(s: Summary) -> str:
    return json.dumps(s.as_dict(), indent=2)


# --------------------------------------------------------------- training-step FLOPs
#: FLOPs of g'(z) * dL/da per element, written from the output a (see activations.py).
ACTIVATION_BACKWARD_FLOPS = {"linear": 0, "relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 3, "softplus": 3,
                             "softmax": 4}
#: FLOPs of one optimizer update per parameter (elementwise operations of its rule).
UPDATE_FLOPS = {"sgd": 2, "momentum": 4, "nesterov": 6, "adagrad": 7, "adadelta": 14, "rmsprop": 8, "adam": 12}


def backward_flops(layer: Layer, needs_input_grad: bool = True) -> int:
    """FLOPs of one example's backward pass through ``layer``.

    Counted: the activation derivative, the weight, bias and input gradients (a
    multiply-add is 2; the first layer computes no input gradient), col2im's additions,
    pooling's routing. Elementwise bookkeeping (masks, copies) is not counted.
    """
    out = math.prod(layer.output_shape)
    act = getattr(layer, "activation", None)
    total = ACTIVATION_BACKWARD_FLOPS.get(act.name, 2) * out if act is not None else 0
    if isinstance(layer, Conv2D):
        kh, kw = layer.kernel_size
        c = layer.input_shape[2]
        ho, wo = layer.out_hw
        gemm = 2 * kh * kw * c * layer.filters * ho * wo
        total += gemm + (layer.filters * ho * wo if layer.use_bias else 0)
        if needs_input_grad:
            total += gemm + kh * kw * c * ho * wo  # dcols, then col2im's adds
    elif isinstance(layer, Dense):
        gemm = 2 * layer.input_shape[0] * layer.units
        total += gemm + (layer.units if layer.use_bias else 0) + (gemm if needs_input_grad else 0)
    elif isinstance(layer, BatchNorm):
        total += 10 * out
    elif layer.type_name in ("max_pool2d", "avg_pool2d", "global_avg_pool2d"):
        total += layer.forward_flops()
    elif layer.type_name == "dropout":
        total += out
    return total


def update_flops(network: Network, optimizer: dict) -> int:
    """FLOPs of one optimizer step over all parameters (plus weight decay and clipping)."""
    params = sum(math.prod(p.shape) for p in network.parameters().values())
    per = UPDATE_FLOPS.get(optimizer.get("name"), 4)
    if optimizer.get("weight_decay"):
        per += 2
    if optimizer.get("clip_norm") is not None:
        per += 3
    return params * per


def training_flops(network: Network, optimizer: dict, batch_size: int) -> dict:
    """Per example: forward, backward, update (one step's update shared by the batch), total."""
    fwd = sum(layer.forward_flops() for layer in network.layers)
    bwd = sum(backward_flops(layer, i > 0) for i, layer in enumerate(network.layers))
    upd = update_flops(network, optimizer)
    return {"forward": fwd, "backward": bwd, "update_per_step": upd, "update": upd / batch_size,
            "total": fwd + bwd + upd / batch_size, "batch_size": batch_size}
