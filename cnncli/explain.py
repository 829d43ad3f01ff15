"""The mathematics of a configured network, layer by layer, with its real sizes.

``explain(config, network)`` returns a document (a list of
:class:`~cnncli.nn.describe.Explanation`) that a renderer turns into plain text,
Markdown (with ``$$`` math) or a LaTeX document. Every section comes from the component
it describes: each layer's ``explain`` (its forward equation with this layer's sizes,
activation, padding, stride and dilation; the output-shape and parameter arithmetic; the
backward equations with their shapes), the loss's ``explain`` (with the fused sigmoid +
BCE gradient ``yhat - y`` where it applies) and the optimizer's (its rule with its
hyperparameters); this module adds the FLOPs and renders. A component that gives no
equations is explained by its docstring.

The equations are the corrected ones (see docs/MATH.md, section 7), written with
zero-based indices over NHWC arrays. The engine's notes cite that section's items as
"ERRATA 5"; :func:`cite_errata` adds where the item is, since a reader of the output
may not know the name.
"""

from __future__ import annotations

import re

from cnncli.config import loss_keywords
from cnncli.nn.describe import Equation, Explanation
from cnncli.nn.losses import make_loss
from cnncli.nn.optimizers import make_optimizer
from cnncli.summary import flops_text, human_flops, training_flops


#: Where the items that the engine cites as "ERRATA N" are written up (cnncli/nn imports
#: nothing of cnncli outside itself, so it names the item and this module the place).
ERRATA_HOME = "docs/MATH.md §7"
# Atomic, so that "ERRATA 12, docs/..." cannot match as "ERRATA 1" followed by "2, docs/".
_ERRATA = re.compile(r"\bERRATA (?>\d+(?:(?: and | / |-)\d+)*)(?!, docs/)")


def cite_errata(text: str) -> str:
    """``(ERRATA 5: ...)`` -> ``(ERRATA 5, docs/MATH.md §7: ...)``; applied once, however
    often it is called."""
    return _ERRATA.sub(lambda m: f"{m.group(0)}, {ERRATA_HOME}", text)


def explain(config, network, layer: int | None = None) -> list[Explanation]:
    """Sections for every layer (or only ``layer``), the loss and the optimizer."""
    values = config.values if hasattr(config, "values") else config
    batch = values["train"]["batch_size"]
    loss = make_loss(loss_keywords(values["loss"]))
    fused = network.uses_logits(loss)
    last = len(network.layers) - 1
    sections = []
    for i, lyr in enumerate(network.layers):
        if layer is not None and i != layer:
            continue
        sec = lyr.explain(i, i == 0)
        if i == last and fused and sec.backward:
            # The output layer's delta comes from the fused loss below, not from g'(z).
            sec.backward[0] = Equation("delta = dE/dz, given directly by the fused loss (see the loss section)",
                                       r"\delta = \partial E/\partial z \text{ (from the fused loss below)}",
                                       sec.backward[0].shape)
        sec.flops.append(f"forward {flops_text(lyr.forward_flops())} FLOPs, backward "
                         f"{flops_text(lyr.backward_flops(input_grad=i > 0))} FLOPs per example")
        sections.append(sec)
    if layer is None:
        sections.append(loss.explain(network.output_shape, batch,
                                     network.output_activation.name if fused else None))
        optimizer = make_optimizer(values["optimizer"])
        opt = optimizer.explain(batch, network.parameter_count())
        flops = training_flops(network, values["optimizer"], batch)
        opt.flops.append(f"training step per example: forward {human_flops(flops['forward'])} + backward "
                         f"{human_flops(flops['backward'])} + update {flops['update']:,.0f} FLOPs = "
                         f"{human_flops(int(flops['total']))}")
        sections.append(opt)
    for sec in sections:
        sec.notes = [cite_errata(n) for n in sec.notes]
        sec.arithmetic = [cite_errata(a) for a in sec.arithmetic]
    return sections


# --------------------------------------------------------------------------- renderers
def render_text(sections: list[Explanation], title: str) -> str:
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


def render_markdown(sections: list[Explanation], title: str) -> str:
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


def render_latex(sections: list[Explanation], title: str) -> str:
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
