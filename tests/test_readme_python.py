"""The README's Python snippets print what the README says they print, and changing only
``optimizer.name`` keeps the configured rate and says so once.

The two snippets (the Python API and the loop over optimizers in "Sweeps") run in a
fresh process in a folder that has the repository's ``configs/``, as a user runs them
from a clone; their output must be the README's, line for line (a run folder's time
stamp aside). The quick-start network runs unsplit, so the figures do not depend on the
machine's thread count.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import cnncli.config
from cnncli.config import kept_rate_note, load_config
from cnncli.errors import CnnCliWarning
from tests.helpers import invoke

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)
RUN_TIME = re.compile(r"runs/\d{8}-\d{6}-")


def snippet_and_output(marker: str) -> tuple[str, str]:
    """The README's Python block containing ``marker`` and the plain block after it (its output)."""
    blocks = list(FENCE.finditer(README))
    for i, block in enumerate(blocks):
        if block.group(1) == "python" and marker in block.group(2):
            after = blocks[i + 1] if i + 1 < len(blocks) else None
            assert after is not None and after.group(1) == "", f"no output block after the snippet with {marker!r}"
            between = README[block.end():after.start()]
            assert len(between.strip().splitlines()) <= 1, f"the snippet with {marker!r} is not followed by its output"
            return block.group(2), after.group(2)
    raise AssertionError(f"no Python block in README.md contains {marker!r}")


def run_as_a_user(code: str, folder: Path) -> subprocess.CompletedProcess:
    (folder / "configs").symlink_to(REPO / "configs")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("marker", ['overrides=["train.epochs=2"]', "rates = {"], ids=["python-api", "optimizer-loop"])
def test_readme_snippet_prints_what_the_readme_says(marker, tmp_path):
    code, expected = snippet_and_output(marker)
    proc = run_as_a_user(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert RUN_TIME.sub("runs/<time>-", proc.stdout) == RUN_TIME.sub("runs/<time>-", expected)
    assert "warning:" not in proc.stderr  # every optimizer was given its own rate


# --------------------------------------------------------- changing only optimizer.name
@pytest.fixture
def said(monkeypatch):
    """A fresh record of what load_config has said, so each test hears its own warnings."""
    fresh: set[str] = set()
    monkeypatch.setattr(cnncli.config, "_SAID", fresh)
    return fresh


def test_name_alone_keeps_the_rate_and_says_so_once(said, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.warns(CnnCliWarning) as heard:
        cfg = load_config("configs/quickstart.yaml", ["optimizer.name=sgd"], check_memory=False)
    assert cfg["optimizer"]["name"] == "sgd" and cfg["optimizer"]["lr"] == 0.002  # kept
    # Exactly the line the README quotes (the command line prints it after "warning: ").
    quoted = [l for l in README.splitlines() if l.startswith("warning: optimizer.name=sgd keeps")]
    assert [f"warning: {w.message}" for w in heard] == quoted and len(quoted) == 1
    assert heard[0].filename == __file__  # pointed at the caller, as Python warnings are
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config("configs/quickstart.yaml", ["optimizer.name=sgd"], check_memory=False)  # once
    with pytest.warns(CnnCliWarning, match="optimizer.name=momentum keeps optimizer.lr 0.002"):
        load_config("configs/quickstart.yaml", ["optimizer.name=momentum"], check_memory=False)


def test_the_library_never_prints_the_note(said, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        load_config("configs/quickstart.yaml", ["optimizer.name=rmsprop"], check_memory=False)
    assert capsys.readouterr() == ("", "")


def test_a_sweep_that_varies_only_the_name_says_so_once_per_optimizer(said, tmp_path):
    from cnncli.sweep import make_spec, trial_configs

    spec = make_spec(str(REPO / "configs" / "quickstart.yaml"), grid_options=["optimizer.name=sgd,momentum,adam"])
    with pytest.warns(CnnCliWarning) as heard:
        trial_configs(spec)
        trial_configs(spec)
    assert sorted(str(w.message).split(" ")[0] for w in heard) == ["optimizer.name=momentum", "optimizer.name=sgd"]


@pytest.mark.parametrize("overrides", [
    ["optimizer.name=sgd", "optimizer.lr=0.2"],   # a rate of its own
    ["optimizer.lr=0.2", "optimizer.name=sgd"],
    ["optimizer={name: sgd}"],                    # a new optimizer section: sgd's default rate
    ["optimizer.name=adam"],                      # the optimizer the rate was given for
    ["train.epochs=2"],
])
def test_nothing_to_say(overrides, said):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(str(REPO / "configs" / "quickstart.yaml"), overrides, check_memory=False)


def test_no_rate_in_the_config_takes_the_new_optimizers_default(said):
    raw = {"model": {"input_shape": [8, 8, 1], "layers": [{"type": "flatten"},
                                                           {"type": "dense", "units": 2, "activation": "softmax"}]},
           "optimizer": {"name": "adam"}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = load_config(raw, ["optimizer.name=sgd"], check_memory=False)
    assert cfg["optimizer"]["lr"] == 0.01


def test_kept_rate_note_names_both_optimizers_and_the_default():
    note = kept_rate_note({"lr": 0.002}, ["optimizer.name=rmsprop"], {"name": "rmsprop", "lr": 0.002}, "c.yaml")
    assert note == ("optimizer.name=rmsprop keeps optimizer.lr 0.002, the rate c.yaml gives adam (rmsprop's own "
                    "default is 0.001); set optimizer.lr too to give rmsprop a rate of its own")
    assert kept_rate_note(None, ["optimizer.name=sgd"], {"name": "sgd", "lr": 0.01}, "c.yaml") is None


def test_cli_set_says_it_on_one_line(said, monkeypatch):
    monkeypatch.chdir(REPO)
    res = invoke("explain", "configs/quickstart.yaml", "--set", "optimizer.name=sgd", "--layer", "0")
    assert res.exit_code == 0, res.stderr
    assert [l for l in res.stderr.splitlines() if l.startswith("warning:")] == \
        ["warning: optimizer.name=sgd keeps optimizer.lr 0.002, the rate configs/quickstart.yaml gives adam (sgd's "
         "own default is 0.01); set optimizer.lr too to give sgd a rate of its own"]
