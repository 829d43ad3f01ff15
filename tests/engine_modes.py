"""Run engine tests twice: serial, and with every operation split over the engine's threads.

The split mode uses 3 threads (uneven chunks on even sizes) and no minimum chunk size,
so that the threaded paths of every layer and optimizer run even on the tiny arrays of
gradient checks, and every check that passes serially must pass split too.
"""

import contextlib

import pytest

from cnncli.nn import parallel

MODES = {"serial": (1, None), "split": (3, 0)}


@contextlib.contextmanager
def engine_threads(count: int, min_chunk_work: int | None = None):
    """The engine with ``count`` threads (and a minimum chunk size) inside the block."""
    saved = parallel.MIN_CHUNK_WORK
    parallel.set_threads(count)
    if min_chunk_work is not None:
        parallel.MIN_CHUNK_WORK = min_chunk_work
    try:
        yield
    finally:
        parallel.MIN_CHUNK_WORK = saved
        parallel.set_threads(None)


def serial_and_split():
    """An autouse fixture, parametrized over MODES, for a test module to assign to a name."""

    @pytest.fixture(autouse=True, params=list(MODES))
    def engine_mode(request):
        with engine_threads(*MODES[request.param]):
            yield request.param

    return engine_mode
