"""Peak memory and step time of a conv network as the image grows: cnncli against PyTorch.

The network is Figure 2's layers with a global average pool in place of the flatten, so
that the dense layers stay the same size whatever the image (issue 16, target 3):

    conv 5x5x64 tanh -> max-pool 2 -> conv 5x5x128 tanh -> max-pool 2 -> global average
    pool -> dense 500 tanh -> dense 1 sigmoid; binary cross-entropy (sum), SGD lr 1e-4

at batch 32, float32, on 28x28, 64x64, 128x128 and 224x224 inputs. Every measurement is
its own process (one framework, one size): it imports its framework, builds the network
and the batch, reads its resident memory (the *baseline*), runs 2 warm-up training steps
and ``--steps`` timed ones, and reports its peak resident memory (``ru_maxrss``) and the
median step. The *increase* is peak minus baseline: what training adds to a process that
already holds the framework, the weights and the data.

Sides:

* ``cnncli``: this checkout's engine with its default memory budget (im2col in tiles of at
  most 64 MiB, kept up to 256 MiB a layer; ``cnncli.nn.layers.conv``);
* ``cnncli-whole``: the same engine with an unlimited budget (every tile kept: the whole
  im2col, as before the tiles);
* ``cnncli-old``: with ``--old DIR``, the engine of another checkout (e.g. ``git worktree add
  /tmp/old ffbc012``, the engine before the tiles), unchanged;
* ``torch`` and ``torch-cl``: PyTorch NCHW and channels_last (when torch is installed).

The sides and sizes alternate for ``--rounds`` rounds; the tables give the median over
the rounds. Each cnncli worker also prints the memory estimate that ``cnncli train``
checks before a run (``cnncli.resources.estimate_memory``: parameters, gradients and SGD's
state plus the activations and each conv layer's im2col workspace, by the same figure the
layer allocates by).

    python benchmarks/conv_memory.py                       # 2 rounds, all sizes (~5 min)
    python benchmarks/conv_memory.py --sizes 28 128 --rounds 1 --old /tmp/old
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
RESULT = "RESULT "
BATCH = 32

LAYERS = [
    {"type": "conv2d", "filters": 64, "kernel_size": 5, "activation": "tanh"},
    {"type": "max_pool2d", "pool_size": 2},
    {"type": "conv2d", "filters": 128, "kernel_size": 5, "activation": "tanh"},
    {"type": "max_pool2d", "pool_size": 2},
    {"type": "global_avg_pool2d"},
    {"type": "dense", "units": 500, "activation": "tanh"},
    {"type": "dense", "units": 1, "activation": "sigmoid"},
]


def resident_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


# --------------------------------------------------------------------------- workers
def cnncli_worker(size: int, steps: int, budget: str, engine: str) -> dict:
    sys.path.insert(0, engine)
    import numpy as np

    from cnncli.nn import Network, make_loss, make_optimizer
    from cnncli.nn.layers import conv

    if budget == "unlimited":
        conv.set_memory_budget(2**62)
    net = Network(LAYERS).build((size, size, 3), seed=0, dtype=np.float32)
    loss = make_loss({"name": "binary_crossentropy", "reduction": "sum"})
    optimizer = make_optimizer({"name": "sgd", "lr": 1e-4})
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, size, size, 3), dtype=np.float32)
    y = rng.integers(0, 2, BATCH).astype(np.float32)
    estimate = None
    try:
        from cnncli.resources import estimate_memory

        shapes = Network(LAYERS).build((size, size, 3), dtype=np.float32, allocate=False)
        estimate = estimate_memory(shapes, BATCH, len(optimizer.slots) if hasattr(optimizer, "slots") else 0)
        estimate = {"total": estimate.total, "activations": estimate.activation_bytes}
    except ImportError:
        pass
    baseline = resident_bytes()
    times = []
    for i in range(2 + steps):
        start = time.perf_counter()
        net.train_step(x, y, loss, optimizer)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return {"baseline": baseline, "peak": peak_bytes(), "step_s": statistics.median(times), "estimate": estimate}


def torch_worker(size: int, steps: int, channels_last: bool, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 5), torch.nn.Tanh(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 128, 5), torch.nn.Tanh(), torch.nn.MaxPool2d(2),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(128, 500), torch.nn.Tanh(), torch.nn.Linear(500, 1))
    x = torch.rand(BATCH, 3, size, size)
    y = torch.randint(0, 2, (BATCH, 1)).float()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    baseline = resident_bytes()
    times = []
    for i in range(2 + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return {"baseline": baseline, "peak": peak_bytes(), "step_s": statistics.median(times), "estimate": None}


def run_worker(side: str, size: int, args) -> dict:
    env = dict(os.environ, **{var: str(args.threads) for var in THREAD_VARS})
    command = [sys.executable, os.path.abspath(__file__), "--worker", side, "--size", str(size),
               "--steps", str(args.steps), "--threads", str(args.threads)]
    if side == "cnncli-old":
        command += ["--old", args.old]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    raise RuntimeError(f"{side} at {size}px failed:\n{done.stderr[-2000:]}")


# --------------------------------------------------------------------------- report
def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 128, 224])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps per process (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--old", metavar="DIR", help="a checkout whose engine to measure as cnncli-old")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--json", metavar="PATH", help="write every measurement to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        if args.worker.startswith("cnncli"):
            engine = args.old if args.worker == "cnncli-old" else REPO
            result = cnncli_worker(args.size, args.steps, "unlimited" if args.worker == "cnncli-whole" else
                                   "default", engine)
        else:
            result = torch_worker(args.size, args.steps, args.worker == "torch-cl", args.threads)
        print(RESULT + json.dumps(result), flush=True)
        return

    sides = ["cnncli", "cnncli-whole"] + (["cnncli-old"] if args.old else [])
    if not args.no_torch and importlib.util.find_spec("torch") is not None:
        sides += ["torch", "torch-cl"]
    results: dict[tuple[str, int], list[dict]] = {}
    for round_ in range(args.rounds):
        for size in args.sizes:
            order = sides[round_ % len(sides):] + sides[:round_ % len(sides)]
            for side in order:
                res = run_worker(side, size, args)
                results.setdefault((side, size), []).append(res)
                print(f"# round {round_ + 1} {size}px {side}: +{mib(res['peak'] - res['baseline'])} MiB, "
                      f"{res['step_s'] * 1e3:.0f} ms", file=sys.stderr, flush=True)

    def med(side, size, key):
        rows = results.get((side, size))
        if not rows:
            return None
        if key == "increase":
            return statistics.median(r["peak"] - r["baseline"] for r in rows)
        return statistics.median(r[key] for r in rows)

    print(f"# conv memory benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, threads {args.threads}, batch {BATCH}, float32, "
          f"{args.rounds} rounds x {args.steps} timed steps; median over rounds")
    print()
    print("| input | side | baseline MiB | peak MiB | increase MiB | step ms | cnncli estimate MiB |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        for side in sides:
            if (side, size) not in results:
                continue
            est = results[(side, size)][0]["estimate"]
            print(f"| {size}x{size} | {side} | {mib(med(side, size, 'baseline'))} | {mib(med(side, size, 'peak'))} | "
                  f"{mib(med(side, size, 'increase'))} | {med(side, size, 'step_s') * 1e3:.0f} | "
                  f"{mib(est['total']) if est else '-'} |")
    if "torch" in sides:
        print()
        print("| input | cnncli increase / torch increase | cnncli step / torch step | cnncli step / cnncli-whole step |")
        print("|---:|---:|---:|---:|")
        for size in args.sizes:
            print(f"| {size}x{size} | {med('cnncli', size, 'increase') / med('torch', size, 'increase'):.2f} | "
                  f"{med('cnncli', size, 'step_s') / med('torch', size, 'step_s'):.2f} | "
                  f"{med('cnncli', size, 'step_s') / med('cnncli-whole', size, 'step_s'):.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{"side": s, "size": z, "runs": r} for (s, z), r in results.items()], fh, indent=1)


if __name__ == "__main__":
    main()
