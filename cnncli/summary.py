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


def summarize(network: Network) -> Summary:
    rows = []
    itemsize = network.dtype.itemsize
    activation_values = math.prod(network.input_shape)
    for i, layer in enumerate(network.layers):
        weights, biases = layer.weight_count(), layer.bias_count()
        calc = calculation(layer)
        if calc != "-":
            assert _evaluate(calc) == weights + biases, (calc, weights, biases)
        rows.append(Row(i, layer_label(layer), tuple(layer.output_shape), calc, weights, biases,
                        weights + biases, layer.forward_flops()))
        activation_values += math.prod(layer.output_shape)
    weights = sum(r.weights for r in rows)
    biases = sum(r.biases for r in rows)
    return Summary(tuple(network.input_shape), rows, weights + biases, weights, biases,
                   (weights + biases) * itemsize, activation_values * itemsize, sum(r.flops for r in rows),
                   str(network.dtype))


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
             "| # | layer | output | calculation | weights | biases | parameters | forward FLOPs |",
             "|---:|---|---|---|---:|---:|---:|---:|"]
    for r in s.rows:
        lines.append(f"| {r.index} | {r.layer} | {shape_text(r.output_shape)} | {calculation_text(r)} | "
                     f"{r.weights:,} | {r.biases:,} | {r.params:,} | {r.flops:,} |")
    lines.append(f"| | **total** | | | **{s.weights:,}** | **{s.biases:,}** | **{s.params:,}** | **{s.flops:,}** |")
    lines += ["", f"Parameters: {s.params:,} = {s.weights:,} weights + {s.biases:,} biases "
              f"({human_bytes(s.param_bytes)}). Activations per example: {human_bytes(s.activation_bytes)}. "
              f"Forward pass per example: {human_flops(s.flops)}.", ""]
    return "\n".join(lines)


def to_csv(s: Summary) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "layer", "output_shape", "calculation", "weights", "biases", "params", "flops"])
    for r in s.rows:
        w.writerow([r.index, r.layer, shape_text(r.output_shape), r.calculation, r.weights, r.biases, r.params,
                    r.flops])
    w.writerow(["total", "", "", "", s.weights, s.biases, s.params, s.flops])
    return buf.getvalue()


def to_json(s: Summary) -> str:
    return json.dumps(s.as_dict(), indent=2)
