"""Plugins: Python files or modules that a config names, which register components.

``plugins: [blocks.py, mylab.blocks]`` in a config runs ``blocks.py`` (a path relative
to the config file) and imports ``mylab.blocks`` before anything else of the config is
read, so the layers, activations, losses, optimizers, schedules and initializers they
register (``cnncli.nn.register``) can be named like built-ins. **Plugins run code**; a
config without ``plugins:`` runs none.

A run keeps a copy of every plugin file in ``<run>/plugins/`` and its config names the
copies with their SHA-256 (``{file: plugins/blocks.py, sha256: ..., origin: ...}``), so
``eval``, ``predict`` and ``--resume`` run the code the run was trained with, even after
the original is edited or moved; a copy that was deleted or altered is refused.

Every problem is a :class:`~cnncli.errors.PluginError` naming ``plugins[i]`` and the
file: a missing file, a syntax error (with its line), an import error inside the
plugin, a component that misses a required method, a name already taken.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import traceback
from pathlib import Path

from cnncli.errors import PluginError
from cnncli.nn.errors import InputError, RegistrationError
from cnncli.runs import atomic_write_bytes

#: Run folders keep their copies here.
FOLDER = "plugins"
_ENTRY_KEYS = ("file", "module", "sha256", "origin")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _error(index: int, what: str, message: str) -> PluginError:
    return PluginError(f"plugins[{index}]", "", None, raw=f"{what}: {message}" if what else message)


def is_file_spec(text: str) -> bool:
    """A plugin given as a path (``blocks.py``, ``lib/blocks.py``) rather than a module name."""
    return text.endswith(".py") or "/" in text or "\\" in text


def resolve(entries: object, base_dir: str | Path) -> list[dict]:
    """Check the ``plugins`` list and import every plugin in order; returns the resolved
    entries, ``{file: absolute path, sha256}`` or ``{module, file, sha256}``.

    Paths are relative to ``base_dir`` (the config file's folder). An entry with a
    ``sha256`` (as a run folder writes them) must match the file exactly.
    """
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise PluginError("plugins", "a list of plugin files (blocks.py) or modules (mylab.blocks)", entries)
    resolved = []
    for i, entry in enumerate(entries):
        resolved.append(_load(i, _entry(i, entry), Path(base_dir)))
    return resolved


def _entry(index: int, entry: object) -> dict:
    if isinstance(entry, str) and entry.strip():
        text = entry.strip()
        return {"file": text} if is_file_spec(text) else {"module": text}
    if isinstance(entry, dict) and ("file" in entry) != ("module" in entry):
        unknown = sorted(set(entry) - set(_ENTRY_KEYS))
        if not unknown and all(isinstance(v, str) for v in entry.values()):
            return dict(entry)
    raise PluginError(f"plugins[{index}]", "a file path ending in .py, a module name, or {file: ..., sha256: ...}",
                      entry)


def _load(index: int, entry: dict, base_dir: Path) -> dict:
    if "module" in entry:
        return _load_module(index, entry)
    path = Path(entry["file"])
    path = path if path.is_absolute() else base_dir / path
    shown = entry["file"]
    if not path.is_file():
        if entry.get("sha256"):
            raise _error(index, shown, "the run folder's copy of this plugin is missing; the run cannot be loaded "
                                       "without the code it was trained with")
        raise _error(index, shown, f"no such plugin file ({path.absolute()})")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if entry.get("sha256") and entry["sha256"] != sha:
        raise _error(index, shown, f"the file was altered after the run copied it (sha256 {sha[:12]}..., the run "
                                   f"recorded {entry['sha256'][:12]}...); restore it or train again")
    _exec_file(index, shown, path.resolve(), sha)
    out = {"file": str(path.resolve()), "sha256": sha}
    if entry.get("origin"):
        out["origin"] = entry["origin"]
    return out


def _exec_file(index: int, shown: str, path: Path, sha: str) -> None:
    """Run the plugin file as the module ``cnncli_plugins.<stem>_<sha>`` (once per content)."""
    stem = re.sub(r"\W", "_", path.stem)
    name = f"cnncli_plugins.{stem}_{sha[:16]}"
    if name in sys.modules:
        module = sys.modules[name]
        if getattr(module, "__file__", None) == str(path):
            return  # this very file, already run
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    module.__cnncli_sha256__ = sha
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as err:  # noqa: BLE001 - every failure of user code becomes one line
        sys.modules.pop(name, None)
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        raise _describe_failure(index, shown, path, err) from None


def _describe_failure(index: int, shown: str, path: Path, err: BaseException) -> PluginError:
    if isinstance(err, SyntaxError):
        return _error(index, shown, f"syntax error at line {err.lineno}: {err.msg}")
    if isinstance(err, RegistrationError):
        return _error(index, shown, str(err))
    line = next((f.lineno for f in reversed(traceback.extract_tb(err.__traceback__))
                 if Path(f.filename) == path), None)
    where = f" at line {line}" if line else ""
    if isinstance(err, ImportError):
        return _error(index, shown, f"an import failed{where}: {err}")
    if isinstance(err, InputError):
        return _error(index, shown, f"{err}")
    return _error(index, shown, f"raised {type(err).__name__}{where}: {err}")


def _load_module(index: int, entry: dict) -> dict:
    name = entry["module"]
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
        raise PluginError(f"plugins[{index}]", "a module name such as mylab.blocks, or a file path ending in .py",
                          name)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise _error(index, name, "no such module (install it, or give a file path ending in .py)") from None
        raise _error(index, name, f"an import failed: {err}") from None
    except BaseException as err:  # noqa: BLE001
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        file = getattr(sys.modules.get(name), "__file__", None) or name
        raise _describe_failure(index, name, Path(file), err) from None
    file = getattr(module, "__file__", None)
    if not file:
        raise _error(index, name, "the module has no file to copy into the run folder (a namespace package?)")
    return {"module": name, "file": str(Path(file).resolve()), "sha256": sha256_of(Path(file))}


def implicit(values: dict, resolved: list[dict]) -> list[dict]:
    """Entries for the importable modules that registered components this config names
    without listing them under ``plugins`` (registered from Python before the config was
    read), so that a run keeps their code like a listed plugin's."""
    from cnncli.nn import REGISTRIES

    named = set(_strings({key: values[key] for key in ("model", "loss", "optimizer")}))
    known = {entry["sha256"] for entry in resolved} | {entry["file"] for entry in resolved}
    modules = []
    for registry in REGISTRIES.values():
        for name in named & set(registry.names()):
            origin = registry.origin(name)
            if origin is None or origin.path in known or origin.sha256 in known:
                continue
            if origin.module and origin.module != "__main__" and not origin.module.startswith("cnncli_plugins."):
                modules.append(origin.module)
    return [_load_module(len(resolved) + i, {"module": m}) for i, m in enumerate(sorted(set(modules)))]


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


# -------------------------------------------------------------------------- run folders
def copy_into(run_dir: Path, resolved: list[dict]) -> list[dict]:
    """Copy each plugin's file into ``run_dir/plugins/``; return the entries a run's
    config names: ``{file: plugins/<name>.py, sha256, origin}``."""
    if not resolved:
        return []
    folder = run_dir / FOLDER
    folder.mkdir(exist_ok=True)
    out, taken = [], set()
    for entry in resolved:
        source = Path(entry["file"])
        stem = entry["module"] if "module" in entry else source.stem
        name, n = f"{stem}.py", 2
        while name in taken:
            name, n = f"{stem}-{n}.py", n + 1
        taken.add(name)
        data = source.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise PluginError("plugins", "", None, raw=f"{source}: changed while the run was starting; run it again")
        atomic_write_bytes(folder / name, data)
        origin = f"module {entry['module']}" if "module" in entry else entry.get("origin", str(source))
        out.append({"file": f"{FOLDER}/{name}", "sha256": entry["sha256"], "origin": origin})
    return out


def changed_originals(entries: list[dict], run_dir: Path) -> list[str]:
    """For a run's plugin entries: a line for each original file that differs from the
    copy the run uses (resume reports these; it runs the copy)."""
    notes = []
    for i, entry in enumerate(entries):
        copy = os.path.relpath(entry["file"], run_dir)
        origin = entry.get("origin", "")
        if not origin or origin.startswith("module "):
            continue
        path = Path(origin)
        if not path.is_file():
            notes.append(f"plugins[{i}]: {origin} is gone; the run's copy {copy} is used")
        elif sha256_of(path) != entry["sha256"]:
            notes.append(f"plugins[{i}]: {origin} has changed since the run started; resuming with the run's copy "
                         f"{copy} (sha256 {entry['sha256'][:12]}...), not the edited file")
    return notes


def read_files(resolved: list[dict]) -> dict[str, bytes]:
    """The plugin files' contents by SHA-256, to ship to workers on other machines."""
    return {entry["sha256"]: Path(entry["file"]).read_bytes() for entry in resolved}


def write_files(resolved: list[dict], files: dict[str, bytes], folder: Path) -> list[dict]:
    """The counterpart of :func:`read_files` on a worker: write each file into
    ``folder`` and return the entries pointing there (checked by SHA-256 when loaded)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, entry in enumerate(resolved):
        target = folder / str(i) / Path(entry["file"]).name  # the name kept: run folders copy it as it is
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(files[entry["sha256"]])
        out.append({"file": str(target), "sha256": entry["sha256"], "origin": entry.get("origin", entry["file"])})
    return out
