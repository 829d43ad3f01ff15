#!/usr/bin/env python
"""Sampled search against random search: TPE with the median pruner, and random search,
each with the same budget of trials, on the same space and data.

    python benchmarks/search.py                    # 24 trials, seeds 0 1 2, 1 job
    python benchmarks/search.py --trials 12 --seeds 0 --jobs 2

The space: ``optimizer.name`` in {sgd, momentum, adam, rmsprop} x ``optimizer.lr`` log-
uniform in [1e-4, 1] x ``train.batch_size`` in {16, 32, 64}, on the quick-start config
(synthetic shapes, 3 classes) with ``data.num_samples=600`` and 6 epochs, so that a trial
takes seconds. For each seed, both searches run as cnncli sweeps (``search: random`` with
``random.n_trials``; ``search: tpe`` with ``pruner: median``) and the table gives the best
validation accuracy any trial reached and the epochs trained over all trials (a pruned
trial counts the epochs it ran). Imports the standard library, PyYAML and cnncli.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's cnncli

from cnncli.search import run_any  # noqa: E402
from cnncli.sweep import Sweep, make_spec  # noqa: E402

SPACE = {"grid": {}, "random": {"optimizer.name": ["sgd", "momentum", "adam", "rmsprop"],
                                "optimizer.lr": {"low": 0.0001, "high": 1.0, "log": True},
                                "train.batch_size": [16, 32, 64]}}
OVERRIDES = ["data.num_samples=600", "train.epochs=6"]


def run(kind: str, trials: int, seed: int, jobs: int, folder: Path, warmup: int = 1) -> dict:
    spec = {"base": str(ROOT / "configs" / "quickstart.yaml"), "name": f"{kind}-{seed}", "seed": seed,
            "overrides": OVERRIDES, "metric": "val_accuracy", **SPACE}
    if kind == "random":
        spec["random"] = {**SPACE["random"], "n_trials": trials}
        spec["search"] = "random"
    else:
        spec.update(search="tpe", n_trials=trials, pruner={"name": "median", "n_startup_trials": 5,
                                                           "n_warmup_steps": warmup})
    path = folder / f"{kind}-{seed}.yaml"
    path.write_text(yaml.safe_dump(spec))
    start = time.perf_counter()
    sweep = run_any(Sweep.create(make_spec(str(path)), folder / "runs"), jobs=jobs)
    seconds = time.perf_counter() - start
    records = [r for r in sweep.records.values() if r.get("status") in ("completed", "pruned", "failed")]
    best = max((r["metrics"].get("best_val_accuracy") or 0.0) for r in records)
    epochs = sum(r["metrics"].get("epochs", 0) for r in records)
    pruned = sum(r["status"] == "pruned" for r in records)
    return {"kind": kind, "seed": seed, "best": best, "epochs": epochs, "pruned": pruned, "trials": len(records),
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1, help="the median pruner's n_warmup_steps (epochs it "
                                                                  "never prunes before)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnncli-search-") as tmp:
        for seed in args.seeds:
            for kind in ("random", "tpe"):  # interleaved: the machine's drift hits both
                rows.append(run(kind, args.trials, seed, args.jobs, Path(tmp), args.warmup))
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.trials} trials per search, seeds {args.seeds}, {args.jobs} job(s), median pruner "
          f"n_warmup_steps {args.warmup}, {os.cpu_count()} cores\n")
    print("| search | seed | best val_accuracy | epochs trained | pruned trials | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        name = "random" if r["kind"] == "random" else "tpe + median pruner"
        print(f"| {name} | {r['seed']} | {r['best']:.4f} | {r['epochs']} | {r['pruned']} | {r['seconds']:.0f} |")
    for kind in ("random", "tpe"):
        mine = [r for r in rows if r["kind"] == kind]
        print(f"| **{'random' if kind == 'random' else 'tpe + median pruner'}, mean** | | "
              f"{statistics.mean(r['best'] for r in mine):.4f} | {statistics.mean(r['epochs'] for r in mine):.0f} | "
              f"{statistics.mean(r['pruned'] for r in mine):.1f} | {statistics.mean(r['seconds'] for r in mine):.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
