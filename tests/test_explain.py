"""The mathematics commands: ``explain``, ``gradcheck``, ``visualize``, ``plot`` and the
backward/update FLOPs of ``summary``.

Everything runs in-process through Typer's CliRunner (so a test can monkeypatch a wrong
backward into the engine) with every output under ``tmp_path``; ``gradcheck`` keeps its
data cache under the working directory, so those tests ``chdir`` into ``tmp_path``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnncli.builder import build_network
from tests.helpers import assert_ok, assert_user_error, invoke
from cnncli.config import load_config
from cnncli.summary import human_flops, training_flops

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PAPER = CONFIGS / "paper.yaml"
ALL_OPTIONS = CONFIGS / "all_options.yaml"
SHIPPED = ("quickstart", "all_options", "paper", "fashion_mnist")
CALTECH = (REPO / "../shared/datasets/caltech101-motorbikes-airplanes").resolve()





def explain_text(*args) -> str:
    res = invoke("explain", *args)
    assert_ok(res)
    return res.stdout


def section(text: str, start: str, end: str | None = None) -> str:
    """The text from the line starting with ``start`` to the next starting with ``end``."""
    i = text.index("\n" + start) + 1
    j = text.index("\n" + end, i) if end else len(text)
    return text[i:j]


# ====================================================================== 1. explain
def test_explain_paper_has_table5_arithmetic():
    out = explain_text(PAPER)
    # output-shape arithmetic of C1, P1, C2 (and P2)
    for line in ("(28 + 2*0 - 5)/1 + 1 = 24", "(24 + 2*0 - 2)/2 + 1 = 12", "(12 + 2*0 - 5)/1 + 1 = 8",
                 "(8 + 2*0 - 2)/2 + 1 = 4"):
        assert f"output height: {line}" in out and f"output width:  {line}" in out, line
    # the four parameter calculations of Table 5
    for calc in ("[(5x5x3)+1]x64 = 4,864", "[(5x5x64)+1]x128 = 204,928", "[2048+1]x500 = 1,024,500",
                 "[500+1]x1 = 501"):
        assert f"parameters: {calc}" in out, calc
    assert "4 x 4 x 128 = 2048 features" in out
    # every layer, the loss and the update, each once
    for i, kind in enumerate(("conv2d", "max_pool2d", "conv2d", "max_pool2d", "flatten", "dense", "dense")):
        assert out.count(f"\nlayers[{i}]: {kind}") == 1, i
    assert out.count("\nloss: binary_crossentropy (sum)") == 1 and out.count("\nupdate: sgd, lr 0.0001") == 1
    # forward equation with actual sizes, backward equations with shapes
    assert "W[p,q,r,f] * X[n, i + p, j + q, r]" in out and "W: (5, 5, 3, 64)" in out
    assert "a = tanh(z)" in out and "g'(z) = 1 - a^2" in out
    assert "dW: (5, 5, 64, 128)" in out and "db: (128,)" in out and "dX: (N, 12, 12, 64)" in out
    assert "dW: (2048, 500)" in out and "dX = delta W^T" in out
    assert "dX[n, 2i + u, 2j + v, c] += dy[n,i,j,c] for the arg max" in out


def test_explain_paper_loss_is_the_corrected_bce_gradient():
    out = explain_text(PAPER)
    loss = section(out, "loss:", "update:")
    assert "E = -sum_n [y ln yhat + (1 - y) ln(1 - yhat)]" in loss
    assert "delta = dE/dz = (yhat - y)" in loss and "fused sigmoid + binary cross-entropy" in loss
    assert "(y - yhat)" not in out  # the paper's Eq. 46 sign
    # the output layer takes its delta from the fused loss, not from sigmoid's g'(z)
    last = section(out, "layers[6]", "loss:")
    assert "delta = dE/dz, given directly by the fused loss" in last and "a (1 - a)" not in last


def test_explain_paper_update_rule_and_training_flops():
    out = explain_text(PAPER)
    update = section(out, "update:")
    assert "    W <- W - 0.0001 g\n" in update
    cfg = load_config(str(PAPER), check_paths=False, check_memory=False)
    net = build_network(cfg.values, allocate=False)
    flops = training_flops(net, cfg["optimizer"], cfg["train"]["batch_size"])
    total = human_flops(int(flops["total"]))
    assert total == "96.35 MFLOP"  # the figure of the issue; the line below must agree with the engine's count
    assert (f"training step per example: forward {human_flops(flops['forward'])} + backward "
            f"{human_flops(flops['backward'])} + update {flops['update']:,.0f} FLOPs = {total}") in update
    assert f"update: {human_flops(flops['update_per_step'])} per step" in update
    # per layer: forward and backward FLOPs per example
    assert "forward 5,566,464 FLOPs, backward 5,677,056 FLOPs per example" in out


def test_explain_one_layer():
    out = explain_text(PAPER, "--layer", 2)
    assert "layers[2]: conv2d 5x5x128, tanh" in out
    assert "(12 + 2*0 - 5)/1 + 1 = 8" in out and "[(5x5x64)+1]x128 = 204,928" in out
    for other in ("layers[0]", "layers[1]", "layers[3]", "layers[6]", "\nloss:", "\nupdate:", "4,864"):
        assert other not in out, other
    last = explain_text(PAPER, "-l", 6)
    assert "layers[6]: dense 1, sigmoid" in last and "layers[5]" not in last
    assert "delta = dE/dz" in last  # the fused delta, also when the layer is shown alone


def _evaluate(expr: str) -> float:
    """An arithmetic expression of explain's (digits, + - * /, parentheses, floor(...))."""
    assert re.fullmatch(r"[0-9+\-*/() floor]+", expr), expr
    return eval(expr, {"__builtins__": {}}, {"floor": math.floor})  # noqa: S307 (checked above)


@pytest.mark.parametrize("name", SHIPPED)
def test_explain_arithmetic_is_true(name):
    """Every 'A = B' that explain prints evaluates to B (shapes and parameter counts)."""
    out = explain_text(CONFIGS / f"{name}.yaml")
    shapes = re.findall(r"output (?:height|width):\s+(.+) = (\d+)\n", out)
    params = re.findall(r"parameters: ([\[\]()x+0-9]+) = ([\d,]+)", out)
    assert shapes and params
    for expr, value in shapes:
        assert _evaluate(expr) == int(value), expr
    for expr, value in params:
        assert _evaluate(expr.replace("[", "(").replace("]", ")").replace("x", "*")) == int(value.replace(",", ""))


def test_arithmetic_check_can_fail():
    assert _evaluate("4 + 2*2 - 2*(3-1)+1") != 4  # explain's old dilated line read so
    assert _evaluate("(4 + 2*2 - (2*(3-1)+1))/1 + 1") == 4


def test_explain_all_options():
    out = explain_text(ALL_OPTIONS)
    conv0 = section(out, "layers[0]", "layers[1]")
    assert "'same' padding" in conv0 and "X_pad[n, i + p, j + q, r]" in conv0 and "shape (N, 18, 18, 3)" in conv0
    assert "a = z if z > 0 else 0.05 z" in conv0 and "g'(z) = 1 if a > 0 else 0.05" in conv0
    assert "(16 + 2*1 - 3)/1 + 1 = 16" in conv0
    assert "dX is not computed" in conv0
    bn = section(out, "layers[1]", "layers[2]")
    assert "batch_norm" in bn and "gamma * xhat + beta" in bn and "2x16 = 32" in bn
    conv3 = section(out, "layers[3]", "layers[4]")
    assert "dX_pad[n, i + p, j + q, r] +=" in conv3 and "after cropping the padding" in conv3
    assert "(1/4) sum_(u<2, v<2)" in section(out, "layers[4]", "layers[5]")
    dilated = section(out, "layers[5]", "layers[6]")
    assert "X_pad[n, i + 2p, j + 2q, r]" in dilated
    assert "output height: (4 + 2*2 - (2*(3-1)+1))/1 + 1 = 4" in dilated
    assert "g'(z) = 1 - e^-a = sigmoid(z)" in dilated
    assert "layers[6]: global_avg_pool2d" in out and "y[n,c] = (1/16) sum_(i<4, j<4) X[n,i,j,c]" in out
    assert "layers[7]: dropout 0.2" in out and "m ~ Bernoulli(0.8)" in out and "dx = dy * m / (1 - 0.2)" in out
    assert "layers[9]: activation sigmoid" in out
    loss = section(out, "loss:", "update:")
    assert "categorical_crossentropy (mean)" in loss and "delta = dE/dz = 1/N (yhat - y)" in loss
    update = section(out, "update:")
    assert "update: nesterov, lr 0.05" in update
    assert "M <- 0.9 M + 0.05 g;  W <- W - (0.05 g + 0.9 M)" in update
    assert "g <- g + 0.0001 W   (L2 weight decay)" in update
    assert "g <- g * min(1, 5 / (||g||_2 + 1e-6))" in update
    # clipping, then weight decay, then the rule (the optimizer's order)
    assert update.index("min(1, 5") < update.index("0.0001 W") < update.index("M <- 0.9 M")
    assert "cosine schedule (t_max 300, min_lr 0.001)" in update
    cfg = load_config(str(ALL_OPTIONS), check_paths=False, check_memory=False)
    flops = training_flops(build_network(cfg.values, allocate=False), cfg["optimizer"], 32)
    assert f"= {human_flops(int(flops['total']))}\n" in update


def test_explain_mean_reduction_scales_by_one_over_n():
    out = explain_text(PAPER, "--set", "loss.reduction=mean")
    loss = section(out, "loss:", "update:")
    assert "binary_crossentropy (mean)" in loss
    assert "E = -1/N sum_n" in loss and "delta = dE/dz = 1/N (yhat - y)" in loss
    summed = section(explain_text(PAPER), "loss:", "update:")
    assert "1/N" not in summed and "32 times that of the mean" in summed


def test_explain_unfused_loss_and_other_optimizers():
    out = explain_text(PAPER, "--set", "loss={name: mse, reduction: mean}", "--set",
                       "optimizer={name: adam, lr: 0.001}")
    loss = section(out, "loss:", "update:")
    assert "dE/dyhat = 1/N 2 (yhat - y)" in loss and "fused" not in loss
    # not fused: the output layer's delta is the sigmoid's derivative again
    assert "g'(z) = a (1 - a)" in section(out, "layers[6]", "loss:")
    assert "m <- 0.9 m + 0.1 g;  v <- 0.999 v + 0.001 g^2" in out
    assert "W <- W - 0.001 (m / (1 - 0.9^t)) / (sqrt(v / (1 - 0.999^t)) + 1e-08)" in out


def test_explain_markdown_document():
    out = explain_text(PAPER, "--format", "markdown")
    lines = out.splitlines()
    assert lines[0].startswith("# paper: the mathematics of")
    headings = [l for l in lines if l.startswith("## ")]
    assert len(headings) == 9 and headings[0] == "## layers[0]: conv2d 5x5x64, tanh"
    assert headings[-2:] == ["## loss: binary_crossentropy (sum)", "## update: sgd, lr 0.0001"]
    math_lines = [l for l in lines if "$$" in l]
    assert len(math_lines) > 20
    for l in math_lines:
        assert l.startswith("$$ ") and l.endswith(" $$") and l.count("$$") == 2, l
        assert braces_balanced(l[2:-2]), l
    assert r"$$ \delta = \frac{\partial E}{\partial z} = (\hat y - y) $$" in out
    assert "- parameters: [(5x5x3)+1]x64 = 4,864" in out


MATH = REPO / "docs" / "MATH.md"
ERRATA_CITATION = re.compile(r"\bERRATA ((?:\d+)(?:(?:, | and | / |-)\d+)*)")


def errata_items() -> dict[int, str]:
    """Item number -> its text (heading and body), from docs/MATH.md section 7."""
    text = MATH.read_text(encoding="utf-8")
    start = text.index("\n## 7. Where the paper is wrong")
    section7 = text[start:text.index("\n### What the paper gets right", start)]
    parts = re.split(r"\n### (\d+)\. ", section7)
    return {int(number): body for number, body in zip(parts[1::2], parts[2::2])}


def numbers(text: str) -> list[int]:
    """'5' -> [5]; '2 and 15' -> [2, 15]; '7-9' -> [7, 8, 9]; '1 / 13 / 14' -> [1, 13, 14]."""
    out = []
    for part in re.split(r", | and | / ", text):
        low, _, high = part.partition("-")
        out += list(range(int(low), int(high or low) + 1))
    return out


def equations_of(text: str) -> set[int]:
    """The equation numbers a text names: 'Eq. 46', 'Eqs. 7-9', 'Eqs. 25, 27, 28', 'Eq. 45's'."""
    return {n for m in re.finditer(r"Eqs?\. (\d+(?:(?:, | and |-)\d+)*)", text) for n in numbers(m.group(1))}


def test_explain_names_where_each_errata_item_is():
    """explain prints the engine's "ERRATA 5" with where that is, in every format."""
    for fmt in ("text", "markdown", "latex"):
        out = explain_text(PAPER, "--format", fmt)
        cited = ERRATA_CITATION.findall(out)
        assert sorted(set(cited)) == ["5", "6"], (fmt, cited)  # the fused BCE gradient, t counts updates
        assert len(re.findall(r"ERRATA \d+, docs/MATH\.md §7", out)) == len(cited), fmt
    assert "(ERRATA 5, docs/MATH.md §7: the paper's Eq. 46 has the opposite sign)" in explain_text(PAPER)


def test_cite_errata_adds_the_place_once():
    from cnncli.explain import cite_errata

    assert cite_errata("x (ERRATA 12: y)") == "x (ERRATA 12, docs/MATH.md §7: y)"
    assert cite_errata("ERRATA 2 and 15.") == "ERRATA 2 and 15, docs/MATH.md §7."
    assert cite_errata(cite_errata("ERRATA 12")) == "ERRATA 12, docs/MATH.md §7"
    assert cite_errata("ERRATA.md") == "ERRATA.md"


def test_every_errata_citation_is_an_item_of_math_section_7():
    """Every "ERRATA N" in the code, the tests and the docs is an item of docs/MATH.md §7,
    and an equation the citation names is one that item is about (ERRATA 5 with "Eq. 46"
    must be the item on Eq. 46, not a renumbered neighbour)."""
    items = errata_items()
    assert sorted(items) == list(range(1, len(items) + 1)) and len(items) >= 20
    files = [*sorted((REPO / "cnncli").rglob("*.py")), *sorted((REPO / "tests").glob("*.py")),
             REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "configs").glob("*.yaml"))]
    checked = 0
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            for match in ERRATA_CITATION.finditer(line):
                where = f"{file.relative_to(REPO)}:{number}"
                cited = numbers(match.group(1))
                assert all(n in items for n in cited), f"{where}: {match.group(0)} is not an item of MATH.md §7"
                # The equations named in the same clause, after the citation (up to a closing bracket).
                clause = re.split(r"[)\]]", line[match.end():], maxsplit=1)[0]
                named = equations_of(clause)
                about = set().union(*(equations_of(items[n]) for n in cited))
                assert named <= about, f"{where}: {match.group(0)} names Eq. {sorted(named - about)}, which " \
                                       f"item {cited} does not discuss"
                checked += 1
    assert checked >= 30  # the engine's docstrings cite the list throughout


def braces_balanced(tex: str) -> bool:
    """Braces (not the escaped ``\\{ \\}``) nest properly, and \\begin/\\end pair up."""
    depth = 0
    for tok in re.findall(r"\\[{}]|[{}]", tex):
        if tok in ("{", "}"):
            depth += 1 if tok == "{" else -1
            if depth < 0:
                return False
    if depth:
        return False
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{([^}]*)\}", tex):
        if kind == "begin":
            stack.append(env)
        elif not stack or stack.pop() != env:
            return False
    return not stack


def display_blocks(tex: str) -> list[str]:
    assert tex.count(r"\[") == tex.count(r"\]")
    return re.findall(r"\\\[(.*?)\\\]", tex, flags=re.S)


def test_brace_checker_can_fail():
    assert braces_balanced(r"\frac{a}{b} \{x\} \begin{cases} 1 \end{cases}")
    assert not braces_balanced(r"\frac{a}{b")
    assert not braces_balanced(r"a}{b")
    assert not braces_balanced(r"\begin{cases} 1 \end{array}")
    assert display_blocks(r"x \[ a \] y \[ \frac{1}{2} \]") == [" a ", r" \frac{1}{2} "]


@pytest.mark.parametrize("name", SHIPPED)
def test_explain_latex_document(name, tmp_path):
    tex = explain_text(CONFIGS / f"{name}.yaml", "--format", "latex")
    assert tex.startswith("\\documentclass{article}\n")
    assert tex.count(r"\begin{document}") == 1 and tex.rstrip().endswith(r"\end{document}")
    blocks = display_blocks(tex)
    assert len(blocks) > 10
    for block in blocks:
        assert braces_balanced(block), block
    assert braces_balanced(tex)
    assert r"\section*{loss: " in tex and r"\section*{update: " in tex
    if name == "paper":
        assert r"\[ \delta = \frac{\partial E}{\partial z} = (\hat y - y) \]" in tex
        assert r"\item parameters: [(5x5x3)+1]x64 = 4,864" in tex
    if shutil.which("pdflatex") is None:
        return
    (tmp_path / "explain.tex").write_text(tex)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "explain.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "explain.pdf").stat().st_size > 1000


def test_explain_of_a_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(PAPER, run / "config.yaml")
    out = explain_text(run, "--layer", 0)
    assert "[(5x5x3)+1]x64 = 4,864" in out


def test_explain_bad_options():
    assert_user_error(invoke("explain", PAPER, "--format", "html"), "--format", "text, markdown or latex", "html")
    assert_user_error(invoke("explain", PAPER, "--layer", 7), "--layer", "0..6", "7")
    assert_user_error(invoke("explain", PAPER, "--layer", -1), "--layer", "0..6")
    res = invoke("explain", PAPER, "--set", "model.layers[0].filters=0")
    assert res.exit_code == 2 and "Traceback" not in res.stdout + res.stderr


# ===================================================================== 2. gradcheck
def table_rows(stdout: str) -> list[str]:
    return [l for l in stdout.splitlines() if l.startswith("│")]


def broken_part(line: str) -> str:
    """The layers a failure line names as broken (before '; affected through it')."""
    assert "broken backward in " in line, line
    return line.split("broken backward in ", 1)[1].split(";")[0]


def failure_line(res) -> str:
    lines = [l for l in res.stderr.splitlines() if l.startswith("gradient check failed")]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize("name", SHIPPED)
def test_gradcheck_passes_on_shipped_configs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # gradcheck caches data under ./runs/.cache
    if name == "paper" and CALTECH.is_dir():  # caltech101 by name, offline: the shared copy
        assert_ok(invoke("data", "add", "caltech101", CALTECH))
    res = invoke("gradcheck", CONFIGS / f"{name}.yaml", "--entries", 5, "--batch", 2)
    assert_ok(res)
    cfg = load_config(str(CONFIGS / f"{name}.yaml"), check_paths=False, check_memory=False)
    rows = table_rows(res.stdout)
    assert len(rows) == len(cfg["model"]["layers"]) + 1  # the input, then every layer
    assert all(r.rstrip(" │").endswith("pass") for r in rows), res.stdout
    assert "FAIL" not in res.stdout and "float64" in res.stdout
    assert "all gradients agree to better than 1e-06" in res.stdout


def inputs_line(stdout: str) -> str:
    """The one line that says what the gradients were checked on."""
    lines = [l for l in stdout.splitlines() if l.startswith("inputs: ")]
    assert len(lines) == 1, stdout
    return lines[0]


def test_gradcheck_without_data_uses_random_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke("gradcheck", PAPER, "--entries", 3, "--batch", 2)  # caltech101 neither cached nor reachable
    assert_ok(res)
    # On a line of its own, with why: the data named and the reason it could not be read.
    line = inputs_line(res.stdout)
    assert line.startswith("inputs: random (2 inputs uniform in [0, 1) and random labels, seed 0): the caltech101 "
                           "data could not be read: caltech101: cannot download "), line
    assert "random" not in res.stdout.splitlines()[1]  # the table's title no longer carries it
    assert len(table_rows(res.stdout)) == 8


def test_gradcheck_says_it_checks_examples_of_the_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke("gradcheck", QUICK, "--entries", 3, "--batch", 2)
    assert_ok(res)
    assert inputs_line(res.stdout) == "inputs: 2 examples of the configured data (synthetic), drawn with seed 0"
    folder = tmp_path / "shapes"
    for k, name in enumerate(("a", "b")):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((16, 16, 3), 40 * (i + 3 * k), np.uint8)).save(folder / name / f"{i}.png")
    res = invoke("gradcheck", QUICK, "--entries", 3, "--batch", 2, "--set",
                 f"data={{source: image_folder, path: {folder}}}", "--set", "model.layers[6].units=2")
    assert_ok(res)
    assert inputs_line(res.stdout) == f"inputs: 2 examples of the configured data (image_folder at {folder}), " \
                                      "drawn with seed 0"


def test_gradcheck_random_asks_for_random_inputs_and_reads_no_data(tmp_path, monkeypatch):
    import cnncli.experiment

    def no_reading(*args, **kwargs):
        raise AssertionError("--random must not read the data")

    monkeypatch.setattr(cnncli.experiment, "load_dataset", no_reading)
    monkeypatch.chdir(tmp_path)
    res = invoke("gradcheck", QUICK, "--entries", 3, "--batch", 3, "--seed", 4, "--random")
    assert_ok(res)
    assert inputs_line(res.stdout) == "inputs: random (3 inputs uniform in [0, 1) and random labels, seed 4), as asked"
    assert "all gradients agree" in res.stdout


def test_gradcheck_batch_random_inputs_are_the_seeds():
    from cnncli.builder import build
    from cnncli.experiment import gradcheck_batch

    cfg = load_config(str(QUICK), ["train.dtype=float64"], check_paths=False)
    network, loss, _ = build(cfg)
    x, y, source = gradcheck_batch(cfg, network, loss, 3, 7, Path("unused"), random_inputs=True)
    np.testing.assert_array_equal(x, np.random.default_rng(7).random((3, 16, 16, 3)))
    assert len(y) == 3 and source.endswith(", as asked")
    data_x, _, from_data = gradcheck_batch(cfg, network, loss, 3, 7, Path("unused"))
    assert not np.array_equal(data_x, x) and from_data.startswith("3 examples of the configured data")


QUICK = CONFIGS / "quickstart.yaml"  # 0 conv 16, 1 pool, 2 conv 32, 3 pool, 4 flatten, 5 dense 64, 6 dense 3


def test_gradcheck_names_the_layer_with_a_wrong_bias_gradient(tmp_path, monkeypatch):
    from cnncli.nn.layers.conv import Conv2D

    original = Conv2D.backward

    def wrong(self, *args, **kwargs):
        dx = original(self, *args, **kwargs)
        if self.filters == 32:  # layers[2] only
            self.grads["bias"] = 2 * self.grads["bias"]
        return dx

    monkeypatch.setattr(Conv2D, "backward", wrong)
    monkeypatch.chdir(tmp_path)
    res = invoke("gradcheck", QUICK, "--entries", 5, "--batch", 2)
    assert res.exit_code == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stdout + res.stderr
    assert failure_line(res) == "gradient check failed (tolerance 1e-06): broken backward in layers[2] (conv2d)"
    rows = table_rows(res.stdout)
    assert rows[3].split("│")[2].strip() == "conv2d" and rows[3].rstrip(" │").endswith("FAIL")
    assert sum(r.rstrip(" │").endswith("FAIL") for r in rows) == 1


def test_gradcheck_names_a_dense_layer_with_a_wrong_input_gradient(tmp_path, monkeypatch):
    from cnncli.nn.layers.dense import Dense

    original = Dense.backward

    def wrong(self, *args, **kwargs):
        dx = original(self, *args, **kwargs)
        return dx * 1.01 if self.units == 64 and dx is not None else dx  # layers[5]

    monkeypatch.setattr(Dense, "backward", wrong)
    monkeypatch.chdir(tmp_path)
    res = invoke("gradcheck", QUICK, "--entries", 5, "--batch", 2)
    assert res.exit_code == 1, (res.stdout, res.stderr)
    line = failure_line(res)
    # The local check pins the fault on layers[5]; layers before it are only affected through
    # its wrong dx, and nothing after it is named at all.
    assert broken_part(line) == "layers[5] (dense)", line
    assert "layers[6]" not in line


def test_gradcheck_names_a_max_pool_sending_gradient_to_the_wrong_cell(tmp_path, monkeypatch):
    from cnncli.nn.layers.pool import MaxPool2D

    original = MaxPool2D.backward

    def wrong(self, *args, **kwargs):
        return np.roll(original(self, *args, **kwargs), 1, axis=2)  # one column to the right

    monkeypatch.setattr(MaxPool2D, "backward", wrong)
    monkeypatch.chdir(tmp_path)
    res = invoke("gradcheck", QUICK, "--entries", 5, "--batch", 2)
    assert res.exit_code == 1, (res.stdout, res.stderr)
    line = failure_line(res)
    assert set(broken_part(line).split(", ")) <= {"layers[1] (max_pool2d)", "layers[3] (max_pool2d)"}, line
    for innocent in ("layers[4]", "layers[5]", "layers[6]"):  # after the last pooling layer
        assert innocent not in line, line


def test_gradcheck_tolerance_and_bad_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke("gradcheck", QUICK, "--entries", 3, "--batch", 2, "--tolerance", 1e-14)
    assert res.exit_code == 1 and "gradient check failed (tolerance 1e-14)" in res.stderr
    res = invoke("gradcheck", QUICK, "--batch", 0)
    assert res.exit_code == 2 and "Traceback" not in res.stdout + res.stderr
    assert_user_error(invoke("gradcheck", tmp_path / "missing.yaml"), "missing.yaml")


# ------------------------------------------------------------------- the engine function
def _net(layers, input_shape, seed=0):
    from cnncli.nn import Network

    return Network(layers).build(input_shape, seed=seed, dtype="float64")


def _healthy_net():
    net = _net([
        {"type": "conv2d", "filters": 3, "kernel_size": 3, "padding": "same", "activation": "tanh"},
        {"type": "batch_norm"},
        {"type": "max_pool2d", "pool_size": 2},
        {"type": "conv2d", "filters": 4, "kernel_size": 2, "dilation": 2, "padding": "same",
         "activation": "softplus"},
        {"type": "avg_pool2d", "pool_size": 2, "padding": "same"},
        {"type": "dropout", "rate": 0.3},
        {"type": "flatten"},
        {"type": "dense", "units": 5, "activation": "leaky_relu"},
        {"type": "dense", "units": 1, "activation": "sigmoid"},
    ], (8, 8, 2))
    rng = np.random.default_rng(1)
    for p in net.parameters().values():  # away from the zero biases and unit gammas
        p += 0.2 * rng.standard_normal(p.shape)
    return net


def test_check_network_healthy():
    from cnncli.nn.gradcheck import check_network
    from cnncli.nn.losses import make_loss

    net = _healthy_net()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 8, 8, 2)), np.array([0.0, 1.0, 1.0])
    rows = check_network(net, make_loss("binary_crossentropy"), x, y, max_entries=8, seed=0)
    assert [r["layer"] for r in rows] == ["input"] + [l.type_name for l in net.layers]
    assert [r["index"] for r in rows] == [None, *range(len(net.layers))]
    for r in rows:
        assert r["error"] < 1e-6, r
        assert r["local"] or r["index"] is None
        if r["index"] is not None:
            assert set(r["end_to_end"]) == set(net.layers[r["index"]].params)
    assert rows[0]["end_to_end"]["x"] < 1e-6 and rows[0]["entries"] == 8
    assert set(rows[1]["local"]) == {"x", "kernel", "bias"} and set(rows[2]["local"]) == {"x", "gamma", "beta"}
    assert all(getattr(l, "fixed_mask", None) is None for l in net.layers)  # dropout unpinned afterwards
    with pytest.raises(ValueError, match="float64"):
        check_network(_float32_net(), make_loss("mse"), np.zeros((1, 2, 2, 1)), np.zeros((1, 4)))


def _float32_net():
    from cnncli.nn import Network

    return Network([{"type": "flatten"}]).build((2, 2, 1), seed=0, dtype="float32")


def test_check_network_pins_a_wrong_backward_on_its_layer(monkeypatch):
    from cnncli.nn.gradcheck import check_network
    from cnncli.nn.layers.dense import Dense
    from cnncli.nn.losses import make_loss

    original = Dense.backward

    def wrong(self, *args, **kwargs):
        dx = original(self, *args, **kwargs)
        return dx * 1.01 if self.units == 5 and dx is not None else dx

    monkeypatch.setattr(Dense, "backward", wrong)
    net = _healthy_net()
    rng = np.random.default_rng(0)
    rows = check_network(net, make_loss("binary_crossentropy"), rng.standard_normal((3, 8, 8, 2)),
                         np.array([0.0, 1.0, 1.0]), max_entries=8, seed=0)
    culprit = rows[1 + 7]
    assert culprit["layer"] == "dense" and culprit["local"]["x"] > 1e-3
    for r in rows:  # the local check blames only the culprit
        if r is not culprit:
            assert all(e < 1e-6 for e in r["local"].values()), r
    assert rows[1 + 8]["error"] < 1e-6  # the layer after it is untouched


def test_check_network_at_max_pool_ties():
    """Flat image regions (Fashion-MNIST's black background) tie whole pooling windows."""
    from cnncli.nn.gradcheck import check_network
    from cnncli.nn.losses import make_loss

    net = _net([
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "tanh"},  # zero biases: tanh(0) ties
        {"type": "max_pool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ], (10, 10, 1))
    x = np.zeros((2, 10, 10, 1))
    x[:, 3:6, 4:7, 0] = np.random.default_rng(3).random((2, 3, 3))
    for seed in range(3):
        rows = check_network(net, make_loss("categorical_crossentropy"), x, np.array([0, 2]), max_entries=30,
                             seed=seed)
        assert max(r["error"] for r in rows) < 1e-6, [(r["layer"], r["error"]) for r in rows]


# ===================================================================== 3. visualize
TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"source": "synthetic", "num_samples": 64, "num_classes": 3, "noise": 0.1},
    "model": {
        "input_shape": [12, 12, 3],
        "layers": [
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "relu"},
            {"type": "max_pool2d", "pool_size": 2},
            {"type": "conv2d", "filters": 6, "kernel_size": 3, "padding": "same", "activation": "relu"},
            {"type": "flatten"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
    },
    "loss": "categorical_crossentropy",
    "optimizer": {"name": "sgd", "lr": 0.01},
    "train": {"epochs": 1, "batch_size": 16, "validation_split": 0.25},
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("viz")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    res = invoke("train", root / "tiny.yaml", "--runs-dir", root / "runs", "--quiet")
    assert_ok(res)
    runs = [p for p in (root / "runs").iterdir() if (p / "config.yaml").is_file()]
    assert len(runs) == 1
    return runs[0]


def assert_png(path: Path) -> Image.Image:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    im = Image.open(path)
    assert im.format == "PNG"
    w, h = im.size
    assert w > 100 and h > 100, im.size
    lo_hi = im.convert("L").getextrema()
    assert lo_hi[1] - lo_hi[0] > 50, "a blank picture"
    return im


def test_visualize_writes_the_pictures(tiny_run, tmp_path):
    out = tmp_path / "pictures"
    res = invoke("visualize", tiny_run, "--out", out)
    assert_ok(res)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["curves.png", "feature_maps_layer0.png", "feature_maps_layer2.png", "kernels.png"]
    for name in names:  # what each shows: tests/test_pictures.py
        assert_png(out / name)
        assert f"wrote {out / name}" in " ".join(res.stdout.split()) or name in res.stdout


def test_visualize_latest_run_and_default_folder(tiny_run):
    res = invoke("visualize", "--runs-dir", tiny_run.parent)
    assert_ok(res)
    folder = tiny_run / "visualize"
    assert sorted(p.name for p in folder.glob("*.png")) == ["curves.png", "feature_maps_layer0.png",
                                                            "feature_maps_layer2.png", "kernels.png"]
    assert_png(folder / "kernels.png")


def test_visualize_with_an_image(tiny_run, tmp_path):
    rng = np.random.default_rng(0)
    picture = tmp_path / "some.png"
    Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(picture)
    a, b = tmp_path / "a", tmp_path / "b"
    assert_ok(invoke("visualize", tiny_run, "--out", a))
    assert_ok(invoke("visualize", tiny_run, "--image", picture, "--out", b))
    for name in ("feature_maps_layer0.png", "feature_maps_layer2.png"):
        assert_png(b / name)
        assert (a / name).read_bytes() != (b / name).read_bytes(), name  # the image was used
    assert (a / "kernels.png").read_bytes() == (b / "kernels.png").read_bytes()
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert_user_error(invoke("visualize", tiny_run, "--image", bad, "--out", tmp_path / "c"), "bad.png",
                      "not a readable image")
    assert_user_error(invoke("visualize", tmp_path / "nowhere", "--out", tmp_path / "d"), "no such run folder")


def test_kernels_picture_grows_with_the_filters(tmp_path):
    from cnncli.visualize import feature_maps_png, kernels_png

    sizes = {}
    for filters in (4, 16):
        net = _net([{"type": "conv2d", "filters": filters, "kernel_size": 3, "activation": "relu"},
                    {"type": "flatten"}, {"type": "dense", "units": 2}], (10, 10, 3))
        path = kernels_png(net, tmp_path / f"k{filters}.png")
        sizes[filters] = assert_png(path).size
        (tmp_path / f"m{filters}").mkdir()
        maps = feature_maps_png(net, np.random.default_rng(0).random((10, 10, 3)), tmp_path / f"m{filters}")
        assert [p.name for p in maps] == ["feature_maps_layer0.png"]
        assert_png(maps[0])
    assert sizes[16][0] > sizes[4][0] and sizes[16][1] > sizes[4][1]
    with pytest.raises(ValueError, match="no convolutional layer"):
        kernels_png(_net([{"type": "flatten"}, {"type": "dense", "units": 2}], (4, 4, 1)), tmp_path / "none.png")


# ========================================================================== 4. plot
@pytest.mark.parametrize("args, filename", [
    (("activation",), "activation_all.png"),
    (("activation", "sigmoid", "tanh"), "activation_sigmoid_tanh.png"),
    (("loss", "binary_crossentropy", "mse"), "loss_binary_crossentropy_mse.png"),
])
def test_plot_writes_a_png(args, filename, tmp_path):
    res = invoke("plot", *args, "--out", tmp_path / "plots")
    assert_ok(res)
    assert [p.name for p in (tmp_path / "plots").iterdir()] == [filename]
    assert_png(tmp_path / "plots" / filename)
    assert filename in res.stdout


def test_plot_bad_names(tmp_path):
    out = tmp_path / "plots"
    assert_user_error(invoke("plot", "activation", "sigmod", "--out", out), "sigmod", "did you mean 'sigmoid'")
    assert_user_error(invoke("plot", "loss", "binary_crossentropy", "mse2", "--out", out), "did you mean 'mse'")
    assert_user_error(invoke("plot", "activations", "--out", out), "expected activation, loss or dynamics", "activations")
    assert not out.exists() or not any(out.iterdir())


# ======================================================================= 5. summary
def test_summary_json_has_backward_and_update_flops():
    res = invoke("summary", PAPER, "--format", "json")
    assert_ok(res)
    s = json.loads(res.stdout)
    rows = s["rows"]
    assert all("backward_flops" in r for r in rows)
    assert s["backward_flops"] == sum(r["backward_flops"] for r in rows) == 62_386_084
    assert s["flops"] == sum(r["flops"] for r in rows)
    # by hand: C1 (no input gradient) = tanh' 3*24*24*64 + dW 2*5*5*3*64*24*24 + db 64*24*24
    assert rows[0]["backward_flops"] == 3 * 24 * 24 * 64 + 2 * 75 * 64 * 576 + 64 * 576 == 5_677_056
    # F5: tanh' 3*500 + dW 2*2048*500 + db 500 + dX 2*2048*500
    assert rows[5]["backward_flops"] == 3 * 500 + 2 * 2048 * 500 + 500 + 2 * 2048 * 500
    assert rows[4]["backward_flops"] == 0  # flatten
    assert s["update_flops"] == 2 * s["params"] and s["batch_size"] == 32 and s["optimizer"] == "sgd"
    cfg = load_config(str(PAPER), check_paths=False, check_memory=False)
    net = build_network(cfg.values, allocate=False)
    assert [r["backward_flops"] for r in rows] == [l.backward_flops(input_grad=i > 0) for i, l in enumerate(net.layers)]
    assert s["backward_flops"] == training_flops(net, cfg["optimizer"], 32)["backward"]


def test_summary_flops_columns():
    with_flops = invoke("summary", PAPER)
    assert_ok(with_flops)
    assert "backward FLOPs" in with_flops.stdout and "62,386,084" in with_flops.stdout
    assert "training step is 96.35 MFLOP per example" in " ".join(with_flops.stdout.split())
    explicit = invoke("summary", PAPER, "--flops")
    assert_ok(explicit)
    assert "backward FLOPs" in explicit.stdout
    without = invoke("summary", PAPER, "--no-flops")
    assert_ok(without)
    assert "backward" not in without.stdout and "62,386,084" not in without.stdout
    assert "forward FLOPs" in without.stdout and "1,234,793" in without.stdout
    csv_out = invoke("summary", PAPER, "--format", "csv").stdout.splitlines()
    assert csv_out[0].endswith(",backward_flops") and csv_out[-1].endswith(",62386084")
    md = invoke("summary", PAPER, "--format", "markdown").stdout
    assert "backward FLOPs |" in md and "**62,386,084**" in md
