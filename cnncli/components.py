"""What can be named in a config: every registered component with its keys and origin
(``cnncli components``)."""

from __future__ import annotations

import inspect
from pathlib import Path

from cnncli.errors import ConfigError
from cnncli.nn import REGISTRIES
from cnncli.nn.registry import allowed_keys
from cnncli.nn.validate import did_you_mean


def describe_components(kind: str | None = None) -> list[list[str]]:
    """Rows of (kind, name, keys, origin, first docstring line), sorted by kind and name."""
    if kind is not None and kind not in REGISTRIES:
        raise ConfigError("kind", "", None, raw=f"unknown kind {kind!r}{did_you_mean(kind, REGISTRIES)}; expected "
                                                f"one of: {', '.join(REGISTRIES)}")
    rows = []
    for registry in ([REGISTRIES[kind]] if kind else REGISTRIES.values()):
        for name, obj in registry.items():
            names, required = allowed_keys(obj)
            names = names | set(registry.common_keys)
            keys = ", ".join(f"{k}*" if k in required else k for k in sorted(names))
            origin = registry.origin(name)
            doc = (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ")
            where = "built-in" if origin is None else f"plugin {Path(origin.path).name}"
            canonical = getattr(obj, getattr(obj, "name_attribute", "name"), name) if isinstance(obj, type) else name
            if canonical != name:
                doc = f"another name for {canonical}"
            rows.append([registry.kind, name, keys or "-", where, doc])
    return rows
