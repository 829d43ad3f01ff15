"""Experiment configs: YAML in, a validated and fully resolved config out.

A config has the sections ``name``, ``seed``, ``plugins``, ``data``, ``model``, ``loss``,
``optimizer``, ``train`` and ``eval``. :func:`load_config` reads a file
(``yaml.safe_load`` only) or a dict, applies ``--set``-style overrides, runs the plugins
it names (``cnncli.plugins``: the only code a config can run), checks every key and
value, fills in every default and returns a :class:`Config` whose ``values`` are what a
run folder keeps.

The layers, the loss and the optimizer are checked by constructing them with the
engine (so every engine keyword is reachable and checked once, in one place); their
resolved form is the engine objects' own ``config()``. The network is then built on
the declared input shape, so shape errors name the layer index before any data is read,
and the loss is checked against the network's output (``Loss.check_output``).

Every problem is a :class:`~cnncli.errors.ConfigError` that reads
``<file>: <key path>: expected <what>; got <value>``.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cnncli import plugins, yamlfiles
from cnncli.data.images import DEFAULT_MAX_IMAGE_PIXELS, PILLOW_BOMB_LIMIT
from cnncli.errors import CnnCliWarning, ConfigError, ShapeError
from cnncli.nn import validate
from cnncli.nn.validate import known_keys
from cnncli.runs import CHECKPOINTS, sanitize_name

SECTIONS = ("name", "seed", "plugins", "data", "model", "loss", "optimizer", "train", "eval")
#: Sections kept only when given: where the weights start (``--init-from``), the keys
#: a resume changed (written by cnncli into a run's config.yaml), and where the run is
#: logged besides its folder (``tracking``: MLflow, see cnncli.tracking).
OPTIONAL_SECTIONS = ("init_from", "history", "tracking")
DATA_SOURCES = ("synthetic", "image_folder", "npz", "idx", "csv", "caltech101", "mnist", "fashion_mnist", "cifar10")
NORMALIZATIONS = ("scale", "standardize", "none")

# Keys of data, by source; every source also takes the COMMON ones.
DATA_COMMON = {
    "source": "synthetic",
    "normalize": "scale",
    "limit": None,
    "test_path": None,
    "augment": None,   # training batches only: cnncli.data.augment
}
DATA_BY_SOURCE: dict[str, dict[str, Any]] = {
    "synthetic": {"num_samples": 1200, "num_classes": 3, "noise": 0.1},
    "image_folder": {"path": None, "on_bad_image": "error", "cache": True,
                     "max_image_pixels": DEFAULT_MAX_IMAGE_PIXELS},
    "npz": {"path": None, "x_key": "x", "y_key": "y"},
    "idx": {"path": None, "train_prefix": "train", "test_prefix": "t10k", "use_test": True},
    "csv": {"path": None, "on_bad_image": "error", "cache": True, "max_image_pixels": DEFAULT_MAX_IMAGE_PIXELS},
    # Datasets by name (cnncli.data.datasets): fetched, verified and cached on first use.
    "caltech101": {"classes": ["Motorbikes", "airplanes"], "on_bad_image": "error", "cache": True,
                   "max_image_pixels": DEFAULT_MAX_IMAGE_PIXELS},
    "mnist": {"use_test": True},
    "fashion_mnist": {"use_test": True},
    "cifar10": {"use_test": True},
}
#: The sources that read files from data.path.
PATH_SOURCES = ("image_folder", "npz", "idx", "csv")
TRAIN_DEFAULTS = {
    "epochs": 10,
    "batch_size": 32,
    "shuffle": True,
    "validation_split": 0.2,
    "early_stopping": None,
    "checkpoint_every": 1,
    "on_nan": "stop",
    "dtype": "float32",
    "dynamics": {"every": 1},  # true: one record an epoch; {every: "N steps"}; false
    "report": False,
}
#: The optimizer of a config that names none.
DEFAULT_OPTIMIZER = "adam"
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
    #: The document as given (before overrides and defaults; its data paths made absolute):
    #: what a re-validation with more overrides starts from, so that ``optimizer.name=sgd``
    #: on a resolved Adam config does not carry Adam's resolved ``beta1`` along. None:
    #: start from ``values``.
    raw: dict | None = field(default=None, repr=False, compare=False)
    #: The folder its plugin paths were resolved against (absolute), kept for a re-validation.
    base_dir: Path | None = field(default=None, repr=False, compare=False)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def to_yaml(self) -> str:
        return yamlfiles.dump(self.values)


def load_config(source: str | Path | dict | Config, overrides: Iterable[str] = (), *,
                check_paths: bool = True, check_memory: bool = True, base_dir: str | Path | None = None) -> Config:
    """Read, override, validate and resolve an experiment config.

    ``source`` is a YAML file path, a dict (as ``yaml.safe_load`` would give) or a
    Config (which is re-validated, for example with more overrides). ``overrides`` are
    ``"dotted.key=value"`` strings whose values are parsed as YAML: ``optimizer.lr=0.01``,
    ``model.layers[0].filters=32``, ``train.early_stopping={patience: 3}``.
    ``check_paths`` reports a data path that does not exist; ``check_memory`` refuses a
    network that cannot train in this machine's memory (see cnncli.resources).
    Plugin paths are relative to ``base_dir``: the config file's folder by default (the
    current directory for a dict).
    """
    overrides = list(overrides)
    file: str | None = None
    if isinstance(source, Config):
        file, overrides = source.source, source.overrides + overrides
        raw = copy.deepcopy(source.raw if source.raw is not None else source.values)
        base_dir = base_dir if base_dir is not None else source.base_dir
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        file = str(source)
        raw = yamlfiles.read(source)
    if base_dir is None:
        base_dir = Path(file).parent if file else Path.cwd()
    base_dir = Path(os.path.abspath(base_dir))
    if file:
        _paths_from(raw, Path(file).parent)
    document = copy.deepcopy(raw)  # relative data paths already made absolute: a later chdir changes nothing
    try:
        if raw is None:
            raise ConfigError("", "", None, raw="the config is empty; expected a mapping with the sections "
                              + ", ".join(SECTIONS))
        if not isinstance(raw, dict):
            raise ConfigError("", f"a mapping with the sections {', '.join(SECTIONS)}", raw)
        given_optimizer = copy.deepcopy(raw.get("optimizer"))
        for item in overrides:
            apply_override(raw, item)
        values = resolve(raw, default_name=Path(file).stem if file else "run", check_paths=check_paths,
                         check_memory=check_memory, base_dir=base_dir)
    except ConfigError as err:
        raise err.in_file(file) if file and not err.source else err
    warn_kept_rate(given_optimizer, list(overrides), values["optimizer"], file or "the config")
    return Config(values, file, overrides, raw=document, base_dir=base_dir)


def warn_kept_rate(given: object, overrides: list[str], resolved: dict, where: str) -> None:
    """Say :func:`kept_rate_note`, once per process, as a :class:`CnnCliWarning`."""
    note = kept_rate_note(given, overrides, resolved, where)
    if note is not None and note not in _SAID:
        _SAID.add(note)
        warnings.warn(note, CnnCliWarning, stacklevel=3)


#: The warnings :func:`load_config` has given in this process (each is said once).
_SAID: set[str] = set()


def kept_rate_note(given: object, overrides: list[str], resolved: dict, where: str) -> str | None:
    """What to say when the overrides change ``optimizer.name`` but not ``optimizer.lr``
    while the config gives a rate: the rate stays, though it was chosen for another
    optimizer (Adam's 0.002 leaves SGD nearly still). None when there is nothing to say."""
    if not isinstance(given, dict) or "lr" not in given:
        return None  # no rate given: the new optimizer takes its own default
    keys = [parse_key_path(item.split("=", 1)[0].strip()) for item in overrides if "=" in item]
    if ["optimizer", "name"] not in keys or any(k in (["optimizer"], ["optimizer", "lr"]) for k in keys):
        return None
    before, now = given.get("name", DEFAULT_OPTIMIZER), resolved["name"]
    if before == now:
        return None
    from cnncli.nn.optimizers import make_optimizer

    default = make_optimizer({"name": now}).config()["lr"]
    return (f"optimizer.name={now} keeps optimizer.lr {resolved['lr']:g}, the rate {where} gives {before} "
            f"({now}'s own default is {default:g}); set optimizer.lr too to give {now} a rate of its own")


def _paths_from(raw: object, folder: Path) -> None:
    """A config file's relative data paths are relative to its folder (``--set`` values,
    applied later, stay relative to the current folder)."""
    data = raw.get("data") if isinstance(raw, dict) else None
    if isinstance(data, dict):
        for key in ("path", "test_path"):
            value = data.get(key)
            if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
                data[key] = os.path.normpath(os.path.join(os.path.abspath(folder), value))
    init = raw.get("init_from") if isinstance(raw, dict) else None
    if isinstance(init, str) and init and not os.path.isabs(os.path.expanduser(init)):
        raw["init_from"] = os.path.normpath(os.path.join(os.path.abspath(folder), init))


def apply_override(raw: dict, item: str) -> None:
    """Set ``a.b[2].c`` = YAML value in the nested dict ``raw`` (creating mappings)."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError("--set", "key=value, for example optimizer.lr=0.01", item)
    key, text = item.split("=", 1)
    key = key.strip()
    try:
        value = yamlfiles.parse(text) if text.strip() else None
    except yamlfiles.YAMLError:
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
def resolve(raw: dict, *, default_name: str = "run", check_paths: bool = True, check_memory: bool = True,
            base_dir: str | Path = ".") -> dict:
    """Validate ``raw`` and return the resolved config dict (defaults filled in)."""
    known_keys(raw, SECTIONS + OPTIONAL_SECTIONS, "")
    out: dict[str, Any] = {}
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("name", "a non-empty string", name)
    out["name"] = sanitize_name(name)
    seed = raw.get("seed")
    if seed is not None and (not validate.is_int(seed) or seed < 0):
        raise ConfigError("seed", "an int >= 0 (or null for a random seed, which is recorded)", seed)
    out["seed"] = secrets.randbelow(2**31) if seed is None else int(seed)
    out["plugins"] = plugins.resolve(raw.get("plugins"), base_dir)  # before any component is named
    out["data"] = resolve_data(section(raw, "data"), check_paths=check_paths)
    out["model"] = resolve_model(section(raw, "model", required=True))
    out["data"]["augment"] = resolve_augment(out["data"]["augment"], out["model"]["input_shape"])
    out["train"] = resolve_train(section(raw, "train"))
    out["eval"] = resolve_eval(section(raw, "eval"))
    es = out["train"]["early_stopping"]
    if es and not es["restore_best"] and "checkpoint" not in section(raw, "eval"):
        # A run told not to restore its best weights is evaluated with its last ones, unless
        # eval.checkpoint says otherwise: the one setting every evaluation then follows.
        out["eval"]["checkpoint"] = "last"
    # Build the network's shapes on the declared input shape (nothing allocated): shape
    # errors surface now, and a run too large for this machine is refused before it starts.
    network = build_network(out, allocate=False)
    if network.parameter_count() and network.lowest_trainable() == len(network.layers):
        raise ConfigError("model.layers", "", None, raw="every layer with parameters is frozen (trainable: false): "
                                                        "nothing would train")
    loss, class_weight, optimizer = resolve_objective(raw, network)
    out["loss"], out["optimizer"] = {**loss.config(), "class_weight": class_weight}, optimizer.config()
    # Components registered from an importable module without plugins: a run keeps them too.
    out["plugins"] = out["plugins"] + plugins.implicit(out, out["plugins"])
    if check_memory:
        from cnncli.resources import check_memory as refuse_oversized

        refuse_oversized(network, out["train"]["batch_size"], len(optimizer.slots), out["eval"]["batch_size"])
    if raw.get("init_from") is not None:
        out["init_from"] = resolve_init_from(raw["init_from"])
    if raw.get("history"):
        history = raw["history"]
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise ConfigError("history", "a list of mappings (cnncli writes it when a resume changes keys)", history)
        out["history"] = history
    if raw.get("tracking") is not None:
        out["tracking"] = resolve_tracking(raw["tracking"], out["name"])
    return {key: out[key] for key in SECTIONS + OPTIONAL_SECTIONS if key in out}


# ``tracking.mlflow``: the keys and their defaults (cnncli.tracking does the logging).
MLFLOW_DEFAULTS = {
    "enabled": True,           # false keeps the settings but logs nothing
    "uri": None,               # $CNNCLI_MLFLOW_URI, else $MLFLOW_TRACKING_URI, else MLFLOW_DEFAULT_URI
    "experiment": None,        # the config's name
    "artifact_location": None,  # for a new experiment; a SQLite store's default: mlartifacts/ beside the database
    "log_checkpoints": False,  # checkpoints/*.npz as artifacts too (they can be large)
    "parent_run_id": None,     # set by cnncli sweep: the trial's MLflow run is nested under the sweep's
}
MLFLOW_URI_ENV = "CNNCLI_MLFLOW_URI"
#: MLflow's own default store since 3.0: ``mlflow ui`` run in the same folder shows the runs.
MLFLOW_DEFAULT_URI = "sqlite:///mlflow.db"


def resolve_tracking(raw: object, config_name: str) -> dict:
    """``tracking: {mlflow: {...}}`` (``mlflow: true`` or ``{}`` for the defaults, ``false``
    for off), every key written out.

    The store's URI is resolved now (the key, else ``$CNNCLI_MLFLOW_URI``, else
    ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``), and a relative SQLite or file
    location is made absolute from the current folder, as MLflow reads it: the run's
    config.yaml then names one store, so a resume or a sweep's worker logs to the same
    place from any folder. Nothing here imports MLflow or reaches the store; a run checks
    both before it starts (cnncli.tracking.connect).
    """
    if not isinstance(raw, dict):
        raise ConfigError("tracking", "a mapping such as {mlflow: {experiment: NAME}}", raw)
    known_keys(raw, ("mlflow",), "tracking")
    if "mlflow" not in raw:
        return {}
    spec = raw["mlflow"]
    if spec is None or spec is True:
        spec = {}
    elif spec is False:
        spec = {"enabled": False}
    if not isinstance(spec, dict):
        raise ConfigError("tracking.mlflow", "a mapping (uri, experiment, log_checkpoints, ...), true or false", spec)
    known_keys(spec, MLFLOW_DEFAULTS, "tracking.mlflow")
    out = {**MLFLOW_DEFAULTS, **spec}
    for key in ("enabled", "log_checkpoints"):
        _in("tracking.mlflow", validate.boolean, key, out[key])
    for key in ("uri", "experiment", "artifact_location", "parent_run_id"):
        if out[key] is not None and (not isinstance(out[key], str) or not out[key].strip()):
            raise ConfigError(f"tracking.mlflow.{key}", "a non-empty string or null", out[key])
    uri = out["uri"] or os.environ.get(MLFLOW_URI_ENV) or os.environ.get("MLFLOW_TRACKING_URI") or MLFLOW_DEFAULT_URI
    out["uri"] = _absolute_store_uri(uri.strip())
    out["experiment"] = out["experiment"] or config_name
    if len(out["experiment"]) > 500:  # MLflow's limit on an experiment's name
        raise ConfigError("tracking.mlflow.experiment", "a name of at most 500 characters", out["experiment"])
    location = out["artifact_location"]
    if location is not None and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", location):
        out["artifact_location"] = os.path.abspath(os.path.expanduser(location))
    if out["parent_run_id"] is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", out["parent_run_id"]):
        raise ConfigError("tracking.mlflow.parent_run_id", "an MLflow run id", out["parent_run_id"])
    return {"mlflow": out}


def _absolute_store_uri(uri: str) -> str:
    """A tracking URI with its local location made absolute: ``sqlite:///x.db`` ->
    ``sqlite:////cwd/x.db``, ``file:./mlruns`` or ``./mlruns`` -> ``file:///cwd/mlruns``;
    servers (``http(s)://``, ``databricks``) and other databases are kept as given."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and not path.startswith("/") and not path.startswith(":memory:"):
            return "sqlite:///" + os.path.abspath(os.path.expanduser(path))
        return uri
    if uri.startswith("file:"):
        path = uri[len("file:"):]
        path = path[2:] if path.startswith("//") else path
        return Path(os.path.abspath(os.path.expanduser(path))).as_uri()
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", uri):  # a plain folder: MLflow's file store
        return Path(os.path.abspath(os.path.expanduser(uri))).as_uri()
    return uri


def resolve_init_from(value: object) -> dict:
    """``init_from``: ``"RUN_DIR[:best|last]"`` or ``"FILE.npz"`` (a string), or the
    mapping a run records (``{path, checkpoint, ...}``): resolved to a mapping."""
    expected = "a run folder (RUN_DIR, RUN_DIR:best, RUN_DIR:last) or a checkpoint .npz"
    if isinstance(value, str) and value.strip():
        from cnncli.transfer import parse_spec

        path, which = parse_spec(value)
        return {"path": str(path), "checkpoint": which}
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        known_keys(value, ("path", "checkpoint", "epoch", "loaded", "kept"), "init_from")
        return dict(value)
    raise ConfigError("init_from", expected, value)


def build_network(values: dict, *, allocate: bool = True):
    """The model section's network, built on its input shape with the config's seed and dtype.

    A layer that cannot take its input is reported as ``model.layers[i]: ...``. With
    ``allocate=False`` only shapes and sizes are built (see ``Network.build``).
    """
    from cnncli.nn.network import Network

    model = values["model"]
    try:
        net = Network(model["layers"])
        net.build(tuple(model["input_shape"]), seed=values["seed"], dtype=values["train"]["dtype"],
                  allocate=allocate)
    except ShapeError as err:
        raise ConfigError(f"model.layers[{err.index}]", "", None, raw=err.message) from None
    except ConfigError as err:
        raise err.prefixed("model") from None
    return net


def section(raw: dict, key: str, *, required: bool = False) -> dict:
    value = raw.get(key)
    if value is None:
        if required:
            raise ConfigError(key, "a mapping", None, raw="missing; this section is required")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, "a mapping", value)
    return value


def _in(path: str, check, *args, **kwargs):
    """Run a validator, saying where the value sits (``train.epochs``)."""
    try:
        return check(*args, **kwargs)
    except ConfigError as err:
        raise err.prefixed(path) from None


def resolve_data(raw: dict, *, check_paths: bool) -> dict:
    source = raw.get("source", "synthetic")
    if source not in DATA_SOURCES:
        raise ConfigError("data.source", "", None, raw=f"unknown data source {source!r}"
                          f"{validate.did_you_mean(source, DATA_SOURCES)}; expected one of: {', '.join(DATA_SOURCES)}")
    defaults = {**DATA_COMMON, **DATA_BY_SOURCE[source]}
    known_keys(raw, defaults, "data")
    out = {**defaults, **raw, "source": source}
    _in("data", validate.choice, "normalize", out["normalize"], NORMALIZATIONS)
    if out["limit"] is not None:
        _in("data", validate.positive_int, "limit", out["limit"])
    if source == "synthetic":
        _in("data", validate.positive_int, "num_samples", out["num_samples"], minimum=4)
        if not validate.is_int(out["num_classes"]) or not 2 <= out["num_classes"] <= 6:
            raise ConfigError("data.num_classes", "an int from 2 to 6 (the synthetic shapes)", out["num_classes"])
        _in("data", validate.number, "noise", out["noise"], low=0.0)
    elif source in PATH_SOURCES:
        if out["path"] is None:
            raise ConfigError("data.path", "", None, raw=f"missing; the {source} source reads its data from a path")
        for key in ("path", "test_path"):
            _check_path(out, key, check_paths)
        if source == "image_folder" and check_paths and not Path(out["path"]).is_dir():
            raise ConfigError("data.path", "", None, raw=f"{out['path']} is not a folder of class folders")
        if source == "csv" and check_paths and not Path(out["path"]).is_file():
            raise ConfigError("data.path", "", None, raw=f"{out['path']} is not a CSV file of path,label rows")
    else:
        _check_path(out, "test_path", check_paths)
    if "classes" in out:
        classes = out["classes"]
        if (not isinstance(classes, list) or len(classes) < 2 or len(set(map(str, classes))) != len(classes)
                or not all(isinstance(c, str) and c for c in classes)):
            raise ConfigError("data.classes", "a list of at least 2 different class names", classes)
    if "on_bad_image" in out:
        _in("data", validate.choice, "on_bad_image", out["on_bad_image"], ("error", "skip"), "error or skip")
    if "max_image_pixels" in out:  # checked from each image's header before decoding (cnncli.data.images)
        pixels = out["max_image_pixels"]
        if not validate.is_int(pixels) or not 1 <= pixels <= PILLOW_BOMB_LIMIT:
            raise ConfigError("data.max_image_pixels", f"an int from 1 to {PILLOW_BOMB_LIMIT} (Pillow's "
                              "decompression-bomb limit)", pixels)
    for key in ("cache", "use_test"):
        if key in out:
            _in("data", validate.boolean, key, out[key])
    return out


def _check_path(out: dict, key: str, check_paths: bool) -> None:
    """A path (string) that exists, when asked; written absolute (relative to the current folder)."""
    value = out[key]
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise ConfigError(f"data.{key}", "a path (string)", value)
    absolute = os.path.abspath(os.path.expanduser(value))
    if check_paths and not Path(absolute).exists():
        raise ConfigError(f"data.{key}", "", None, raw=f"{absolute} does not exist")
    out[key] = absolute


def resolve_augment(spec: object, input_shape: list) -> dict:
    """``data.augment``, checked against the input shape; every key written out."""
    from cnncli.data.augment import Augmenter

    try:
        return Augmenter.from_config(spec, input_shape).config()
    except ConfigError as err:
        raise err.prefixed("data") from None


def resolve_model(raw: dict) -> dict:
    known_keys(raw, ("input_shape", "layers"), "model")
    shape = raw.get("input_shape")
    if (not isinstance(shape, list) or len(shape) not in (1, 3)
            or not all(validate.is_int(d) and 0 < d < 2**31 for d in shape)):
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
    known_keys(raw, TRAIN_DEFAULTS, "train")
    out = {**TRAIN_DEFAULTS, **raw}
    _in("train", validate.positive_int, "epochs", out["epochs"])
    _in("train", validate.positive_int, "batch_size", out["batch_size"])
    out["checkpoint_every"] = _interval("train.checkpoint_every", out["checkpoint_every"])
    out["dynamics"] = _dynamics(out["dynamics"])
    _in("train", validate.choice, "on_nan", out["on_nan"], ("stop", "skip_batch"), "stop or skip_batch")
    _in("train", validate.boolean, "shuffle", out["shuffle"])
    _in("train", validate.boolean, "report", out["report"])
    split = out["validation_split"]
    if not validate.is_finite(split) or not 0 <= split < 1:
        raise ConfigError("train.validation_split", "a number in [0, 1)", split)
    _in("train", validate.choice, "dtype", out["dtype"], ("float32", "float64"), "float32 or float64")
    es = out["early_stopping"]
    if es is not None and es is not False:
        if es is True:
            es = {}
        if not isinstance(es, dict):
            raise ConfigError("train.early_stopping", "a mapping (patience, monitor, min_delta, restore_best) or null",
                              es)
        known_keys(es, EARLY_STOPPING_DEFAULTS, "train.early_stopping")
        es = {**EARLY_STOPPING_DEFAULTS, **es}
        where = "train.early_stopping"
        _in(where, validate.choice, "monitor", es["monitor"], MONITORS)
        _in(where, validate.positive_int, "patience", es["patience"])
        _in(where, validate.number, "min_delta", es["min_delta"], low=0.0)
        _in(where, validate.boolean, "restore_best", es["restore_best"])
        out["early_stopping"] = es
    else:
        out["early_stopping"] = None
    return out


def default_loss(network) -> str:
    """The loss a config without one gets, from the output activation: sigmoid gives
    binary cross-entropy, softmax categorical cross-entropy, anything else mse."""
    return {"sigmoid": "binary_crossentropy", "softmax": "categorical_crossentropy"}.get(
        network.output_activation.name, "mse")


def resolve_objective(raw: dict, network):
    """The loss (inferred from the output activation when absent; checked against it),
    its ``class_weight`` (the training loop's, resolved) and the optimizer."""
    from cnncli.nn.losses import make_loss
    from cnncli.nn.optimizers import make_optimizer

    loss_spec = raw.get("loss")
    class_weight = None
    if isinstance(loss_spec, dict) and "class_weight" in loss_spec:  # the training loop's, not the loss's
        loss_spec = dict(loss_spec)
        class_weight = resolve_class_weight(loss_spec.pop("class_weight"))
    loss = make_loss(default_loss(network) if loss_spec is None else loss_spec, "loss")
    try:
        network.check_loss(loss)
    except ConfigError as err:
        raise err.prefixed("loss") from None
    opt_spec = raw.get("optimizer", {"name": DEFAULT_OPTIMIZER})
    if isinstance(opt_spec, dict) and "name" not in opt_spec:
        opt_spec = {"name": DEFAULT_OPTIMIZER, **opt_spec}
    return loss, class_weight, make_optimizer(opt_spec, "optimizer")


def resolve_class_weight(value: object):
    """``balanced`` (n / (classes x n_c) of the training split, as scikit-learn), or
    ``{class name or index: weight > 0}`` (unnamed classes weigh 1), or null."""
    expected = "balanced, or a mapping of class names (or indices) to weights > 0"
    if value is None or value == "balanced":
        return value
    if not isinstance(value, dict) or not value:
        raise ConfigError("loss.class_weight", expected, value)
    for key, weight in value.items():
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise ConfigError("loss.class_weight", expected, value)
        validate.number(f"loss.class_weight.{key}", weight, low=0.0, low_open=True)
    return {key: float(weight) for key, weight in value.items()}


def loss_keywords(loss: dict) -> dict:
    """The resolved loss section without what the training loop takes (class_weight)."""
    return {k: v for k, v in loss.items() if k != "class_weight"}


def resolve_eval(raw: dict) -> dict:
    known_keys(raw, EVAL_DEFAULTS, "eval")
    out = {**EVAL_DEFAULTS, **raw}
    _in("eval", validate.positive_int, "batch_size", out["batch_size"])
    _in("eval", validate.choice, "checkpoint", out["checkpoint"], CHECKPOINTS, "best or last")
    return out


def _interval(where: str, value: object) -> int | str:
    """An int (epochs), or ``"N epochs"`` / ``"N steps"``; resolved to int or ``"N steps"``."""
    expected = "a positive int (epochs), or 'N epochs' or 'N steps'"
    if validate.is_int(value):
        if value < 1:
            raise ConfigError(where, expected, value)
        return value
    if isinstance(value, str):
        parts = value.split()
        if len(parts) == 2 and re.fullmatch(r"[0-9]+", parts[0]) and 1 <= int(parts[0]) < 2**31:
            unit = parts[1].lower()
            if unit in ("epoch", "epochs"):
                return int(parts[0])
            if unit in ("step", "steps"):
                return f"{int(parts[0])} steps"
    raise ConfigError(where, expected, value)


def _dynamics(value: object) -> dict | bool:
    """``train.dynamics``: true (every epoch), false, or ``{every: N | "N epochs" | "N steps"}``;
    resolved to false or ``{every: N}`` / ``{every: "N steps"}``."""
    if value is True or value is None:
        return {"every": 1}
    if value is False:
        return False
    if not isinstance(value, dict):
        raise ConfigError("train.dynamics", "true, false, or {every: 'N steps' or 'N epochs'}", value)
    known_keys(value, {"every": 1}, "train.dynamics")
    return {"every": _interval("train.dynamics.every", value.get("every", 1))}


__all__ = ["Config", "load_config", "apply_override", "parse_key_path", "build_network", "SECTIONS"]
