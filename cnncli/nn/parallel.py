"""The engine's own threads: large operations split by rows across the cores.

NumPy runs elementwise work (im2col copies, the input-gradient scatter, pooling,
activations, optimizer updates) on one core, while BLAS spreads only the matrix products
over all of them. On a 2-core machine that left one core idle for a third of a training
step. The engine therefore splits each large operation, products included, into one
chunk of rows per thread and runs the chunks at once: NumPy releases the GIL inside its
loops and BLAS calls, so the chunks really run in parallel. (What is split: the conv's
im2col, products and scatter, dense products, max pooling with the activation after it
in a fused step, and optimizer updates; an activation applied by its own layer, or
average pooling, runs on the calling thread.) Once a network call splits
an operation, BLAS is kept to one thread until the call ends (``engine()``), so that
BLAS's threads and the engine's never compete for the same cores; so is a call in which
nothing is large enough to split (see ``engine()``: BLAS's threads cost more than they
give on such small products, and wait on each other when another program is busy).

When the engine uses every CPU the process may run on, each thread is pinned to its own
CPU while a network call that splits work runs. Unpinned, Linux tends to wake the pool's
thread on the CPU of the thread that woke it after an idle spell, and the two then share
one core for many milliseconds: inference at batch 32 measured 15 ms instead of 8.5 ms
after a 0.3 s pause. (BLAS and OpenMP threads avoid this by spinning while they wait,
which a Python thread cannot do without holding the GIL.)

How many threads: :func:`set_threads`, else the ``CNNCLI_THREADS`` environment variable,
else as many as BLAS would use (``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` apply),
at most the CPUs this process may run on. With one thread every operation runs unsplit
and BLAS keeps its own threads; so does the default where threadpoolctl finds no BLAS
library it can set to one thread.

Results are reproducible for a given thread count; different thread counts may differ in
the last bits, because products are blocked differently.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

from cnncli.nn.errors import ConfigError

#: A chunk with less work than this (see :func:`work`: about 0.2 ms on one core) is not
#: worth a thread hand-off, which costs 60-150 microseconds on a 2-core VM (waking the
#: pool's thread). Tests set it to 0 to exercise the split paths on tiny arrays.
MIN_CHUNK_WORK = 1 << 19

#: BLAS does about this many multiply-adds in the time an elementwise pass moves one element.
MACS_PER_ELEMENT = 16

_lock = threading.Lock()
_local = threading.local()
_requested: int | None = None   # set_threads(); None: the default
_threads: int | None = None     # resolved thread count
_executor: ThreadPoolExecutor | None = None
_blas: list | None = None       # threadpoolctl controllers of the BLAS libraries
_active = 0                     # threads inside an engine() scope
_saved_blas: list[int] | None = None  # BLAS thread counts while BLAS is held at one thread
_worker_numbers = None          # itertools.count() handing each pool thread its CPU
_cpus: list[int] | None = None  # the process's CPUs when first asked


def _process_cpus() -> list[int]:
    """The CPUs this process may run on, read once: before any thread is pinned (a
    thread started by a pinned thread inherits its single CPU). Empty where unknown."""
    global _cpus
    if _cpus is None:
        _cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return _cpus


def _available_cpus() -> int:
    return len(_process_cpus()) or os.cpu_count() or 1


def _pinned_cpus() -> list[int] | None:
    """The CPUs to pin the engine's threads to (calling thread first), or None not to pin:
    only when the engine uses every CPU of the process, so two processes with fewer
    threads each are never pinned onto the same CPUs."""
    cpus = _process_cpus()
    if hasattr(os, "sched_setaffinity") and len(cpus) > 1 and len(cpus) == threads():
        return cpus
    return None


def _pin_worker() -> None:
    cpus = _pinned_cpus()
    if cpus is not None:
        number = next(_worker_numbers)
        os.sched_setaffinity(0, {cpus[number % len(cpus)]})  # 0: this thread only


def _blas_controllers() -> list:
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        except Exception:  # no threadpoolctl, or a library it cannot read: leave BLAS alone
            _blas = []
    return _blas


def threads_from_environment() -> int | None:
    """``CNNCLI_THREADS`` as a positive int, None when unset; ConfigError when malformed."""
    env = os.environ.get("CNNCLI_THREADS", "").strip()
    if not env:
        return None
    if not env.isdigit() or int(env) < 1:
        raise ConfigError("CNNCLI_THREADS", "a positive integer", env, source="environment")
    return int(env)


def _default_threads() -> int:
    env = threads_from_environment()
    if env is not None:
        return env
    blas = _blas_controllers()
    if not blas:  # BLAS could not be kept single-threaded: do not add threads to its own
        return 1
    return max(1, min(max(lib.num_threads for lib in blas), _available_cpus()))


def threads() -> int:
    """The number of threads the engine splits large operations over."""
    global _threads
    if _threads is None:
        _threads = _requested if _requested is not None else _default_threads()
    return _threads


def set_threads(count: int | None) -> None:
    """Use ``count`` threads from now on (1: no splitting; None: back to the default)."""
    global _requested, _threads, _executor
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"threads: expected a positive integer or None, got {count!r}")
    with _lock:
        if _active:
            raise RuntimeError("set_threads() cannot be called while a network call is running")
        _requested, _threads = count, None
        if _executor is not None:
            _executor.shutdown(wait=True)
            _executor = None


@contextlib.contextmanager
def engine() -> Iterator[None]:
    """A scope (re-entrant) in which BLAS is single-threaded.

    BLAS is set to one thread when the first thread enters a scope and given its own
    thread count back when the last one leaves: operations large enough are split over
    the engine's threads, and the rest are too small for BLAS's threads to pay (the quick
    start's step took 6.4 ms with BLAS's 2 threads and 2.4 ms with one; with another
    program busy on one of 2 cores, 164 ms against 2.5, because BLAS's threads wait for
    each other on the busy core). The first split operation also pins the calling thread
    to the first CPU when the pool's threads are pinned (see the module docstring),
    unless another thread is inside a scope too; its affinity comes back when it leaves.
    """
    global _active, _saved_blas
    if threads() == 1 or getattr(_local, "worker", False):
        yield
        return
    depth = getattr(_local, "depth", 0)
    if depth == 0:
        with _lock:
            _active += 1
            if _saved_blas is None:  # the first thread in: BLAS to one thread until the last one leaves
                _saved_blas = [lib.num_threads for lib in _blas_controllers()]
                for lib in _blas:
                    lib.set_num_threads(1)
    _local.depth = depth + 1
    try:
        yield
    finally:
        _local.depth = depth
        if depth == 0:
            saved_affinity = getattr(_local, "saved_affinity", None)
            if saved_affinity is not None:
                _local.saved_affinity = None
                os.sched_setaffinity(0, saved_affinity)
            with _lock:
                _active -= 1
                if _active == 0 and _saved_blas is not None:
                    for lib, count in zip(_blas, _saved_blas):
                        lib.set_num_threads(count)
                    _saved_blas = None


def _pin_caller() -> None:
    """Inside engine(), before a split: pin the calling thread where that applies."""
    with _lock:
        alone = _active == 1
    cpus = _pinned_cpus()
    # Only a thread alone in the engine is pinned: two callers at once (threads of a Dask
    # worker) must not both be put on the first CPU.
    if cpus is not None and alone and getattr(_local, "saved_affinity", None) is None:
        _local.saved_affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpus[0]})


def work(elements: int = 0, macs: int = 0) -> int:
    """Work in the units of ``MIN_CHUNK_WORK``: elements read or written by elementwise
    passes, plus multiply-adds of matrix products at ``MACS_PER_ELEMENT`` to one."""
    return elements + macs // MACS_PER_ELEMENT


def chunks(total: int, work_per_item: int = 1, align: int = 1) -> list[tuple[int, int]]:
    """Split ``range(total)`` into at most ``threads()`` contiguous (start, stop) ranges.

    Fewer ranges when each would hold less than ``MIN_CHUNK_WORK`` elements of work
    (``work_per_item`` per item); boundaries fall on multiples of ``align``.
    """
    parts = threads()
    if work_per_item > 0 and MIN_CHUNK_WORK > 0:
        parts = min(parts, max(1, total * work_per_item // MIN_CHUNK_WORK))
    parts = max(1, min(parts, total // max(align, 1)))
    if parts == 1:
        return [(0, total)]
    bounds = [round(total * i / parts / align) * align for i in range(parts)] + [total]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def _run_as_worker(fn: Callable[[int, int], object], start: int, stop: int) -> object:
    _local.worker = True
    try:
        return fn(start, stop)
    finally:
        _local.worker = False


def run(fn: Callable[[int, int], object], ranges: list[tuple[int, int]]) -> list:
    """Call ``fn(start, stop)`` for every range, at once; return the results in order.

    The calling thread takes the first range. Every range finishes before this returns,
    even when one raises; then the first exception is raised. A chunk must not call
    :func:`run` itself (it would run its own ranges inline, which is correct but serial).
    """
    if len(ranges) == 1 or threads() == 1 or getattr(_local, "worker", False):
        return [fn(a, b) for a, b in ranges]
    global _executor
    with engine():
        _pin_caller()
        if _executor is None:
            with _lock:
                if _executor is None:
                    global _worker_numbers
                    _worker_numbers = itertools.count(1)
                    _executor = ThreadPoolExecutor(max_workers=threads() - 1, thread_name_prefix="cnncli",
                                                   initializer=_pin_worker)
        futures = [_executor.submit(_run_as_worker, fn, a, b) for a, b in ranges[1:]]
        first = error = None
        try:
            first = fn(*ranges[0])
        except BaseException as err:  # noqa: BLE001 - re-raised once the others finished
            error = err
        results = [first]
        for future in futures:
            try:
                results.append(future.result())
            except BaseException as err:  # noqa: BLE001
                error = error or err
        if error is not None:
            raise error
        return results


def _after_fork_in_child() -> None:
    # The pool's threads do not exist in a forked child: start a new pool when needed.
    global _executor, _active, _lock, _local
    _executor, _active, _lock, _local = None, 0, threading.Lock(), threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
