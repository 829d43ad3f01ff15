"""Run folders: creation, atomic files, metrics logs, checkpoints, status.

A run lives in ``<runs_dir>/<YYYYmmdd-HHMMSS>-<name>/`` and is never overwritten (a
second run in the same second gets ``-2``, ``-3``, ...). Every file is written
atomically: to a temporary file in the same folder, flushed, fsynced, renamed.

Checkpoints are ``.npz`` files of plain arrays (loadable with ``allow_pickle=False``):
``param/<name>`` for parameters and buffers, ``optim/<key>`` for the optimizer state and
``meta``, a JSON string with the format version, epoch, step, RNG states and a SHA-256
checksum of every array.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from cnncli.errors import CheckpointError, RunFolderError

CHECKPOINT_FORMAT = 1
METRIC_FIELDS = ["epoch", "step", "lr", "loss", "accuracy", "val_loss", "val_accuracy", "seconds",
                 "images_per_second", "skipped_batches"]


# ------------------------------------------------------------------------- atomic files
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, or Ctrl-C at once: the old file stays, no temporary is left
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


# ------------------------------------------------------------------------------ folders
def sanitize_name(name: str) -> str:
    """A run name that is one safe path component: [A-Za-z0-9._-], no leading dot."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip(".-")
    return cleaned[:80] or "run"


def create_run_dir(runs_dir: str | Path, name: str, *, exact: bool = False, checkpoints: bool = True) -> Path:
    """A new, empty folder ``<runs_dir>/<YYYYmmdd-HHMMSS>-<name>`` (or ``<runs_dir>/<name>``
    with ``exact``), never an existing one; the name cannot leave ``runs_dir``."""
    root = Path(runs_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"{root}: cannot create the runs folder ({err.strerror})") from None
    if not os.access(root, os.W_OK):
        raise RunFolderError(f"{root}: the runs folder is not writable")
    base = sanitize_name(name) if exact else f"{time.strftime('%Y%m%d-%H%M%S')}-{sanitize_name(name)}"
    for attempt in range(1, 1000):
        candidate = root / (base if attempt == 1 else f"{base}-{attempt}")
        if candidate.resolve().parent != root.resolve():
            raise RunFolderError(f"run name {name!r} would leave {root}")
        try:
            candidate.mkdir()
        except FileExistsError:
            if exact:
                raise RunFolderError(f"{candidate}: already exists") from None
            continue
        if checkpoints:
            (candidate / "checkpoints").mkdir()
        return candidate
    raise RunFolderError(f"{root}: too many runs named {base}")


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "status.json").is_file()


def is_training_run(path: Path) -> bool:
    """A run folder that trained a network (not a learning-rate test's, which has
    ``lr_find.json`` and no checkpoint)."""
    return is_run_dir(path) and not (path / "lr_find.json").is_file()


def list_runs(runs_dir: str | Path) -> list[Path]:
    """Training run folders under ``runs_dir`` (not the sweeps inside it, nor lr-find's
    folders), oldest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and is_training_run(p)), key=lambda p: p.name)


def latest_run(runs_dir: str | Path = "runs") -> Path:
    runs = list_runs(runs_dir)
    if not runs:
        raise RunFolderError(f"no runs in {runs_dir}/: train one first (cnncli train CONFIG)")
    return runs[-1]


def resolve_run_dir(run_dir: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """The given run folder (checked), or the most recent one under ``runs_dir``."""
    if run_dir is None:
        return latest_run(runs_dir)
    path = Path(run_dir)
    if not path.is_dir():
        raise RunFolderError(f"{path}: no such run folder")
    if not is_run_dir(path):
        raise RunFolderError(f"{path}: not a run folder (no config.yaml and status.json)")
    return path


CHECKPOINTS = ("best", "last")


def checkpoint_name(which: str) -> str:
    """``which`` if it names a checkpoint a run keeps (best or last)."""
    if which not in CHECKPOINTS:
        raise CheckpointError(f"checkpoint: expected best or last; got {which!r}")
    return which


def checkpoint_file(run_dir: str | Path, which: str) -> Path:
    """``run_dir/checkpoints/<which>.npz`` for ``which`` best or last (checked)."""
    return Path(run_dir) / "checkpoints" / f"{checkpoint_name(which)}.npz"


def write_status(run_dir: Path, state: str, **details) -> None:
    write_json(run_dir / "status.json", {"status": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                         **details})


def epoch_fields(completed: int, batch: int) -> dict:
    """How far a run got, as status.json says it: ``epochs_completed`` (epochs are
    numbered from 1, as the terminal and metrics.jsonl number them), and for a run that
    stopped inside an epoch, ``current_epoch`` (that epoch's number) and ``batch`` (the
    batches of it finished)."""
    if batch:
        return {"epochs_completed": completed, "current_epoch": completed + 1, "batch": batch}
    return {"epochs_completed": completed, "batch": 0}


def epochs_completed(status: dict) -> int:
    """Epochs a run finished, from its status (run folders written before the field was
    named ``epochs_completed`` call it ``epoch``)."""
    return int(status.get("epochs_completed", status.get("epoch", 0)) or 0)


def best_epoch(run_dir: Path, rows: list[dict] | None = None) -> tuple[str, dict | None]:
    """(monitor, metrics row) of the run's best epoch in the one meaning training gives
    "best": the epoch whose monitored metric (``train.early_stopping.monitor``, else
    val_loss; loss and accuracy when there is no validation data) was best, the epoch
    best.npz holds. status.json says which (training writes ``best_epoch`` and
    ``monitor`` with every status); for a folder written before it did, it is read off
    metrics.jsonl by the same rule (without ``min_delta``)."""
    rows = read_metrics(run_dir) if rows is None else rows
    status = read_status(run_dir)
    monitor = status.get("monitor")
    if monitor is None:
        try:
            import yaml

            config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
            early = (config.get("train") or {}).get("early_stopping") or {}
            monitor = early.get("monitor", "val_loss") if isinstance(early, dict) else "val_loss"
        except Exception:  # a run folder without a readable config: the default monitor
            monitor = "val_loss"
        if rows and monitor.startswith("val_") and rows[-1].get(monitor) is None:
            monitor = monitor[4:]
    if status.get("best_epoch") is not None:
        return monitor, next((r for r in rows if r.get("epoch") == status["best_epoch"]), None)
    scored = [r for r in rows if isinstance(r.get(monitor), (int, float)) and r[monitor] == r[monitor]]
    if not scored:
        return monitor, None
    pick = max if monitor.endswith("accuracy") else min
    return monitor, pick(scored, key=lambda r: r[monitor])  # the first of equals, as training keeps it


def read_status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {"status": "unknown"}


# ------------------------------------------------------------------------------ metrics
class MetricsLog:
    """Appends one row per epoch to ``metrics.jsonl`` and rewrites ``metrics.csv`` atomically."""

    def __init__(self, run_dir: Path, rows: list[dict] = ()):
        self.run_dir = run_dir
        self.rows: list[dict] = list(rows)
        if self.rows:  # resuming: the log holds exactly the checkpoint's epochs
            self._write()

    def append(self, row: dict) -> None:
        self.rows.append(row)
        self._write()

    def _write(self) -> None:
        atomic_write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.rows))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in METRIC_FIELDS})
        atomic_write_text(self.run_dir / "metrics.csv", buf.getvalue())


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class DynamicsLog:
    """Appends one JSON line per recorded step to ``dynamics.jsonl`` (``cnncli.nn.dynamics``).

    Records can come every few steps, so a row is appended (and fsynced), not the file
    rewritten. Resuming from the checkpoint at step ``since_step`` first drops the rows
    recorded after it, which the resumed run records again, identically.
    """

    def __init__(self, run_dir: Path, since_step: int | None = None):
        self.path = run_dir / "dynamics.jsonl"
        if since_step is not None and self.path.is_file():
            kept = [r for r in read_dynamics(run_dir) if r.get("step", 0) <= since_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def append(self, row: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=_json_default) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def read_dynamics(run_dir: Path) -> list[dict]:
    """The rows of ``dynamics.jsonl`` (a line cut short by a kill is left out)."""
    path = run_dir / "dynamics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- checkpoints
def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{arr.dtype.str}:{arr.shape}\n".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, network, optimizer, meta: dict) -> None:
    arrays = {f"param/{k}": v for k, v in network.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    full_meta = {"format_version": CHECKPOINT_FORMAT, **meta, "checksum": _checksum(arrays)}
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(full_meta)), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """(network state, optimizer state, meta); refuses damaged or foreign files."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as err:  # zip, npy header and pickle refusals all land here
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: not a cnncli checkpoint (no meta)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except ValueError:
        raise CheckpointError(f"{path}: its meta data is not valid JSON") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its meta data is not a JSON object")
    if meta.get("format_version") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')!r}; this cnncli reads "
                              f"format {CHECKPOINT_FORMAT}")
    if meta.get("checksum") != _checksum(arrays):
        raise CheckpointError(f"{path}: checksum mismatch; the file is corrupt")
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    optim = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    return params, optim, meta


def environment() -> dict:
    """Versions and platform for env.json."""
    import platform
    import sys

    import cnncli

    info = {"python": sys.version.split()[0], "numpy": np.__version__, "cnncli": cnncli.__version__,
            "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        info["blas"] = {k: blas.get(k) for k in ("name", "version") if k in blas}
    except Exception:  # older numpy: no dict mode
        info["blas"] = None
    from cnncli.nn import parallel

    info["engine_threads"] = parallel.threads()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "CNNCLI_THREADS"):
        if var in os.environ:
            info.setdefault("env", {})[var] = os.environ[var]
    return info
