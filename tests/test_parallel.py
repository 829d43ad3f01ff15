"""The engine's threads (cnncli.nn.parallel): chunking, hand-off, BLAS and CPU control,
and that every layer's split path runs and computes what the serial path computes.

The gradient checks of test_layers / test_network / test_optimizers run in both modes
(tests/engine_modes.py); these tests pin down the machinery itself.
"""

from __future__ import annotations

import multiprocessing
import os
import threading

import numpy as np
import pytest

from engine_modes import engine_threads
from networks import figure2
from cnncli.errors import ConfigError
from cnncli.nn import Network, make_loss, make_optimizer, parallel
from helpers import invoke, assert_user_error

FIGURE2 = figure2()


# ------------------------------------------------------------------------------ chunks
@pytest.mark.parametrize("count", [1, 2, 3, 5])
@pytest.mark.parametrize("total", [1, 2, 7, 64, 1001])
def test_chunks_cover_the_range_in_order(count, total):
    with engine_threads(count, 0):
        ranges = parallel.chunks(total)
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(a < b for a, b in ranges)
    assert all(prev[1] == nxt[0] for prev, nxt in zip(ranges, ranges[1:]))
    assert len(ranges) == min(count, total)


def test_chunks_respect_the_minimum_work_and_alignment():
    with engine_threads(2, 1000):
        assert parallel.chunks(100, work_per_item=20) == [(0, 50), (50, 100)]  # 1,000 each: 2 parts
        assert parallel.chunks(100, work_per_item=19) == [(0, 100)]  # two parts would hold 950 < 1,000
        assert parallel.chunks(100, work_per_item=5) == [(0, 100)]
        ranges = parallel.chunks(1601, work_per_item=4096, align=16)
        assert [a % 16 for a, _ in ranges] == [0, 0] and ranges[-1][1] == 1601
    with engine_threads(4, 0):
        assert parallel.chunks(40, align=16) == [(0, 16), (16, 40)]  # only two aligned parts fit


# ---------------------------------------------------------------------------------- run
def test_run_returns_results_in_order_and_uses_another_thread():
    seen = []

    def chunk(a, b):
        seen.append(threading.get_ident())
        return list(range(a, b))

    with engine_threads(3, 0):
        results = parallel.run(chunk, parallel.chunks(10))
    assert sum(results, []) == list(range(10))
    assert seen.count(threading.get_ident()) == 1  # the caller took one chunk, the pool the rest
    assert len(set(seen)) >= 2


def test_run_waits_for_every_chunk_before_raising():
    finished = []

    def chunk(a, b):
        if a == 0:
            raise ValueError("first chunk failed")
        finished.append(a)

    with engine_threads(3, 0):
        with pytest.raises(ValueError, match="first chunk failed"):
            parallel.run(chunk, parallel.chunks(3))
        assert sorted(finished) == [1, 2]
        # the pool still works afterwards
        assert parallel.run(lambda a, b: (a, b), parallel.chunks(4)) == [(0, 1), (1, 3), (3, 4)]


def test_a_chunk_that_runs_chunks_does_them_itself():
    """With one pool thread, a nested run() that waited on the pool would wait forever."""
    inner = []

    def outer(a, b):
        parallel.run(lambda c, d: inner.append((a, c, d)), [(0, 1), (1, 2)])

    with engine_threads(2, 0):
        parallel.run(outer, [(0, 1), (1, 2)])
    assert sorted(inner) == [(0, 0, 1), (0, 1, 2), (1, 0, 1), (1, 1, 2)]


# ---------------------------------------------------------------------- BLAS and CPUs
def _blas_threads():
    return [lib.num_threads for lib in parallel._blas_controllers()]


def _split():
    """One operation split in two, as a layer's would be."""
    parallel.run(lambda a, b: None, [(0, 1), (1, 2)])


@pytest.mark.skipif(not parallel._blas_controllers(), reason="threadpoolctl finds no BLAS library here")
def test_a_network_call_holds_blas_at_one_thread_until_the_call_ends():
    before = _blas_threads()
    with engine_threads(2):
        with parallel.engine():
            assert _blas_threads() == [1] * len(before)  # from the start, split or not
            _split()
            assert _blas_threads() == [1] * len(before)
            with parallel.engine():  # re-entrant
                _split()
            assert _blas_threads() == [1] * len(before)
        assert _blas_threads() == before
        _split()  # outside any scope: a scope of its own
        assert _blas_threads() == before
        with pytest.raises(RuntimeError):
            with parallel.engine():
                _split()
                raise RuntimeError("a failing layer")
        assert _blas_threads() == before
    with engine_threads(1):  # one thread: nothing is split, BLAS keeps its own threads
        with parallel.engine():
            parallel.run(lambda a, b: None, [(0, 1), (1, 2)])
            assert _blas_threads() == before


@pytest.mark.skipif(not parallel._blas_controllers(), reason="threadpoolctl finds no BLAS library here")
def test_a_small_network_runs_blas_on_one_thread_too():
    """Nothing of this network is large enough to split; its products still run with BLAS
    at one thread (BLAS's own threads cost more than they give on such products, and wait
    for each other when another program keeps a core busy), and BLAS gets its threads back
    after the call."""
    seen = []
    net = Network([{"type": "conv2d", "filters": 2, "kernel_size": 3}, {"type": "flatten"},
                   {"type": "dense", "units": 2}]).build((6, 6, 1), seed=0)
    original = net.layers[2].forward_linear

    def spy(x, training):
        seen.append(_blas_threads())
        return original(x, training)

    net.layers[2].forward_linear = spy
    before = _blas_threads()
    if all(count == 1 for count in before):
        pytest.skip("BLAS runs one thread here already: nothing to hold")
    with engine_threads(2):
        net.forward(np.zeros((4, 6, 6, 1), dtype=np.float32))
    assert seen == [[1] * len(before)]
    assert _blas_threads() == before
    with engine_threads(1):  # one engine thread: BLAS keeps its own threads (CNNCLI_THREADS=1)
        net.forward(np.zeros((4, 6, 6, 1), dtype=np.float32))
    assert seen[-1] == before


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two CPUs")
def test_threads_are_pinned_to_distinct_cpus_when_they_use_every_cpu():
    cpus = sorted(os.sched_getaffinity(0))
    with engine_threads(len(cpus), 0):
        with parallel.engine():
            unsplit = os.sched_getaffinity(0)
            theirs = parallel.run(lambda a, b: frozenset(os.sched_getaffinity(0)), parallel.chunks(len(cpus)))
            mine = os.sched_getaffinity(0)
        assert os.sched_getaffinity(0) == set(cpus)  # the caller's affinity is given back
    assert unsplit == set(cpus) and mine == {cpus[0]}
    assert sorted(min(s) for s in theirs) == cpus and all(len(s) == 1 for s in theirs)
    with engine_threads(len(cpus) + 1, 0):  # not one thread per CPU: nobody is pinned
        with parallel.engine():
            _split()
            assert os.sched_getaffinity(0) == set(cpus)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two CPUs")
def test_a_second_caller_at_the_same_time_is_not_pinned():
    cpus = set(os.sched_getaffinity(0))
    inside, leave = threading.Event(), threading.Event()
    seen = {}

    def first_caller():
        with parallel.engine():
            _split()
            seen["first"] = os.sched_getaffinity(0)
            inside.set()
            leave.wait(timeout=60)

    with engine_threads(len(cpus), 0):
        other = threading.Thread(target=first_caller)
        other.start()
        assert inside.wait(timeout=60)
        with parallel.engine():
            _split()
            seen["second"] = os.sched_getaffinity(0)
        leave.set()
        other.join(timeout=60)
    assert len(seen["first"]) == 1 and seen["second"] == cpus


def _forward_in_child(queue):
    net = Network(FIGURE2[:2] + [{"type": "flatten"}, {"type": "dense", "units": 3}]).build((12, 12, 3), seed=0)
    x = np.random.default_rng(0).standard_normal((8, 12, 12, 3)).astype(np.float32)
    queue.put(net.forward(x).tolist())


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork here")
def test_a_forked_child_gets_a_working_pool():
    with engine_threads(2, 0):
        net = Network(FIGURE2[:2] + [{"type": "flatten"}, {"type": "dense", "units": 3}]).build((12, 12, 3), seed=0)
        x = np.random.default_rng(0).standard_normal((8, 12, 12, 3)).astype(np.float32)
        expected = net.forward(x)  # the parent's pool exists now
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_forward_in_child, args=(queue,))
        child.start()
        result = queue.get(timeout=60)
        child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(np.array(result, dtype=np.float32), expected)


# ------------------------------------------------------------------------- settings
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_threads_refuses_non_positive_integers(bad):
    with pytest.raises(ValueError, match="threads"):
        parallel.set_threads(bad)


def test_cnncli_threads_environment_variable(monkeypatch):
    monkeypatch.setenv("CNNCLI_THREADS", "3")
    parallel.set_threads(None)
    try:
        assert parallel.threads() == 3
        monkeypatch.setenv("CNNCLI_THREADS", "many")
        parallel.set_threads(None)
        with pytest.raises(ConfigError, match="CNNCLI_THREADS: expected a positive integer; got 'many'"):
            parallel.threads()
    finally:
        monkeypatch.delenv("CNNCLI_THREADS")
        parallel.set_threads(None)


def test_cli_refuses_a_bad_cnncli_threads_in_one_line(monkeypatch):
    monkeypatch.setenv("CNNCLI_THREADS", "0")
    assert_user_error(invoke("summary", "configs/quickstart.yaml"), "CNNCLI_THREADS", "positive integer")


def test_set_threads_is_part_of_the_engine_api():
    import cnncli.nn

    with engine_threads(1):
        cnncli.nn.set_threads(2)
        assert cnncli.nn.threads() == parallel.threads() == 2


def test_default_follows_blas_and_the_cpus(monkeypatch):
    monkeypatch.delenv("CNNCLI_THREADS", raising=False)
    parallel.set_threads(None)
    blas = parallel._blas_controllers()
    expected = min(max(lib.num_threads for lib in blas), len(os.sched_getaffinity(0))) if blas else 1
    assert parallel.threads() == max(1, expected)


# ------------------------------------------- each split path runs and agrees with serial
class _Recorder:
    """Wraps parallel.run: which callers split their work into several chunks."""

    def __init__(self, monkeypatch):
        self.split = []
        real = parallel.run

        def run(fn, ranges):
            if len(ranges) > 1:
                self.split.append(fn.__qualname__.split(".<locals>")[0])
            return real(fn, ranges)

        monkeypatch.setattr(parallel, "run", run)


def _figure2_step(dtype, seed=0, steps=2, optimizer="adam", n=6):
    net = Network(FIGURE2).build((28, 28, 3), seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    for v in net.parameters().values():  # non-zero biases
        v += (0.05 * rng.standard_normal(v.shape)).astype(dtype)
    x = rng.standard_normal((n, 28, 28, 3)).astype(dtype)
    y = rng.integers(0, 2, (n, 1)).astype(dtype)
    loss, opt = make_loss("binary_crossentropy"), make_optimizer({"name": optimizer, "lr": 1e-2})
    values = [net.train_step(x, y, loss, opt)[0] for _ in range(steps)]
    _, _, dx = net.loss_and_gradients(x, y, loss, input_grad=True)
    return values, {**net.parameters(), "dx": dx}


def test_every_layer_of_figure2_and_the_optimizer_split_their_work(monkeypatch):
    recorder = _Recorder(monkeypatch)
    with engine_threads(2, 0):
        _figure2_step("float64", steps=1)
        net = Network(FIGURE2).build((28, 28, 3), seed=0)
        make_optimizer("sgd").gradient_norm(net.parameters())
    assert set(recorder.split) >= {
        "Conv2D._im2col", "Conv2D._tile_weight_gradient", "Conv2D._input_gradient",
        "ConvMaxPool.forward", "ConvMaxPool.backward", "Dense.forward_linear", "Dense.backward_linear",
        "Optimizer.step", "Optimizer.gradient_norm"}, recorder.split


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_split_training_matches_serial_training(count, optimizer):
    with engine_threads(1):
        serial_losses, serial = _figure2_step("float64", optimizer=optimizer)
    with engine_threads(count, 0):
        split_losses, split = _figure2_step("float64", optimizer=optimizer)
    np.testing.assert_allclose(split_losses, serial_losses, rtol=1e-12)
    for key in serial:
        np.testing.assert_allclose(split[key], serial[key], rtol=1e-10, atol=1e-13, err_msg=key)


def test_split_training_is_reproducible_bit_for_bit():
    with engine_threads(2, 0):
        first = _figure2_step("float32", steps=3)
        second = _figure2_step("float32", steps=3)
    assert first[0] == second[0]
    for key in first[1]:
        np.testing.assert_array_equal(first[1][key], second[1][key], err_msg=key)
