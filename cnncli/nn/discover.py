"""Import every module of a component package, so that one file is one component.

A package such as ``cnncli.nn.activations`` calls :func:`import_submodules` at the end of
its ``__init__``; each module registers its class with ``@register``. Adding a built-in
is adding a file: nothing else lists it.
"""

from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package: str, path) -> list[str]:
    """Import ``package.<module>`` for every module in ``path`` (sorted, so the order is
    the same everywhere); return their names."""
    names = sorted(m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
