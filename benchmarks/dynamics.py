#!/usr/bin/env python
"""Cost of recording training dynamics (``train.dynamics``) next to a training step of Figure 2.

    python benchmarks/dynamics.py                  # batch 32 x 28x28x3 float32, 5 rounds of 40 steps
    python benchmarks/dynamics.py --batch 128 --dtype float64 --rounds 7

Two blocks, interleaved round by round (A B A B ...), each warmed up first:

* A, a plain step, as ``cnncli.training.fit`` runs it: ``loss_and_gradients`` then the
  optimizer's update (SGD, binary cross-entropy from logits);
* B, a recorded step: the same with a ``Probe`` (each layer's delta and activation
  statistics), the gradient norms, a float64 copy of the weights before the update and
  the record built after it (``record_dynamics``), as fit does on a step that records.

The extra cost of one record is median(B) - median(A). The default (``train.dynamics:
true``) records one step per epoch, so its share of an epoch's steps is extra / (S x
median(A)) for S steps an epoch; the table gives it for the Caltech pair's 40 steps
(1,278 training images in batches of 32; 10 in batches of 128) and for ``every: "N steps"``
settings. Imports
the standard library, NumPy and cnncli only.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's cnncli

from cnncli.nn import Network, make_loss, make_optimizer, parallel, threads  # noqa: E402
from cnncli.nn.dynamics import Probe, norm  # noqa: E402
from cnncli.training import record_dynamics  # noqa: E402

from train_step import ARCHITECTURE as FIGURE2, INPUT_SHAPE  # noqa: E402  (the same network as that benchmark)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="steps per block and round")
    args = parser.parse_args()

    net = Network([dict(layer) for layer in FIGURE2]).build(INPUT_SHAPE, seed=0, dtype=args.dtype)
    loss = make_loss({"name": "binary_crossentropy", "reduction": "sum"})
    optimizer = make_optimizer({"name": "sgd", "lr": 1e-4})
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, *INPUT_SHAPE)).astype(args.dtype)
    y = rng.integers(0, 2, args.batch).astype(args.dtype)

    # Both inside one engine scope per step, as fit runs them: BLAS stays single-threaded,
    # so the norms' products do not wake BLAS threads that then spin into the next step.
    def plain():
        with parallel.engine():
            net.loss_and_gradients(x, y, loss)
            optimizer.step(net.parameters(), net.gradients(), check_finite=True)

    def recorded():
        with parallel.engine():
            probe = Probe()
            net.loss_and_gradients(x, y, loss, probe=probe)
            lr = optimizer.current_lr()
            grad_norms = {k: norm(g) for k, g in net.gradients().items()}
            before = {k: v.astype(np.float64) for k, v in net.parameters().items()}
            optimizer.step(net.parameters(), net.gradients(), check_finite=True)
            record_dynamics(net, probe, before, grad_norms, epoch=1, batch=1, step=optimizer.t, lr=lr,
                            examples=len(x))

    for call in (plain, recorded):  # warm-up: workspaces, caches
        for _ in range(5):
            call()
    times = {"plain": [], "recorded": []}
    for _ in range(args.rounds):
        for name, call in (("plain", plain), ("recorded", recorded)):
            time.sleep(0.2)  # let BLAS threads of the last block settle
            for _ in range(args.steps):
                t0 = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t0)
    step = statistics.median(times["plain"])
    record = statistics.median(times["recorded"])
    extra = record - step
    print(f"Figure 2, batch {args.batch}, {args.dtype}, {threads()} engine thread(s), {os.cpu_count()} cores, "
          f"{platform.machine()}; {args.rounds} rounds of {args.steps} steps per block")
    print("| step | median ms | ratio |\n|---|---:|---:|")
    print(f"| plain training step | {step * 1e3:.2f} | 1.00 |")
    print(f"| step that records its dynamics | {record * 1e3:.2f} | {record / step:.2f} |")
    print(f"| extra cost of one record | {extra * 1e3:.2f} | {extra / step:.2f} |")
    print()
    print("| setting | recorded steps | overhead on the steps |\n|---|---:|---:|")
    caltech_steps = -(-1278 // args.batch)  # the Caltech pair's training split, in batches
    for label, every in ((f"true (once an epoch of {caltech_steps} steps)", caltech_steps), ('every: "50 steps"', 50),
                         ('every: "10 steps"', 10), ('every: "1 steps"', 1)):
        print(f"| {label} | 1 in {every} | {extra / (every * step):.2%} |")


if __name__ == "__main__":
    main()
