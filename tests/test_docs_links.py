"""Every file the user documentation cites is in the repository.

A user who clones cnncli has the repository and nothing beside it, so README.md,
docs/*.md and the comments of configs/*.yaml may cite only what the repository holds.
This finds every relative reference they make:

* Markdown links and images, ``[text](target)`` and ``![alt](target)``, with their
  ``#anchor`` (a heading's GitHub slug or an ``<a id="...">``), and for a link whose text
  names a test, ``tests/x.py::test_name``, that function;
* paths written in the text (in backticks or not): anything that starts with ``./`` or
  ``../``, anything under one of the repository's own top-level folders (``docs/``,
  ``configs/``, ``cnncli/``, ...), and any ``*.md`` file named on its own;

and fails on one that leaves the repository or names nothing. Placeholders
(``runs/<time>-<name>/``, ``RUN_DIR/report.html``, ``*.png``) are not paths and are left
alone, and so is ``runs/``, which holds what cnncli writes, not what it cites.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
#: Top-level folders whose paths a document cites as the repository's own (``runs/`` is
#: where cnncli writes: its paths in the README are examples of output).
REPO_FOLDERS = ("benchmarks", "cnncli", "configs", "docs", "sweeps", "tests", ".ci")

LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_FENCE = re.compile(r"^\s*(```|~~~)")
#: A path-like word: letters, digits and ``_ . / - :`` (``::`` joins a test's name).
WORD = re.compile(r"[A-Za-z0-9_./:-]+")
#: A document named on its own, by the project's convention in capitals (MATH.md,
#: REFERENCE-RESULTS.md); lower-case names (summary.md, leaderboard.md) are files cnncli writes.
DOCUMENT_NAME = re.compile(r"[A-Z][A-Z0-9_-]*\.md")
PLACEHOLDER = re.compile(r"[<>*{}$\[\]|]|\.\.\.|[A-Z]{2,}_[A-Z]+")  # RUN_DIR, SWEEP_DIR, <name>, *.png


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (``-`` and ``_``
    kept), each space a hyphen."""
    text = re.sub(r"`|\*\*|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors a Markdown file defines: its headings' slugs (a repeated heading gets
    ``-1``, ``-2``, as on GitHub) and every ``<a id="...">``."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if CODE_FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = github_slug(heading.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def inside_repo(target: Path) -> bool:
    try:
        target.resolve().relative_to(REPO)
    except ValueError:
        return False
    return True


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if inside_repo(path) else str(path)


def check_link(source: Path, text: str, target: str) -> str | None:
    """Why the Markdown link ``[text](target)`` in ``source`` is broken, or None."""
    if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
        return None
    path_part, _, anchor = target.partition("#")
    file = (source.parent / path_part) if path_part else source
    if not inside_repo(file):
        return f"{target}: leaves the repository"
    if not file.exists():
        return f"{target}: no such file or folder in the repository"
    if anchor and file.suffix == ".md" and anchor not in anchors(file):
        return f"{target}: {file.relative_to(REPO)} has no heading or <a id> '{anchor}'"
    named = re.fullmatch(r"`?(tests/[\w/]+\.py)::(\w+)(?:\[[^\]]*\])?`?(?:.*)", text.strip())
    if named and file.suffix == ".py" and not re.search(rf"^\s*(?:async\s+)?def {named.group(2)}\(",
                                                         file.read_text(encoding="utf-8"), re.M):
        return f"{target}: the link names {named.group(2)}, which {file.relative_to(REPO)} does not define"
    return None


def cited_paths(text: str) -> list[str]:
    """The repository paths a piece of prose (not its links) names: see the module docstring."""
    out = []
    for word in WORD.findall(text):
        word = word.rstrip(".:,;")
        word = word.split("::", 1)[0]
        if not word or PLACEHOLDER.search(word) or "://" in word:
            continue
        first = word.split("/", 1)[0]
        if word.startswith(("./", "../")) or (first in REPO_FOLDERS and "/" in word) \
                or (word.endswith(".md") and "/" in word) or DOCUMENT_NAME.fullmatch(word):
            out.append(word)
    return out


def check_path(source: Path, word: str) -> str | None:
    """Why the path ``word`` cited in ``source`` names nothing in the repository, or None.
    A path is read from the repository root, or (``./``, ``../``, a bare file name) from
    the citing file's folder, whichever names something."""
    candidates = [source.parent / word] if word.startswith(("./", "../")) else [REPO / word, source.parent / word]
    inside = [c for c in candidates if inside_repo(c)]
    if not inside:
        return f"{word}: leaves the repository"
    if not any(c.exists() for c in inside):
        return f"{word}: no such file or folder in the repository"
    return None


def prose_and_links(path: Path):
    """(line number, prose with the links taken out, [(text, target)]) for each line of a
    Markdown file outside code blocks (a code block's paths are commands' arguments and
    outputs, checked where the README's commands are run)."""
    in_code = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if CODE_FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        links = [(m.group(1), m.group(2)) for m in LINK.finditer(line)]
        yield number, LINK.sub(lambda m: m.group(1), line), links


def document_problems(path: Path) -> list[str]:
    problems = []
    for number, prose, links in prose_and_links(path):
        where = f"{shown(path)}:{number}"
        for text, target in links:
            why = check_link(path, text, target)
            if why:
                problems.append(f"{where}: {why}")
        for word in cited_paths(re.sub(r"<https?://[^>]+>|https?://\S+", "", prose)):
            why = check_path(path, word)
            if why:
                problems.append(f"{where}: {why}")
    return problems


def config_problems(path: Path) -> list[str]:
    """A config's comments (``# ...`` outside quoted values) cite paths like prose does."""
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        comment = re.search(r"(?:^|\s)#(.*)$", line)
        if not comment:
            continue
        for word in cited_paths(comment.group(1)):
            # A config's own paths (data.path) are relative to it; a cited document is
            # relative to the repository root, as the config's README examples run there.
            why = check_path(path, word)
            if why:
                problems.append(f"{shown(path)}:{number}: {why}")
    return problems


@pytest.mark.parametrize("path", DOCUMENTS + CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_cited_path_is_in_the_repository(path):
    problems = document_problems(path) if path.suffix == ".md" else config_problems(path)
    assert not problems, "cited but not in the repository:\n" + "\n".join(problems)


# --- the checker itself: each rule fails on what it must catch ------------------------
def test_checker_catches_what_leaves_or_is_missing(tmp_path):
    readme = REPO / "README.md"
    assert check_link(readme, "errata", "../shared/paper/ERRATA.md") == \
        "../shared/paper/ERRATA.md: leaves the repository"
    assert check_link(readme, "x", "docs/NOPE.md") == "docs/NOPE.md: no such file or folder in the repository"
    assert "has no heading" in check_link(readme, "x", "docs/MATH.md#no-such-anchor")
    assert check_link(readme, "x", "docs/MATH.md#7-where-the-paper-is-wrong") is None
    assert "does not define" in check_link(REPO / "docs" / "MATH.md", "tests/test_layers.py::test_no_such_test",
                                           "../tests/test_layers.py")
    assert check_link(readme, "x", "https://example.org/a.md") is None
    assert cited_paths("see `../shared/paper/ERRATA.md` and REFERENCE-RESULTS.md (as RUN_DIR/report.html)") == \
        ["../shared/paper/ERRATA.md", "REFERENCE-RESULTS.md"]
    assert cited_paths("writes runs/<time>-<name>/ and runs/20261128-quickstart, `*.png`, summary.md") == []
    assert check_path(REPO / "configs" / "paper.yaml", "REFERENCE-RESULTS.md") == \
        "REFERENCE-RESULTS.md: no such file or folder in the repository"
    assert check_path(readme, "docs/MATH.md") is None
    config = tmp_path / "c.yaml"
    config.write_text("loss: mse   # see ../outside.md\nname: x\n")
    assert config_problems(config) and "leaves the repository" in config_problems(config)[0]


def test_github_slug_matches_the_anchors_the_docs_use():
    assert github_slug("2.1 Convolution (`conv2d`, `cnncli/nn/layers/conv.py`)") == \
        "21-convolution-conv2d-cnnclinnlayersconvpy"
    assert github_slug("Speed and threads") == "speed-and-threads"
