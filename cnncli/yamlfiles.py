"""YAML in and out, one way everywhere: ``yaml.safe_load`` plus two fixes.

* Floats without a dot such as ``1e-3`` (YAML 1.2) are numbers: YAML 1.1 reads them as
  strings, so ``lr: 1e-3`` and ``--set optimizer.lr=1e-3`` would not mean the number.
  The dumper quotes such strings in turn, so that they load back as strings.
* A mapping that gives a key twice is refused (YAML would keep the last silently).
* The dumper writes every value out where it occurs, never as an ``&id001`` anchor and
  ``*id001`` alias: the files are read by people (a sweep's trials share their grid's
  values), and a file edited at the anchor would change every alias with it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from cnncli.errors import ConfigError

#: ``1e-3``, ``-2E+5``, ``1.5e3``: floats written with an exponent and no dot required.
EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class Loader(yaml.SafeLoader):
    """``yaml.safe_load``, with exponent floats and duplicate keys refused."""


class Dumper(yaml.SafeDumper):
    """``yaml.safe_dump`` that quotes strings which :class:`Loader` would read as floats,
    and repeats shared values rather than writing anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _construct_mapping(loader: Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
for _cls in (Loader, Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789"))


#: What :func:`parse` raises on text that is not YAML.
YAMLError = yaml.YAMLError


def parse(text: str) -> Any:
    """Parse YAML text with the safe :class:`Loader` (raises yaml.YAMLError)."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=Dumper, sort_keys=False, default_flow_style=None)


def inline(obj: Any) -> str:
    """``obj`` on one line, in YAML's flow style, keys in their order: ``{name: sgd, lr: 0.01}``,
    as a user writes it in a config or a ``--set`` value."""
    text = yaml.dump(obj, Dumper=Dumper, sort_keys=False, default_flow_style=True, width=float("inf"))
    return text.removesuffix("\n...\n").strip()  # a lone scalar ends with YAML's document-end marker


def read(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error is a ConfigError naming the file (and line)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", "", None, raw=f"{path}: no such config file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("", "", None, raw=f"{path}: cannot be read ({err})") from None
    try:
        return parse(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError("", "", None, raw=f"{path}: YAML syntax error: {where}{problem}") from None
