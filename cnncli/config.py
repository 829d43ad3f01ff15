"""Experiment configs: YAML in, a validated and fully resolved config out.

A config has the sections ``name``, ``seed``, ``data``, ``model``, ``loss``, ``optimizer``,
``train`` and ``eval``. :func:`load_config` reads a file (``yaml.safe_load`` only) or a
dict, applies ``--set``-style overrides, checks every key and value, fills in every
default and returns a :class:`Config` whose ``values`` are what a run folder keeps.

The layers, the loss and the optimizer are checked by constructing them with the
engine (so every engine keyword is reachable and checked once, in one place); their
resolved form is the engine objects' own ``config()``. The network is then built on
the declared input shape, so shape errors name the layer index before any data is read.

Every problem is a :class:`~cnncli.errors.ConfigError` that reads
``<file>: <key path>: expected <what>; got <value>``. This module does not import numpy
at import time: it is imported by the CLI before anything heavy.
"""

from __future__ import annotations

import copy
import difflib
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from cnncli.errors import CnnCliError, ConfigError, ShapeError

SECTIONS = ("name", "seed", "data", "model", "loss", "optimizer", "train", "eval")
DATA_SOURCES = ("synthetic", "image_folder", "npz", "idx")
NORMALIZATIONS = ("scale", "standardize", "none")

# Keys of data, by source; every source also takes the COMMON ones.
DATA_COMMON = {
    "source": "synthetic",
    "normalize": "scale",
    "limit": None,
    "test_path": None,
}
DATA_BY_SOURCE: dict[str, dict[str, Any]] = {
    "synthetic": {"num_samples": 1200, "num_classes": 3, "noise": 0.1},
    "image_folder": {"path": None, "on_bad_image": "error", "cache": True},
    "npz": {"path": None, "x_key": "x", "y_key": "y"},
    "idx": {"path": None, "train_prefix": "train", "test_prefix": "t10k", "use_test": True},
}
TRAIN_DEFAULTS = {
    "epochs": 10,
    "batch_size": 32,
    "shuffle": True,
    "validation_split": 0.2,
    "early_stopping": None,
    "checkpoint_every": 1,
    "on_nan": "stop",
    "dtype": "float32",
}
EARLY_STOPPING_DEFAULTS = {"monitor": "val_loss", "patience": 5, "min_delta": 0.0, "restore_best": True}
MONITORS = ("val_loss", "val_accuracy", "loss", "accuracy")
EVAL_DEFAULTS = {"batch_size": 256, "checkpoint": "best"}


@dataclass
class Config:
    """A validated, fully resolved experiment config.

    ``values`` is a plain dict (YAML-ready); ``source`` the file it came from, if any.
    """

    values: dict
    source: str | None = None
    overrides: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def to_yaml(self) -> str:
        return yaml.dump(self.values, Dumper=_Dumper, sort_keys=False, default_flow_style=None)

    def error(self, path: str, expected: str, got: object = None, *, raw: str | None = None) -> ConfigError:
        """A ConfigError about ``path`` in this config's file."""
        return ConfigError(path, expected, got, raw=raw, source=self.source)


# ----------------------------------------------------------------------------- loading
class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``, plus floats without a dot such as ``1e-3`` (YAML 1.2), which
    YAML 1.1 reads as the string ``'1e-3'``: ``lr: 1e-3`` and ``--set optimizer.lr=1e-3``
    mean the number."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A mapping that refuses a key given twice (YAML would keep the last silently)."""
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


class _Dumper(yaml.SafeDumper):
    """``yaml.safe_dump`` that quotes strings such as ``'1e3'`` which ``_Loader`` reads as floats."""


_Dumper.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file with ``safe_load``; a syntax error names the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", "", None, raw=f"{path}: no such config file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("", "", None, raw=f"{path}: cannot be read ({err})") from None
    try:
        return _load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError("", "", None, raw=f"{path}: YAML syntax error: {where}{problem}") from None


def load_config(source: str | Path | dict | Config, overrides: Iterable[str] = (), *,
                check_paths: bool = True, check_memory: bool = True) -> Config:
    """Read, override, validate and resolve an experiment config.

    ``source`` is a YAML file path, a dict (as ``yaml.safe_load`` would give) or a
    Config (which is re-validated, for example with more overrides). ``overrides`` are
    ``"dotted.key=value"`` strings whose values are parsed as YAML: ``optimizer.lr=0.01``,
    ``model.layers[0].filters=32``, ``train.early_stopping={patience: 3}``.
    ``check_paths`` reports a data path that does not exist; ``check_memory`` refuses a
    network that cannot train in this machine's memory (see cnncli.resources).
    """
    overrides = list(overrides)
    file: str | None = None
    if isinstance(source, Config):
        file, raw, overrides = source.source, copy.deepcopy(source.values), source.overrides + overrides
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        file = str(source)
        raw = read_yaml(source)
    try:
        if raw is None:
            raise ConfigError("", "", None, raw="the config is empty; expected a mapping with the sections "
                              + ", ".join(SECTIONS))
        if not isinstance(raw, dict):
            raise ConfigError("", f"a mapping with the sections {', '.join(SECTIONS)}", raw)
        for item in overrides:
            apply_override(raw, item)
        values = resolve(raw, default_name=Path(file).stem if file else "run", check_paths=check_paths,
                         check_memory=check_memory)
    except ConfigError as err:
        raise err.in_file(file) if file and not err.source else err
    return Config(values, file, overrides)


def apply_override(raw: dict, item: str) -> None:
    """Set ``a.b[2].c`` = YAML value in the nested dict ``raw`` (creating mappings)."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError("--set", "key=value, for example optimizer.lr=0.01", item)
    key, text = item.split("=", 1)
    key = key.strip()
    try:
        value = _load(text) if text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(key, "a YAML value", text, raw=f"--set {item}: the value is not valid YAML") from None
    parts = parse_key_path(key)
    node: Any = raw
    walked = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                size = len(node) if isinstance(node, list) else 0
                raise ConfigError(f"{walked}[{part}]", "", None,
                                  raw=f"--set {item}: no such list item (the list has {size})")
            if last:
                node[part] = value
            else:
                node = node[part]
            walked += f"[{part}]"
        else:
            if not isinstance(node, dict):
                raise ConfigError(walked, "", None, raw=f"--set {item}: {walked} is not a mapping")
            if last:
                node[part] = value
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
            walked = f"{walked}.{part}" if walked else part


_KEY_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(-?\d+)\]")


def parse_key_path(key: str) -> list[str | int]:
    """``model.layers[2].filters`` (or ``model.layers.2.filters``) -> ['model', 'layers', 2, 'filters']."""
    parts: list[str | int] = []
    for segment in key.split("."):
        if re.fullmatch(r"-?[0-9]+", segment):
            parts.append(int(segment))
            continue
        pos = 0
        while pos < len(segment):
            m = _KEY_PART.match(segment, pos)
            if not m:
                raise ConfigError(key, "a dotted key such as optimizer.lr or model.layers[0].filters", key)
            parts.append(m.group(1) if m.group(1) else int(m.group(2)))
            pos = m.end()
        if not segment:
            raise ConfigError(key, "a dotted key such as optimizer.lr or model.layers[0].filters", key)
    return parts


# ---------------------------------------------------------------------------- resolving
def resolve(raw: dict, *, default_name: str = "run", check_paths: bool = True, check_memory: bool = True) -> dict:
    """Validate ``raw`` and return the resolved config dict (defaults filled in)."""
    check_keys(raw, SECTIONS, "")
    out: dict[str, Any] = {}
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("name", "a non-empty string", name)
    out["name"] = sanitize_name(name)
    seed = raw.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**31)
    elif not _is_int(seed) or seed < 0:
        raise ConfigError("seed", "an int >= 0 (or null for a random seed, which is recorded)", seed)
    out["seed"] = int(seed)
    out["data"] = resolve_data(section(raw, "data"), check_paths=check_paths)
    out["model"] = resolve_model(section(raw, "model", required=True))
    out["train"] = resolve_train(section(raw, "train"))
    out["loss"], out["optimizer"] = resolve_objective(raw, out)
    out["eval"] = resolve_eval(section(raw, "eval"))
    # Build the network's shapes on the declared input shape (nothing allocated): shape
    # errors surface now, and a run too large for this machine is refused before it starts.
    from cnncli.builder import build_network
    from cnncli.nn.optimizers import OPTIMIZERS
    from cnncli.resources import check_memory as refuse_oversized

    network = build_network(out, allocate=False)
    if check_memory:
        slots = len(OPTIMIZERS.get(out["optimizer"]["name"]).slots)
        refuse_oversized(network, out["train"]["batch_size"], slots, out["eval"]["batch_size"])
    return out


def section(raw: dict, key: str, *, required: bool = False) -> dict:
    value = raw.get(key)
    if value is None:
        if required:
            raise ConfigError(key, "a mapping", None, raw="missing; this section is required")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, "a mapping", value)
    return value


def check_keys(mapping: dict, allowed: Iterable[str], path: str) -> None:
    """Refuse unknown keys, listing the allowed ones and the closest."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(where, "", None, raw=f"unknown key{hint}; allowed keys: {', '.join(allowed)}")


def resolve_data(raw: dict, *, check_paths: bool) -> dict:
    source = raw.get("source", "synthetic")
    if source not in DATA_SOURCES:
        close = difflib.get_close_matches(str(source), DATA_SOURCES, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError("data.source", "", None,
                          raw=f"unknown data source {source!r}{hint}; expected one of: {', '.join(DATA_SOURCES)}")
    defaults = {**DATA_COMMON, **DATA_BY_SOURCE[source]}
    check_keys(raw, defaults, "data")
    out = {**defaults, **raw, "source": source}
    if out["normalize"] not in NORMALIZATIONS:
        raise ConfigError("data.normalize", "one of " + ", ".join(NORMALIZATIONS), out["normalize"])
    if out["limit"] is not None and (not _is_int(out["limit"]) or out["limit"] < 1):
        raise ConfigError("data.limit", "a positive int (or null for all examples)", out["limit"])
    if source == "synthetic":
        _positive_int(out, "num_samples", "data", minimum=4)
        _positive_int(out, "num_classes", "data", minimum=2)
        if out["num_classes"] > 6:
            raise ConfigError("data.num_classes", "an int from 2 to 6 (the synthetic shapes)", out["num_classes"])
        if not _is_number(out["noise"]) or out["noise"] < 0:
            raise ConfigError("data.noise", "a number >= 0", out["noise"])
    else:
        if out["path"] is None:
            raise ConfigError("data.path", "", None, raw=f"missing; the {source} source reads its data from a path")
        for key in ("path", "test_path"):
            if out[key] is not None and not isinstance(out[key], str):
                raise ConfigError(f"data.{key}", "a path (string)", out[key])
            if check_paths and out[key] is not None and not Path(out[key]).exists():
                raise ConfigError(f"data.{key}", "", None, raw=f"{out[key]} does not exist")
        if source == "image_folder":
            if out["on_bad_image"] not in ("error", "skip"):
                raise ConfigError("data.on_bad_image", "error or skip", out["on_bad_image"])
            _boolean(out, "cache", "data")
            if check_paths and not Path(out["path"]).is_dir():
                raise ConfigError("data.path", "", None, raw=f"{out['path']} is not a folder of class folders")
        if source == "idx":
            _boolean(out, "use_test", "data")
    return out


def resolve_model(raw: dict) -> dict:
    check_keys(raw, ("input_shape", "layers"), "model")
    shape = raw.get("input_shape")
    if (not isinstance(shape, list) or len(shape) not in (1, 3)
            or not all(_is_int(d) and 0 < d < 2**31 for d in shape)):
        raise ConfigError("model.input_shape", "[height, width, channels] of positive ints", shape)
    layers = raw.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ConfigError("model.layers", "a non-empty list of layers", layers)
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise ConfigError(f"model.layers[{i}]", "a mapping such as {type: conv2d, filters: 8, kernel_size: 3}",
                              layer)
    from cnncli.nn.network import Network

    try:
        net = Network(layers)
    except ConfigError as err:
        raise err.prefixed("model") from None
    return {"input_shape": list(shape), "layers": net.config()}


def resolve_train(raw: dict) -> dict:
    check_keys(raw, TRAIN_DEFAULTS, "train")
    out = {**TRAIN_DEFAULTS, **raw}
    _positive_int(out, "epochs", "train")
    _positive_int(out, "batch_size", "train")
    out["checkpoint_every"] = _checkpoint_every(out["checkpoint_every"])
    if out["on_nan"] not in ("stop", "skip_batch"):
        raise ConfigError("train.on_nan", "stop or skip_batch", out["on_nan"])
    _boolean(out, "shuffle", "train")
    split = out["validation_split"]
    if not _is_number(split) or not 0 <= split < 1:
        raise ConfigError("train.validation_split", "a number in [0, 1)", split)
    if out["dtype"] not in ("float32", "float64"):
        raise ConfigError("train.dtype", "float32 or float64", out["dtype"])
    es = out["early_stopping"]
    if es is not None and es is not False:
        if es is True:
            es = {}
        if not isinstance(es, dict):
            raise ConfigError("train.early_stopping", "a mapping (patience, monitor, min_delta, restore_best) or null",
                              es)
        check_keys(es, EARLY_STOPPING_DEFAULTS, "train.early_stopping")
        es = {**EARLY_STOPPING_DEFAULTS, **es}
        if es["monitor"] not in MONITORS:
            raise ConfigError("train.early_stopping.monitor", "one of " + ", ".join(MONITORS), es["monitor"])
        _positive_int(es, "patience", "train.early_stopping")
        if not _is_number(es["min_delta"]) or es["min_delta"] < 0:
            raise ConfigError("train.early_stopping.min_delta", "a number >= 0", es["min_delta"])
        _boolean(es, "restore_best", "train.early_stopping")
        out["early_stopping"] = es
    else:
        out["early_stopping"] = None
    return out


def resolve_objective(raw: dict, resolved: dict) -> tuple[dict, dict]:
    """Loss (inferred from the output activation when absent) and optimizer, resolved."""
    from cnncli.nn.losses import make_loss
    from cnncli.nn.optimizers import make_optimizer

    loss_spec = raw.get("loss")
    if loss_spec is None:
        last = resolved["model"]["layers"][-1]
        act = last.get("activation")
        act = act.get("name") if isinstance(act, dict) else act
        if last.get("type") in ("sigmoid", "softmax"):
            act = last["type"]
        loss_spec = {"sigmoid": "binary_crossentropy", "softmax": "categorical_crossentropy"}.get(act, "mse")
    loss = make_loss(loss_spec, "loss")
    opt_spec = raw.get("optimizer", {"name": "adam"})
    if isinstance(opt_spec, dict) and "name" not in opt_spec:
        opt_spec = {"name": "adam", **opt_spec}
    optimizer = make_optimizer(opt_spec, "optimizer")
    return loss.config(), optimizer.config()


def resolve_eval(raw: dict) -> dict:
    check_keys(raw, EVAL_DEFAULTS, "eval")
    out = {**EVAL_DEFAULTS, **raw}
    _positive_int(out, "batch_size", "eval")
    if out["checkpoint"] not in ("best", "last"):
        raise ConfigError("eval.checkpoint", "best or last", out["checkpoint"])
    return out


def sanitize_name(name: str) -> str:
    """A run name that is one safe path component: [A-Za-z0-9._-], no leading dot."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip(".-")
    return cleaned[:80] or "run"


# ----------------------------------------------------------------------------- helpers
def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _positive_int(d: dict, key: str, path: str, minimum: int = 1) -> None:
    if not _is_int(d[key]) or d[key] < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ConfigError(f"{path}.{key}", what, d[key])


def _checkpoint_every(value: object) -> int | str:
    """An int (epochs), or ``"N epochs"`` / ``"N steps"``; resolved to int or ``"N steps"``."""
    expected = "a positive int (epochs), or 'N epochs' or 'N steps'"
    if _is_int(value):
        if value < 1:
            raise ConfigError("train.checkpoint_every", expected, value)
        return value
    if isinstance(value, str):
        parts = value.split()
        if len(parts) == 2 and re.fullmatch(r"[0-9]+", parts[0]) and 1 <= int(parts[0]) < 2**31:
            unit = parts[1].lower()
            if unit in ("epoch", "epochs"):
                return int(parts[0])
            if unit in ("step", "steps"):
                return f"{int(parts[0])} steps"
    raise ConfigError("train.checkpoint_every", expected, value)


def _boolean(d: dict, key: str, path: str) -> None:
    if not isinstance(d[key], bool):
        raise ConfigError(f"{path}.{key}", "true or false", d[key])


__all__ = ["Config", "load_config", "apply_override", "parse_key_path", "sanitize_name", "CnnCliError",
           "ShapeError"]
