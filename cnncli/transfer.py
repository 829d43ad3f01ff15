"""Weights from another run: ``cnncli train CONFIG --init-from RUN_DIR[:best|last]`` (or a
checkpoint ``.npz``).

The new network's layers are matched to the source's **by position**: layer ``i`` takes
the source's layer ``i`` when both have the same type (known when the source is a run
folder, whose ``config.yaml`` names them; a bare checkpoint is matched by parameter
names and shapes alone) and every parameter and buffer has the same name and shape.
Anything else keeps its fresh initialization: typically a new output layer for another
number of classes. Nothing is loaded silently: :func:`load_matching` returns one row per
layer saying what happened, and a source that matches nothing is refused. The
optimizer starts fresh (its state belongs to the source's training, not this one's).

The checkpoint is read with ``runs.load_checkpoint``: plain arrays only
(``allow_pickle=False``) and every array checked against the checksum in its meta data.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnncli import runs
from cnncli.errors import CheckpointError, RunFolderError
from cnncli.yamlfiles import read as read_yaml


@dataclass
class Source:
    """Where the weights come from: the checkpoint file, its arrays, and the layer types
    (``None`` where unknown: a bare checkpoint)."""

    spec: str
    checkpoint: Path
    state: dict[str, np.ndarray]
    types: list[str] | None
    epoch: int | None


def parse_spec(spec: str) -> tuple[Path, str | None]:
    """``RUN_DIR``, ``RUN_DIR:best``, ``RUN_DIR:last`` or ``FILE.npz`` -> (path, checkpoint name)."""
    text = str(spec)
    for name in ("best", "last"):
        if text.endswith(f":{name}"):
            return Path(text[: -len(name) - 1]), name
    return Path(text), None


def open_source(spec: str, base_dir: Path | None = None) -> Source:
    """Read the checkpoint ``spec`` names (a run folder's best by default), checked."""
    path, which = parse_spec(spec)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if not path.exists() and glob.has_magic(str(path)):
        # runs/*-paper:best: the shell leaves the pattern alone (":best" matches no file name)
        matches = sorted(glob.glob(str(path)))
        if len(matches) > 1:
            raise RunFolderError(f"init_from: {path}: the pattern matches {len(matches)} paths "
                                 f"({', '.join(Path(m).name for m in matches[:3])}{', ...' if len(matches) > 3 else ''}); "
                                 "name one")
        path = Path(matches[0]) if matches else path
    if path.is_dir():
        if not runs.is_run_dir(path):
            raise RunFolderError(f"init_from: {path}: not a run folder (no config.yaml and status.json) nor a "
                                 "checkpoint .npz")
        checkpoint = runs.checkpoint_file(path, which or "best")
        types = [layer.get("type") for layer in (read_yaml(path / "config.yaml").get("model") or {}).get("layers", [])]
    elif path.is_file():
        if which is not None:
            raise RunFolderError(f"init_from: {spec}: ':{which}' names a run folder's checkpoint; give the .npz "
                                 "file alone")
        if path.suffix != ".npz":
            raise CheckpointError(f"init_from: {path}: expected a run folder or a checkpoint .npz file")
        checkpoint, types = path, None
    else:
        raise RunFolderError(f"init_from: {path}: no such run folder or checkpoint")
    state, _, meta = runs.load_checkpoint(checkpoint)
    return Source(str(spec), checkpoint, state, types, meta.get("epoch"))


def load_matching(network, source: Source) -> list[dict]:
    """Copy every layer of ``source`` that fits ``network``'s layer at the same position;
    one row per layer: ``layer``, ``label``, ``loaded`` (bool), ``why`` (what matched or
    what did not). Refuses (CheckpointError) when no layer with parameters matched."""
    rows = []
    for i, layer in enumerate(network.layers):
        arrays = {**layer.params, **layer.buffers}
        row = {"layer": i, "label": layer.label(), "loaded": False, "why": ""}
        rows.append(row)
        if not arrays:
            row["why"] = "no parameters"
            continue
        theirs = {key[len(f"layers.{i}."):]: value for key, value in source.state.items()
                  if key.startswith(f"layers.{i}.")}
        source_type = source.types[i] if source.types is not None and i < len(source.types) else None
        if not theirs:
            row["why"] = "the source has no such layer"
        elif source_type is not None and source_type != layer.type_name:
            row["why"] = f"the source's layers[{i}] is a {source_type}"
        elif set(theirs) != set(arrays):
            row["why"] = f"the source's arrays are {sorted(theirs)}, this layer's {sorted(arrays)}"
        else:
            wrong = [f"{k} {tuple(theirs[k].shape)} for {tuple(v.shape)}" for k, v in arrays.items()
                     if tuple(theirs[k].shape) != tuple(v.shape)]
            if wrong:
                row["why"] = "shapes differ: " + ", ".join(wrong)
            else:
                for key, target in arrays.items():
                    target[...] = theirs[key]
                row["loaded"] = True
                row["why"] = ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in arrays.items())
    if not any(row["loaded"] for row in rows):
        raise CheckpointError(f"init_from: {source.checkpoint}: no layer matches this network by position, type and "
                              "shape; nothing to start from")
    return rows
