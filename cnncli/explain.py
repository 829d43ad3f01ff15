"""The mathematics of a configured network, layer by layer, with its real sizes.

``explain(config)`` returns a document (a list of :class:`Section`) that a renderer
turns into plain text, Markdown (with ``$$`` math) or a LaTeX document. For each layer:
the forward equation with this layer's sizes, activation, padding, stride and dilation;
the output-shape arithmetic; the parameter arithmetic (Table 5); the backward equations
(delta, weight, bias and input gradients) with their shapes; FLOPs per example. Then the
loss and its derivative for the configured output (the fused sigmoid + BCE gradient
``yhat - y``), and the optimizer's update rule with its configured hyperparameters.

The equations are the corrected ones (see docs/MATH.md and ERRATA.md), written with
zero-based indices over NHWC arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cnncli.nn.layers import AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D
from cnncli.nn.layers.base import ActivationLayer
from cnncli.summary import backward_flops, calculation_text, human_flops, shape_text, training_flops


@dataclass
class Eq:
    """One equation: plain text and LaTeX; ``shape`` says the array's shape, if any."""

    text: str
    tex: str
    shape: str = ""


@dataclass
class Section:
    title: str
    notes: list[str] = field(default_factory=list)
    forward: list[Eq] = field(default_factory=list)
    arithmetic: list[str] = field(default_factory=list)
    backward: list[Eq] = field(default_factory=list)
    flops: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------- activations
ACT_TEXT = {
    "tanh": ("a = tanh(z)", r"a = \tanh(z)", "g'(z) = 1 - a^2", r"g'(z) = 1 - a^2"),
    "sigmoid": ("a = 1 / (1 + e^-z)", r"a = \frac{1}{1 + e^{-z}}", "g'(z) = a (1 - a)", r"g'(z) = a(1 - a)"),
    "relu": ("a = max(0, z)", r"a = \max(0, z)", "g'(z) = 1 if a > 0 else 0", r"g'(z) = [a > 0]"),
    "leaky_relu": ("a = z if z > 0 else s z", r"a = \begin{cases} z & z > 0 \\ s z & z \le 0 \end{cases}",
                   "g'(z) = 1 if a > 0 else s", r"g'(z) = \begin{cases} 1 & a > 0 \\ s & a \le 0 \end{cases}"),
    "softplus": ("a = ln(1 + e^z)", r"a = \ln(1 + e^{z})", "g'(z) = 1 - e^-a = sigmoid(z)",
                 r"g'(z) = 1 - e^{-a} = \sigma(z)"),
    "softmax": ("a_k = e^z_k / sum_j e^z_j", r"a_k = \frac{e^{z_k}}{\sum_j e^{z_j}}",
                "delta = a * (dL/da - sum_k a_k dL/da_k)",
                r"\delta = a \odot \Big(\frac{\partial L}{\partial a} - \sum_k a_k \frac{\partial L}{\partial a_k}\Big)"),
}


def _activation(layer) -> str:
    act = getattr(layer, "activation", None)
    return act.name if act is not None else "linear"


def _act_eqs(layer, out_shape: str) -> tuple[list[Eq], list[Eq]]:
    """Forward a = g(z) and backward delta = dL/da * g'(z) for a layer's activation."""
    name = _activation(layer)
    if name == "linear":
        return [Eq("a = z (no activation)", "a = z", out_shape)], [Eq("delta = dL/da", r"\delta = \partial L/\partial a",
                                                                      out_shape)]
    ft, ftex, dt, dtex = ACT_TEXT[name]
    if name == "leaky_relu":
        s = layer.activation.negative_slope
        ft, ftex = ft.replace("s z", f"{s:g} z"), ftex.replace("s z", f"{s:g} z")
        dt, dtex = dt.replace("else s", f"else {s:g}"), dtex.replace(r"s & a", f"{s:g} & a")
    fwd = [Eq(ft, ftex, out_shape)]
    if name == "softmax":
        bwd = [Eq(dt, dtex, out_shape)]
    else:
        bwd = [Eq(f"delta = dL/da * g'(z),  {dt}", r"\delta = \frac{\partial L}{\partial a} \odot g'(z),\quad " + dtex,
                  out_shape)]
    return fwd, bwd


# ------------------------------------------------------------------------------ layers
def _size_arith(n: int, before: int, after: int, k: int, s: int, d: int, out: int) -> str:
    pad = f"2*{before}" if before == after else f"{before} + {after}"
    span = f"{k}" if d == 1 else f"({d}*({k}-1)+1)"  # the dilated kernel's extent, subtracted whole
    inner = f"({n} + {pad} - {span})"
    exact = (n + before + after - (d * (k - 1) + 1)) % s == 0
    return f"{inner}/{s} + 1 = {out}" if exact else f"floor({inner}/{s}) + 1 = {out}"


def _index(var: str, s: int, d: int, off: str) -> tuple[str, str]:
    """'s*i + d*p - pad' written simply, in text and TeX."""
    parts, tex = [], []
    parts.append(var if s == 1 else f"{s}{var}")
    tex.append(var if s == 1 else f"{s}{var}")
    parts.append(off if d == 1 else f"{d}{off}")
    tex.append(off if d == 1 else f"{d}{off}")
    return " + ".join(parts), " + ".join(tex)


def conv_section(i: int, layer: Conv2D, first: bool) -> Section:
    h, w, c = layer.input_shape
    ho, wo, f = layer.output_shape
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    pt, pb, pl, pr = layer.pads
    act = _activation(layer)
    sec = Section(f"layers[{i}]: conv2d {kh}x{kw}x{f}, {act}")
    padded = any(layer.pads)
    xname = "X_pad" if padded else "X"
    if padded:
        sec.notes.append(f"X_pad is the input padded with zeros: {pt} row(s) on top, {pb} at the bottom, {pl} "
                         f"column(s) left, {pr} right ({'same' if layer.padding == 'same' else layer.padding!r} "
                         f"padding), shape (N, {h + pt + pb}, {w + pl + pr}, {c}).")
    ri, rtex = _index("i", sh, dh, "p")
    ci, ctex = _index("j", sw, dw, "q")
    bias_t = "b[f] + " if layer.use_bias else ""
    bias_tex = "b_f + " if layer.use_bias else ""
    sec.forward.append(Eq(
        f"z[n,i,j,f] = {bias_t}sum_(p<{kh}, q<{kw}, r<{c}) W[p,q,r,f] * {xname}[n, {ri}, {ci}, r]",
        rf"z_{{n,i,j,f}} = {bias_tex}\sum_{{p=0}}^{{{kh - 1}}}\sum_{{q=0}}^{{{kw - 1}}}\sum_{{r=0}}^{{{c - 1}}}"
        rf" W_{{p,q,r,f}}\, {xname.replace('_pad', '^{pad}')}_{{n,\,{rtex},\,{ctex},\,r}}",
        f"z: (N, {ho}, {wo}, {f}); W: ({kh}, {kw}, {c}, {f})" + (f"; b: ({f},)" if layer.use_bias else "")))
    fa, ba = _act_eqs(layer, f"(N, {ho}, {wo}, {f})")
    sec.forward += fa
    sec.arithmetic.append(f"output height: {_size_arith(h, pt, pb, kh, sh, dh, ho)}")
    sec.arithmetic.append(f"output width:  {_size_arith(w, pl, pr, kw, sw, dw, wo)}")
    sec.arithmetic.append(f"parameters: {calculation_text(summarize_row(layer))}")
    sec.backward += ba
    sec.backward.append(Eq(
        f"dW[p,q,r,f] = sum_(n, i<{ho}, j<{wo}) delta[n,i,j,f] * {xname}[n, {ri}, {ci}, r]",
        rf"\frac{{\partial L}}{{\partial W_{{p,q,r,f}}}} = \sum_{{n}}\sum_{{i=0}}^{{{ho - 1}}}\sum_{{j=0}}^{{{wo - 1}}}"
        rf" \delta_{{n,i,j,f}}\, {xname.replace('_pad', '^{pad}')}_{{n,\,{rtex},\,{ctex},\,r}}",
        f"dW: ({kh}, {kw}, {c}, {f}), one gradient per filter"))
    if layer.use_bias:
        sec.backward.append(Eq("db[f] = sum_(n,i,j) delta[n,i,j,f]",
                               r"\frac{\partial L}{\partial b_f} = \sum_{n,i,j} \delta_{n,i,j,f}", f"db: ({f},)"))
    if first:
        sec.backward.append(Eq("dX is not computed: nothing comes before the first layer, and the input is "
                               "never updated", r"\text{(no } \partial L/\partial X \text{: the input is never updated)}"))
    else:
        sec.backward.append(Eq(
            f"d{xname}[n, {ri}, {ci}, r] += sum_(f<{f}) delta[n,i,j,f] * W[p,q,r,f]   "
            "(the full convolution of delta with the kernel rotated by 180 degrees)",
            rf"\frac{{\partial L}}{{\partial {xname.replace('_pad', '^{pad}')}_{{n,\,{rtex},\,{ctex},\,r}}}}"
            rf" \mathrel{{+}}= \sum_{{f=0}}^{{{f - 1}}} \delta_{{n,i,j,f}}\, W_{{p,q,r,f}}",
            f"dX: (N, {h}, {w}, {c})" + (" after cropping the padding" if padded else "")))
    return sec


def summarize_row(layer):
    """A summary Row for one built layer (for its calculation text)."""
    from cnncli.summary import Row, calculation

    return Row(0, layer.type_name, tuple(layer.output_shape), calculation(layer), layer.weight_count(),
               layer.bias_count(), layer.weight_count() + layer.bias_count(), layer.forward_flops())


def pool_section(i: int, layer) -> Section:
    h, w, c = layer.input_shape
    ho, wo, _ = layer.output_shape
    (kh, kw), (sh, sw) = layer.pool_size, layer.stride
    pt, pb, pl, pr = layer.pads
    is_max = isinstance(layer, MaxPool2D)
    sec = Section(f"layers[{i}]: {layer.type_name} {kh}x{kw}, stride {sh}x{sw}")
    xname = "X_pad" if any(layer.pads) else "X"
    if any(layer.pads):
        fill = "-inf (never the maximum)" if is_max else "zeros"
        sec.notes.append(f"X_pad: the input padded with {fill}: ({pt}, {pb}) rows, ({pl}, {pr}) columns.")
    ri, rtex = _index("i", sh, 1, "u")
    ci, ctex = _index("j", sw, 1, "v")
    xtex = xname.replace("_pad", "^{pad}")
    if is_max:
        sec.forward.append(Eq(f"y[n,i,j,c] = max_(u<{kh}, v<{kw}) {xname}[n, {ri}, {ci}, c]",
                              rf"y_{{n,i,j,c}} = \max_{{u<{kh},\,v<{kw}}} {xtex}_{{n,\,{rtex},\,{ctex},\,c}}",
                              f"y: (N, {ho}, {wo}, {c})"))
        sec.backward.append(Eq(
            f"dX[n, {ri}, {ci}, c] += dy[n,i,j,c] for the arg max (u, v) of each window only; on ties the first "
            "maximum in row-major window order gets it",
            rf"\frac{{\partial L}}{{\partial {xtex}_{{n,\,{rtex},\,{ctex},\,c}}}} \mathrel{{+}}= "
            rf"\frac{{\partial L}}{{\partial y_{{n,i,j,c}}}}\,[(u,v) = \arg\max]",
            f"dX: (N, {h}, {w}, {c})"))
    else:
        denom = f"{kh * kw}" if (layer.count_include_pad or not any(layer.pads)) else "|w_ij|"
        sec.forward.append(Eq(f"y[n,i,j,c] = (1/{denom}) sum_(u<{kh}, v<{kw}) {xname}[n, {ri}, {ci}, c]",
                              rf"y_{{n,i,j,c}} = \frac{{1}}{{{denom}}} \sum_{{u<{kh},\,v<{kw}}} "
                              rf"{xtex}_{{n,\,{rtex},\,{ctex},\,c}}", f"y: (N, {ho}, {wo}, {c})"))
        if denom == "|w_ij|":
            sec.notes.append("|w_ij| is the number of real (not padding) cells in window (i, j).")
        sec.backward.append(Eq(f"dX[n, {ri}, {ci}, c] += dy[n,i,j,c] / {denom} for every cell of the window",
                               rf"\frac{{\partial L}}{{\partial {xtex}_{{n,\,{rtex},\,{ctex},\,c}}}} \mathrel{{+}}= "
                               rf"\frac{{1}}{{{denom}}}\frac{{\partial L}}{{\partial y_{{n,i,j,c}}}}",
                               f"dX: (N, {h}, {w}, {c})"))
    sec.arithmetic.append(f"output height: {_size_arith(h, pt, pb, kh, sh, 1, ho)}")
    sec.arithmetic.append(f"output width:  {_size_arith(w, pl, pr, kw, sw, 1, wo)}")
    sec.arithmetic.append("parameters: none")
    return sec


def dense_section(i: int, layer: Dense, first: bool) -> Section:
    d, u = layer.input_shape[0], layer.units
    act = _activation(layer)
    sec = Section(f"layers[{i}]: dense {u}, {act}")
    bias = " + b" if layer.use_bias else ""
    sec.forward.append(Eq(f"z = X W{bias}", r"z = XW" + (" + b" if layer.use_bias else ""),
                          f"X: (N, {d}); W: ({d}, {u}); z: (N, {u})"))
    fa, ba = _act_eqs(layer, f"(N, {u})")
    sec.forward += fa
    sec.arithmetic.append(f"parameters: {calculation_text(summarize_row(layer))}")
    sec.backward += ba
    sec.backward.append(Eq("dW = X^T delta", r"\frac{\partial L}{\partial W} = X^{\top}\delta", f"dW: ({d}, {u})"))
    if layer.use_bias:
        sec.backward.append(Eq("db = sum_n delta[n]", r"\frac{\partial L}{\partial b} = \sum_n \delta_n",
                               f"db: ({u},)"))
    if not first:
        sec.backward.append(Eq("dX = delta W^T", r"\frac{\partial L}{\partial X} = \delta W^{\top}", f"dX: (N, {d})"))
    return sec


def simple_section(i: int, layer, network) -> Section:
    shape_in = "N, " + ", ".join(str(d) for d in layer.input_shape)  # "N, 4, 4, 128"
    shape_out = "N, " + ", ".join(str(d) for d in layer.output_shape)
    if isinstance(layer, Flatten):
        h, w, c = layer.input_shape if len(layer.input_shape) == 3 else (1, 1, layer.input_shape[0])
        sec = Section(f"layers[{i}]: flatten")
        sec.forward.append(Eq(f"x[n, (h*{w} + w)*{c} + c] = X[n, h, w, c]",
                              rf"x_{{n,\,(h\cdot{w} + w)\cdot{c} + c}} = X_{{n,h,w,c}}",
                              f"(N, {h}, {w}, {c}) -> (N, {h * w * c})"))
        sec.arithmetic.append(f"{h} x {w} x {c} = {h * w * c} features, in (h, w, c) order")
        sec.backward.append(Eq("dX = dx reshaped back", r"\partial L/\partial X = \text{reshape}(\partial L/\partial x)",
                               f"({shape_in})"))
        return sec
    if isinstance(layer, GlobalAvgPool2D):
        h, w, c = layer.input_shape
        sec = Section(f"layers[{i}]: global_avg_pool2d")
        sec.forward.append(Eq(f"y[n,c] = (1/{h * w}) sum_(i<{h}, j<{w}) X[n,i,j,c]",
                              rf"y_{{n,c}} = \frac{{1}}{{{h * w}}}\sum_{{i,j}} X_{{n,i,j,c}}", f"(N, {c})"))
        sec.backward.append(Eq(f"dX[n,i,j,c] = dy[n,c] / {h * w}",
                               rf"\partial L/\partial X_{{n,i,j,c}} = \frac{{1}}{{{h * w}}}\partial L/\partial y_{{n,c}}",
                               f"(N, {h}, {w}, {c})"))
        return sec
    if isinstance(layer, Dropout):
        p = layer.rate
        sec = Section(f"layers[{i}]: dropout {p:g}")
        sec.forward.append(Eq(f"training: y = x * m / (1 - {p:g}), m ~ Bernoulli({1 - p:g}); inference: y = x",
                              rf"y = x \odot m / (1 - {p:g}),\quad m \sim \mathrm{{Bernoulli}}({1 - p:g})",
                              f"({shape_in})"))
        sec.backward.append(Eq(f"dx = dy * m / (1 - {p:g})", rf"\partial L/\partial x = \partial L/\partial y \odot m / (1 - {p:g})"))
        return sec
    if isinstance(layer, BatchNorm):
        c = layer.input_shape[-1]
        sec = Section(f"layers[{i}]: batch_norm")
        sec.forward.append(Eq("xhat = (x - mu) / sqrt(var + eps), y = gamma * xhat + beta (training: batch "
                              "statistics over all axes but the last; inference: running statistics)",
                              r"\hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}},\quad y = \gamma \hat x + \beta",
                              f"gamma, beta: ({c},)"))
        sec.arithmetic.append(f"parameters: {calculation_text(summarize_row(layer))} (and 2x{c} running statistics)")
        sec.backward.append(Eq("dbeta = sum dy, dgamma = sum dy * xhat, dx = gamma/(m sqrt(var+eps)) "
                               "(m dy - sum dy - xhat sum(dy * xhat))",
                               r"\frac{\partial L}{\partial x} = \frac{\gamma}{m\sqrt{\sigma^2+\epsilon}}"
                               r"\Big(m\,\partial_y L - \sum \partial_y L - \hat x \sum \partial_y L\,\hat x\Big)"))
        return sec
    if isinstance(layer, ActivationLayer):
        sec = Section(f"layers[{i}]: activation {_activation(layer)}")
        fa, ba = _act_eqs(layer, f"({shape_out})")
        sec.forward += [Eq(e.text.replace("a =", "y =", 1), e.tex, e.shape) for e in fa]
        sec.backward += ba
        return sec
    return Section(f"layers[{i}]: {layer.type_name}", notes=["(no equations available for this layer)"])


# ------------------------------------------------------------------------ loss, update
def _fused(network, loss: dict) -> bool:
    """Whether training differentiates the output activation and the loss together."""
    from cnncli.nn.losses import make_loss

    return network.uses_logits(make_loss(loss))


def loss_section(network, loss: dict, batch_size: int) -> Section:
    name, reduction = loss["name"], loss["reduction"]
    out = network.output_shape
    fused = _fused(network, loss)
    scale_t = "" if reduction == "sum" else ("1/N " if name in ("categorical_crossentropy", "kl_divergence")
                                             else f"1/(N*{math.prod(out)}) " if math.prod(out) > 1 else "1/N ")
    scale_tex = "" if reduction == "sum" else (r"\frac{1}{N}" if name in ("categorical_crossentropy", "kl_divergence")
                                               or math.prod(out) == 1 else rf"\frac{{1}}{{N\cdot{math.prod(out)}}}")
    sec = Section(f"loss: {name} ({reduction})")
    if reduction == "sum":
        sec.notes.append("reduction: sum adds the loss over the batch's examples, as the paper's Eqs. 7-9; "
                         f"the gradient is {batch_size} times that of the mean at batch {batch_size}.")
    else:
        sec.notes.append("reduction: mean, as Keras and PyTorch (the paper's Eqs. 7-9 are sums).")
    forms = {
        "binary_crossentropy": ("E = -{s}sum_n [y ln yhat + (1 - y) ln(1 - yhat)]",
                                r"E = -{s}\sum_n \big[y_n \ln \hat y_n + (1 - y_n)\ln(1 - \hat y_n)\big]",
                                "dE/dyhat = {s}(yhat - y) / (yhat (1 - yhat))",
                                r"\frac{{\partial E}}{{\partial \hat y}} = {s}\frac{{\hat y - y}}{{\hat y(1 - \hat y)}}"),
        "categorical_crossentropy": ("E = -{s}sum_n sum_k y[n,k] ln yhat[n,k]",
                                     r"E = -{s}\sum_n\sum_k y_{{n,k}}\ln \hat y_{{n,k}}",
                                     "dE/dyhat = -{s}y / yhat", r"\frac{{\partial E}}{{\partial \hat y}} = -{s}\frac{{y}}{{\hat y}}"),
        "kl_divergence": ("E = {s}sum_n sum_k y[n,k] (ln y[n,k] - ln yhat[n,k])",
                          r"E = {s}\sum_n\sum_k y_{{n,k}}(\ln y_{{n,k}} - \ln \hat y_{{n,k}})",
                          "dE/dyhat = -{s}y / yhat", r"\frac{{\partial E}}{{\partial \hat y}} = -{s}\frac{{y}}{{\hat y}}"),
        "mse": ("E = {s}{h}sum (yhat - y)^2", r"E = {s}{h}\sum (\hat y - y)^2", "dE/dyhat = {s}{d}(yhat - y)",
                r"\frac{{\partial E}}{{\partial \hat y}} = {s}{d}(\hat y - y)"),
        "mae": ("E = {s}sum |yhat - y|", r"E = {s}\sum |\hat y - y|", "dE/dyhat = {s}sign(yhat - y)",
                r"\frac{{\partial E}}{{\partial \hat y}} = {s}\,\mathrm{{sign}}(\hat y - y)"),
    }
    half = loss.get("half", False)
    ft, ftex, dt, dtex = forms[name]
    fmt = {"s": scale_t, "h": "1/2 " if half else "", "d": "" if half else "2 "}
    fmt_tex = {"s": scale_tex, "h": r"\frac{1}{2}" if half else "", "d": "" if half else "2"}
    sec.forward.append(Eq(ft.format(**fmt), ftex.format(**fmt_tex), f"yhat: (N, {shape_text(out)})"))
    if fused:
        act = network.output_activation
        sec.notes.append(f"The output is {act} and the loss {name}: the pair is differentiated together, from "
                         "the logits z, which stays finite even when yhat rounds to 0 or 1 (ERRATA 5: the paper's "
                         "Eq. 46 has the opposite sign).")
        if act == "sigmoid":
            sec.backward.append(Eq(f"delta = dE/dz = {scale_t}(yhat - y)   (fused sigmoid + binary cross-entropy)",
                                   rf"\delta = \frac{{\partial E}}{{\partial z}} = {scale_tex}(\hat y - y)",
                                   f"(N, {shape_text(out)})"))
        else:
            sec.backward.append(Eq(f"delta = dE/dz = {scale_t}(yhat - y)   (fused softmax + {name}, one-hot y)",
                                   rf"\delta = \frac{{\partial E}}{{\partial z}} = {scale_tex}(\hat y - y)",
                                   f"(N, {shape_text(out)})"))
    else:
        sec.backward.append(Eq(dt.format(**fmt), dtex.format(**fmt_tex), f"(N, {shape_text(out)})"))
    return sec


def optimizer_section(opt: dict, batch_size: int, update_flops: int) -> Section:
    name, lr = opt["name"], opt["lr"]
    sec = Section(f"update: {name}, lr {lr:g}")
    rules = {
        "sgd": [("W <- W - {lr} g", r"W \leftarrow W - {lr}\, g")],
        "momentum": [("M <- {m} M + {lr} g;  W <- W - M", r"M \leftarrow {m} M + {lr}\,g,\quad W \leftarrow W - M")],
        "nesterov": [("M <- {m} M + {lr} g;  W <- W - ({lr} g + {m} M)   (W is the look-ahead point)",
                      r"M \leftarrow {m} M + {lr}\,g,\quad W \leftarrow W - ({lr}\,g + {m} M)")],
        "adagrad": [("G <- G + g^2;  W <- W - {lr} g / (sqrt(G) + {eps})",
                     r"G \leftarrow G + g^2,\quad W \leftarrow W - \frac{{{lr}\,g}}{{\sqrt{{G}} + {eps}}}")],
        "adadelta": [("E_g <- {rho} E_g + {rho1} g^2", r"E_g \leftarrow {rho} E_g + {rho1}\, g^2"),
                     ("D <- sqrt(E_d + {eps}) / sqrt(E_g + {eps}) * g",
                      r"D \leftarrow \frac{{\sqrt{{E_d + {eps}}}}}{{\sqrt{{E_g + {eps}}}}}\, g"),
                     ("E_d <- {rho} E_d + {rho1} D^2;  W <- W - {lr} D",
                      r"E_d \leftarrow {rho} E_d + {rho1} D^2,\quad W \leftarrow W - {lr}\, D")],
        "rmsprop": [("E <- {rho} E + {rho1} g^2;  W <- W - {lr} g / (sqrt(E) + {eps})",
                     r"E \leftarrow {rho} E + {rho1} g^2,\quad W \leftarrow W - \frac{{{lr}\,g}}{{\sqrt{{E}} + {eps}}}")],
        "adam": [("m <- {b1} m + {b1c} g;  v <- {b2} v + {b2c} g^2",
                  r"m \leftarrow {b1} m + {b1c}\, g,\quad v \leftarrow {b2} v + {b2c}\, g^2"),
                 ("W <- W - {lr} (m / (1 - {b1}^t)) / (sqrt(v / (1 - {b2}^t)) + {eps})",
                  r"W \leftarrow W - {lr}\frac{{m/(1 - {b1}^t)}}{{\sqrt{{v/(1-{b2}^t)}} + {eps}}}")],
    }
    vals = {"lr": f"{lr:g}", "m": f"{opt.get('momentum', 0):g}", "eps": f"{opt.get('epsilon', 0):g}",
            "rho": f"{opt.get('rho', 0):g}", "rho1": f"{1 - opt.get('rho', 0):g}", "b1": f"{opt.get('beta1', 0):g}",
            "b2": f"{opt.get('beta2', 0):g}", "b1c": f"{1 - opt.get('beta1', 0):g}", "b2c": f"{1 - opt.get('beta2', 0):g}"}
    pre = []
    if opt.get("clip_norm") is not None:
        pre.append(Eq(f"g <- g * min(1, {opt['clip_norm']:g} / (||g||_2 + 1e-6))   (global norm over all parameters)",
                      rf"g \leftarrow g\,\min\!\Big(1, \frac{{{opt['clip_norm']:g}}}{{\lVert g\rVert_2 + 10^{{-6}}}}\Big)"))
    if opt.get("weight_decay"):
        pre.append(Eq(f"g <- g + {opt['weight_decay']:g} W   (L2 weight decay)",
                      rf"g \leftarrow g + {opt['weight_decay']:g}\, W"))
    sec.backward = pre + [Eq(t.format(**vals), tex.format(**vals)) for t, tex in rules[name]]
    sec.notes.append(f"g = dL/dW of the mini-batch for every parameter W; t counts updates (mini-batches of "
                     f"{batch_size}), not epochs (ERRATA 6).")
    sched = opt.get("schedule") or {"name": "constant"}
    if sched["name"] != "constant":
        args = ", ".join(f"{k} {v}" for k, v in sched.items() if k != "name")
        sec.notes.append(f"The learning rate follows the {sched['name']} schedule ({args}) from {lr:g}.")
    sec.flops.append(f"update: {human_flops(update_flops)} per step ({update_flops / batch_size:,.0f} per example "
                     f"at batch {batch_size})")
    return sec


# ------------------------------------------------------------------------------ build
def explain(config, network, layer: int | None = None) -> list[Section]:
    """Sections for every layer (or only ``layer``), the loss and the optimizer."""
    values = config.values if hasattr(config, "values") else config
    batch = values["train"]["batch_size"]
    sections = []
    for i, lyr in enumerate(network.layers):
        if layer is not None and i != layer:
            continue
        if isinstance(lyr, Conv2D):
            sec = conv_section(i, lyr, i == 0)
        elif isinstance(lyr, (MaxPool2D, AvgPool2D)):
            sec = pool_section(i, lyr)
        elif isinstance(lyr, Dense):
            sec = dense_section(i, lyr, i == 0)
        else:
            sec = simple_section(i, lyr, network)
        if i == len(network.layers) - 1 and _fused(network, values["loss"]) and sec.backward:
            # The output layer's delta comes from the fused loss below, not from g'(z).
            sec.backward[0] = Eq("delta = dE/dz, given directly by the fused loss (see the loss section)",
                                 r"\delta = \partial E/\partial z \text{ (from the fused loss below)}",
                                 sec.backward[0].shape)
        sec.flops.append(f"forward {lyr.forward_flops():,} FLOPs, backward {backward_flops(lyr, i > 0):,} FLOPs "
                         "per example")
        sections.append(sec)
    if layer is None:
        flops = training_flops(network, values["optimizer"], batch)
        loss = loss_section(network, values["loss"], batch)
        sections.append(loss)
        opt = optimizer_section(values["optimizer"], batch, flops["update_per_step"])
        opt.flops.append(f"training step per example: forward {human_flops(flops['forward'])} + backward "
                         f"{human_flops(flops['backward'])} + update {flops['update']:,.0f} FLOPs = "
                         f"{human_flops(int(flops['total']))}")
        sections.append(opt)
    return sections


# --------------------------------------------------------------------------- renderers
def render_text(sections: list[Section], title: str) -> str:
    out = [title, "=" * len(title), ""]
    for sec in sections:
        out += [sec.title, "-" * len(sec.title)]
        out += [f"  {n}" for n in sec.notes]
        if sec.forward:
            out.append("  forward:")
            out += [f"    {e.text}" + (f"    [{e.shape}]" if e.shape else "") for e in sec.forward]
        out += [f"  {a}" for a in sec.arithmetic]
        if sec.backward:
            out.append("  backward:" if not sec.title.startswith("update") else "  rule:")
            out += [f"    {e.text}" + (f"    [{e.shape}]" if e.shape else "") for e in sec.backward]
        out += [f"  {f}" for f in sec.flops]
        out.append("")
    return "\n".join(out)


def render_markdown(sections: list[Section], title: str) -> str:
    out = [f"# {title}", ""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        out += [f"{n}" for n in sec.notes] + ([""] if sec.notes else [])
        if sec.forward:
            out += ["**Forward**", ""]
            for e in sec.forward:
                out += [f"$$ {e.tex} $$", ""] + ([f"Shapes: `{e.shape}`", ""] if e.shape else [])
        if sec.arithmetic:
            out += [f"- {a}" for a in sec.arithmetic] + [""]
        if sec.backward:
            out += ["**Backward**" if not sec.title.startswith("update") else "**Rule**", ""]
            for e in sec.backward:
                out += [f"$$ {e.tex} $$", ""] + ([f"Shapes: `{e.shape}`", ""] if e.shape else [])
        if sec.flops:
            out += [f"*{f}*" for f in sec.flops] + [""]
    return "\n".join(out)


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                 ("^", r"\^{}"), ("|", r"$|$")):
        text = text.replace(a, b)
    return text


def render_latex(sections: list[Section], title: str) -> str:
    out = [r"\documentclass{article}", r"\usepackage{amsmath,amssymb}", r"\usepackage[margin=2cm]{geometry}",
           rf"\title{{{_tex_escape(title)}}}", r"\begin{document}", r"\maketitle"]
    for sec in sections:
        out.append(rf"\section*{{{_tex_escape(sec.title)}}}")
        out += [_tex_escape(n) + r"\par" for n in sec.notes]
        for label, eqs in (("Forward", sec.forward), ("Backward" if not sec.title.startswith("update") else "Rule",
                                                       sec.backward)):
            if not eqs:
                continue
            out.append(rf"\paragraph{{{label}}}")
            for e in eqs:
                out.append(r"\[ " + e.tex + r" \]")
                if e.shape:
                    out.append(r"\noindent{\small Shapes: \texttt{" + _tex_escape(e.shape) + r"}}\par")
            if label == "Forward" and sec.arithmetic:
                out.append(r"\begin{itemize}")
                out += [r"\item " + _tex_escape(a) for a in sec.arithmetic]
                out.append(r"\end{itemize}")
        if not sec.forward and sec.arithmetic:
            out.append(r"\begin{itemize}" + "".join(r"\item " + _tex_escape(a) for a in sec.arithmetic)
                       + r"\end{itemize}")
        out += [r"\noindent\emph{" + _tex_escape(f) + r"}\par" for f in sec.flops]
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"
