"""What a run will need, checked before anything is allocated or written.

``estimate_memory`` works from shapes alone (a network built with ``allocate=False``):

* parameters, their gradients, the optimizer's slots (Adam 2, momentum 1, ...) and one
  spare copy for the best weights: ``(3 + slots) * P`` values;
* per example, what each layer keeps for the backward pass and creates during it, as the
  layer says (``Layer.values_per_example``: a conv layer's output twice, its padded input
  and its input-gradient scratch; by default a layer's input and output twice), times the
  batch size (training) or half the evaluation batch size, whichever is larger;
* plus each layer's scratch at that batch (``Layer.workspace_bytes``: a conv layer's
  im2col matrix, the whole batch's or one tile's, the same figure the layer allocates by,
  ``Conv2D.im2col_bytes``).

The figure is an estimate, deliberately on the high side; a run is refused when it
exceeds the memory available (``MemAvailable``, or a cgroup limit if lower).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cnncli.errors import ConfigError, RunFolderError


@dataclass
class MemoryEstimate:
    parameter_bytes: int
    activation_bytes: int
    batch_size: int

    @property
    def total(self) -> int:
        return self.parameter_bytes + self.activation_bytes


def _values_per_example(network) -> int:
    return math.prod(network.input_shape) + sum(layer.values_per_example() for layer in network.layers)


def estimate_memory(network, batch_size: int, optimizer_slots: int, eval_batch_size: int = 0) -> MemoryEstimate:
    itemsize = network.dtype.itemsize
    params = sum(math.prod(p.shape) for p in network.parameters().values())
    batch = max(batch_size, eval_batch_size // 2)  # evaluation keeps no backward workspace
    workspaces = sum(layer.workspace_bytes(batch, itemsize) for layer in network.layers)
    return MemoryEstimate((3 + optimizer_slots) * params * itemsize,
                          _values_per_example(network) * batch * itemsize + workspaces, batch)


def available_memory() -> int | None:
    """Bytes this process can still use: MemAvailable, capped by a cgroup v2/v1 limit."""
    available = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
            if text.isdigit():
                available = min(available, int(text))
        except OSError:
            continue
    return available


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def check_memory(network, batch_size: int, optimizer_slots: int, eval_batch_size: int = 0,
                 available: int | None = None) -> MemoryEstimate:
    """Refuse (ConfigError) a run whose estimate exceeds the available memory."""
    est = estimate_memory(network, batch_size, optimizer_slots, eval_batch_size)
    available = available_memory() if available is None else available
    if available is not None and est.total > available:
        raise ConfigError("model", "", None, raw=(
            f"this run needs about {gib(est.total)} of memory (parameters, gradients and optimizer state "
            f"{gib(est.parameter_bytes)}; activations {gib(est.activation_bytes)} at batch {batch_size}"
            f"{f' and evaluation batch {eval_batch_size}' if est.batch_size != batch_size else ''}), "
            f"but {gib(available)} is available; make the layers or train.batch_size smaller"))
    return est


def check_disk(runs_dir: str | Path, checkpoint_bytes: int) -> None:
    """Refuse to start when the runs folder cannot hold a few checkpoints, or is not writable."""
    path = Path(runs_dir)
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise RunFolderError(f"{path}: the runs folder is not writable")
    free = shutil.disk_usage(probe).free
    needed = 3 * checkpoint_bytes + 16 * 2**20  # best, last, the temporary copy, and the logs
    if free < needed:
        raise RunFolderError(f"{path}: {gib(free)} free on this disk; a run of this network needs about "
                          f"{gib(needed)} for its checkpoints")
