#!/usr/bin/env python
"""Cost of data augmentation (cnncli.data.augment) next to one training step of Figure 2.

    python benchmarks/augment.py                 # batch 32 x 28x28x3 float32, 50 repetitions
    python benchmarks/augment.py --repeats 200 --dtype float64

Measured in one process, in this order, each block warmed up first (5 calls and at least
0.3 s) and separated by a pause of ``--gap`` seconds (BLAS threads spin for a while after a
training step and would steal the core of the next block):

* one training step of the paper's Figure 2 network (input 28x28x3, conv 5x5x64 tanh,
  max-pool 2, conv 5x5x128 tanh, max-pool 2, flatten, dense 500 tanh, dense 1 sigmoid;
  binary cross-entropy, reduction sum; SGD lr 1e-4): ``net.train_step(x, y, loss, opt)``
  with the engine's default threads;
* ``Augmenter(xb, rng)`` (draws and application) for (a) flip_horizontal + random_crop
  {padding: 4}, (b) every operation on, and each operation alone;
* the crop's gather done four ways (the module's strided view, 3-D fancy indexing, a
  ``take`` of flat indices, a Python loop over the images), to justify the module's choice.

Each block times ``--repeats`` consecutive calls; the table gives medians, and ratios are
ratios of medians. Imports the standard library, NumPy and cnncli only.
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

from cnncli.data.augment import Augmenter, _pad  # noqa: E402
from cnncli.nn import Network, make_loss, make_optimizer, threads  # noqa: E402

from train_step import ARCHITECTURE as FIGURE2, INPUT_SHAPE  # noqa: E402  (the same network as that benchmark)

CONFIG_A = {"flip_horizontal": True, "random_crop": {"padding": 4}}
CONFIG_B = {"flip_horizontal": True, "flip_vertical": True, "random_crop": {"padding": 4}, "translate": 3,
            "rotate": 15, "brightness": 0.2, "contrast": 0.3, "cutout": {"size": 8}}


def time_block(call, repeats: int, gap: float) -> list[float]:
    """Seconds of each of ``repeats`` consecutive calls, after a warm-up and a pause."""
    start = time.perf_counter()
    warm = 0
    while warm < 5 or time.perf_counter() - start < 0.3:
        call()
        warm += 1
    time.sleep(gap)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


# The crop's gather, the ways the module's choice was compared with (same result each).
def crop_strided(aug: Augmenter, x, corners):
    return aug.apply(x, {"random_crop": corners})


def crop_fancy(x, corners, p):
    n, h, w, _ = x.shape
    padded = _pad(x, p)
    rows = (corners[:, 0, None] + np.arange(h))[:, :, None]  # (N, H, 1)
    cols = (corners[:, 1, None] + np.arange(w))[:, None, :]  # (N, 1, W)
    return padded[np.arange(n)[:, None, None], rows, cols]  # (N, H, W, C)


def crop_take(x, corners, p):
    n, h, w, c = x.shape
    padded = _pad(x, p)
    hp, wp = h + 2 * p, w + 2 * p
    index = (np.arange(n)[:, None, None] * (hp * wp) + (corners[:, 0, None] + np.arange(h))[:, :, None] * wp
             + (corners[:, 1, None] + np.arange(w))[:, None, :])  # (N, H, W)
    return padded.reshape(-1, c).take(index, axis=0)


def crop_loop(x, corners, p):
    _, h, w, _ = x.shape
    padded = _pad(x, p)
    out = np.empty_like(x)
    for i, (top, left) in enumerate(corners):
        out[i] = padded[i, top:top + h, left:left + w]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--gap", type=float, default=0.3)
    args = parser.parse_args(argv)

    data_rng = np.random.default_rng(1234)
    x = data_rng.standard_normal((args.batch,) + INPUT_SHAPE).astype(args.dtype)  # (N, H, W, C)
    y = (data_rng.random((args.batch, 1)) < 0.5).astype(args.dtype)  # (N, 1)
    net = Network([dict(layer) for layer in FIGURE2]).build(INPUT_SHAPE, seed=0, dtype=args.dtype)
    loss = make_loss({"name": "binary_crossentropy", "reduction": "sum"})
    opt = make_optimizer({"name": "sgd", "lr": 1e-4})

    rows: list[tuple[str, float]] = []
    step = statistics.median(time_block(lambda: net.train_step(x, y, loss, opt), args.repeats, args.gap))
    rows.append(("training step (Figure 2)", step))

    def augment(spec):
        aug = Augmenter.from_config(spec, INPUT_SHAPE)
        rng = np.random.default_rng(0)
        return statistics.median(time_block(lambda: aug(x, rng), args.repeats, args.gap))

    rows.append(("(a) flip_horizontal + random_crop {padding: 4}", augment(CONFIG_A)))
    rows.append(("(b) every operation", augment(CONFIG_B)))
    for key, value in CONFIG_B.items():
        rows.append((f"&nbsp;&nbsp;{key} alone", augment({key: value})))

    crop = Augmenter.from_config({"random_crop": {"padding": 4}}, INPUT_SHAPE)
    corners = crop.draw(len(x), np.random.default_rng(0))["random_crop"]
    reference = crop_loop(x, corners, 4)
    variants = {"strided view (module)": lambda: crop_strided(crop, x, corners),
                "3-D fancy indexing": lambda: crop_fancy(x, corners, 4),
                "take of flat indices": lambda: crop_take(x, corners, 4),
                "loop over images": lambda: crop_loop(x, corners, 4)}
    gathers = []
    for name, call in variants.items():
        assert np.array_equal(call(), reference), name
        gathers.append((name, statistics.median(time_block(call, args.repeats, args.gap))))

    print(f"# Augmentation cost, batch {args.batch} x {'x'.join(map(str, INPUT_SHAPE))} {args.dtype}\n")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; Python "
          f"{platform.python_version()}, NumPy {np.__version__}; cnncli engine threads {threads()}; "
          f"medians of {args.repeats} calls after warm-up\n")
    print("| what | median ms | % of a training step |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e3:.3f} | {100 * seconds / step:.2f}% |")
    a = rows[1][1]
    print(f"\n(a) costs {100 * a / step:.2f}% of a training step "
          f"({'within' if a < 0.1 * step else 'ABOVE'} the 10% target); (b) {100 * rows[2][1] / step:.2f}%.\n")
    print("Crop gather (random_crop {padding: 4} alone, without the draws):\n")
    print("| gather | median ms |")
    print("|---|---:|")
    for name, seconds in gathers:
        print(f"| {name} | {seconds * 1e3:.3f} |")


if __name__ == "__main__":
    main()
