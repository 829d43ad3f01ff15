"""Whole training runs of the paper's settings: cnncli against an equivalent plain PyTorch script.

cnncli side: ``cnncli.train("configs/paper.yaml", overrides=["train.epochs=E"])`` (the Python
API behind ``cnncli train``; quiet), i.e. Figure 2 on Caltech-101 motorbikes vs airplanes at
28x28x3, batch 32, SGD lr 1e-4, binary cross-entropy summed over the batch, 20% validation,
evaluation after every epoch. PyTorch side (``--side torch``): the same network (NCHW, torch's
default initialization), the same decoded and normalized arrays, ``DataLoader(TensorDataset(...),
batch_size=32, shuffle=True)``, ``torch.optim.SGD``, ``BCEWithLogitsLoss(reduction="sum")``,
evaluation on the validation split after every epoch (``torch.no_grad()``, batch 256).

Each run is its own process; the sides alternate (cnncli, torch, cnncli, torch, ...) for
``--rounds`` rounds. Reported: training images per second over epochs 2..E (the first epoch
is a warm-up on both sides), where an epoch's time is its training loop plus its evaluation.
See ``python benchmarks/train_run.py --help`` and the "Whole training runs" section of
benchmarks/README.md for what exactly each side times.

    python benchmarks/train_run.py                 # 3 rounds x 4 epochs + cnncli profile (~2 min)
    python benchmarks/train_run.py --epochs 6 --rounds 5
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = os.path.join(REPO, "configs", "paper.yaml")
CALTECH = os.path.normpath(os.path.join(REPO, "..", "shared", "datasets", "caltech101-motorbikes-airplanes"))
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
RESULT = "RESULT "  # a worker's one line of JSON on stdout starts with this


# --------------------------------------------------------------------------- shared helpers
class CpuLoad:
    """Foreign CPU load over a window: the machine's busy time (/proc/stat, all CPUs, plus
    hypervisor steal) minus this process's own CPU time (getrusage, all its threads), as a
    fraction of wall time x CPUs. Only the measured worker should run meanwhile."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.ncpu = os.cpu_count() or 1
        self.start = None

    def _read(self):
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        own = usage.ru_utime + usage.ru_stime
        if not os.path.exists("/proc/stat"):
            return time.perf_counter(), own, own
        with open("/proc/stat") as fh:
            v = [int(t) for t in fh.readline().split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = v
        return time.perf_counter(), own, (user + nice + system + irq + softirq + steal) / self.hz

    def begin(self):
        self.start = self._read()

    def end(self) -> float | None:
        if self.start is None:
            return None
        (t0, own0, busy0), (t1, own1, busy1) = self.start, self._read()
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / max((t1 - t0) * self.ncpu, 1e-9)


def emit(obj: dict) -> None:
    print(RESULT + json.dumps(obj), flush=True)


def thread_setup(threads: int) -> dict:
    """BLAS / OpenMP limits in a worker (the environment was set before NumPy was imported)."""
    info = {}
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(threads)
        info["pools"] = [{k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                         for p in threadpool_info()]
    except ImportError:
        info["pools"] = []
    return info


def paper_config(args):
    """(config, overrides) for cnncli: configs/paper.yaml as is (Caltech), or with its data
    section replaced by the synthetic stand-in npz."""
    overrides = [f"train.epochs={args.epochs}"]
    if args.data_kind == "caltech101":
        return PAPER, overrides
    from cnncli import yamlfiles

    values = yamlfiles.read(PAPER)
    values["data"] = {"source": "npz", "path": args.synthetic_npz, "normalize": "scale"}
    return values, overrides


# --------------------------------------------------------------------------- workers
def prepare_worker(args) -> None:
    """Decode the data once (filling the runs folder's cache) and dump the normalized
    train / validation arrays that both sides then train on."""
    import numpy as np

    from cnncli.experiment import prepare

    config, overrides = paper_config(args)
    config, built, data = prepare(config, overrides, runs_dir=args.runs_dir)
    np.savez(args.arrays, x_train=data.train.x, y_train=data.train.y,
             x_val=data.validation.x, y_val=data.validation.y)
    emit({"train": len(data.train), "validation": len(data.validation), "dtype": str(data.train.x.dtype),
          "shape": list(data.train.x.shape[1:]), "classes": data.class_names,
          "normalization": data.normalization, "parameters": built.network.parameter_count()})


class _Clock:
    """Timing-only callback (no output): wall time of each epoch from ``on_epoch_start`` to
    the end of ``on_epoch_end`` (it runs after cnncli's RunWriter, so that span includes the
    metrics row, checkpoints and status file), and the evaluation time of the epoch, read
    from the wrapper around ``cnncli.training.evaluate``."""

    def __init__(self, eval_times: list, epochs: int, timed_from: int = 2):
        self.eval_times, self.epochs, self.timed_from = eval_times, epochs, timed_from
        self.epoch_wall, self.epoch_eval = [], []
        self.load = CpuLoad()
        self.foreign = None
        self._t0 = None

    def on_train_start(self, epochs, steps_per_epoch, state):
        pass

    def on_epoch_start(self, epoch):
        if epoch == self.timed_from:
            self.load.begin()
        self.eval_times.clear()
        self._t0 = time.perf_counter()

    def on_batch_end(self, *a):
        pass

    def on_step_end(self, state):
        pass

    def on_dynamics(self, record):
        pass

    def on_epoch_end(self, metrics, improved, state):
        self.epoch_wall.append(time.perf_counter() - self._t0)
        self.epoch_eval.append(sum(self.eval_times))
        if metrics.epoch == self.epochs:
            self.foreign = self.load.end()

    def on_interrupt(self, state):
        pass

    def on_train_end(self, result):
        pass


def cnncli_worker(args, profile: bool = False) -> None:
    """One ``cnncli.train`` run. Timed parts: fit's own per-epoch ``seconds`` (metrics.jsonl:
    the batch loop only) plus the epoch's ``evaluate`` call (timed by a wrapper)."""
    import numpy as np

    info = thread_setup(args.threads)
    import cnncli
    from cnncli import runs, training
    from cnncli.nn import parallel

    eval_times: list[float] = []
    original_evaluate = training.evaluate

    def timed_evaluate(*a, **k):
        t0 = time.perf_counter()
        try:
            return original_evaluate(*a, **k)
        finally:
            eval_times.append(time.perf_counter() - t0)

    # fit looks ``evaluate`` up at call time; the run's final report calls it after the last epoch's
    # on_epoch_end, so the clock (which sums the calls between an epoch's start and end) never counts it
    training.evaluate = timed_evaluate
    clock = _Clock(eval_times, args.epochs)
    arrays = np.load(args.arrays)
    checks = {}
    parts = {"forward+backward": [], "update": [], "dynamics": []}
    acc = {k: 0.0 for k in parts}

    def on_ready(run_dir, config, network, dataset):
        # the run trains on exactly the arrays the torch side reads
        checks["same_arrays"] = bool(
            np.array_equal(dataset.train.x, arrays["x_train"]) and np.array_equal(dataset.train.y, arrays["y_train"])
            and np.array_equal(dataset.validation.x, arrays["x_val"])
            and np.array_equal(dataset.validation.y, arrays["y_val"]))
        if profile:
            def wrap(name, fn):
                def timed(*a, **k):
                    t0 = time.perf_counter()
                    try:
                        return fn(*a, **k)
                    finally:
                        acc[name] += time.perf_counter() - t0
                return timed
            network.loss_and_gradients = wrap("forward+backward", network.loss_and_gradients)
            training._apply_update = wrap("update", training._apply_update)
            training.record_dynamics = wrap("dynamics", training.record_dynamics)

    class _Parts(_Clock):  # the profile's per-epoch split, on top of the clock
        def on_epoch_start(self, epoch):
            for k in acc:
                acc[k] = 0.0
            super().on_epoch_start(epoch)

        def on_epoch_end(self, metrics, improved, state):
            super().on_epoch_end(metrics, improved, state)
            for k in acc:
                parts[k].append(acc[k])

    if profile:
        clock = _Parts(eval_times, args.epochs)
    config, overrides = paper_config(args)
    run = cnncli.train(config, overrides=overrides, runs_dir=args.runs_dir, callbacks=(clock,), on_ready=on_ready)
    rows = runs.read_metrics(run.path)
    emit({**info, "engine_threads": parallel.threads(), "status": run.status, **checks,
          "train_images": len(arrays["y_train"]), "val_images": len(arrays["y_val"]),
          "fit_seconds": [r["seconds"] for r in rows], "eval_seconds": clock.epoch_eval,
          "epoch_wall": clock.epoch_wall, "foreign_load": clock.foreign,
          "loss": [r["loss"] for r in rows], "val_loss": [r["val_loss"] for r in rows],
          "val_accuracy": [r["val_accuracy"] for r in rows], "parts": parts if profile else None})


def torch_worker(args) -> None:
    """The plain PyTorch script. Timed per epoch: from just before iterating the training
    DataLoader (its shuffle included) to the end of the validation pass."""
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with np.load(args.arrays) as a:  # NHWC float32 as cnncli decoded and scaled them -> NCHW
        x_train = torch.from_numpy(np.ascontiguousarray(a["x_train"].transpose(0, 3, 1, 2)))
        y_train = torch.from_numpy(a["y_train"].astype(np.float32)[:, None])
        x_val = torch.from_numpy(np.ascontiguousarray(a["x_val"].transpose(0, 3, 1, 2)))
        y_val = torch.from_numpy(a["y_val"].astype(np.float32)[:, None])
    model = nn.Sequential(
        nn.Conv2d(3, 64, 5), nn.Tanh(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 5), nn.Tanh(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 4 * 4, 500), nn.Tanh(), nn.Linear(500, 1))  # sigmoid is in the loss
    criterion = nn.BCEWithLogitsLoss(reduction="sum")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=32, shuffle=True)
    val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=256)
    load = CpuLoad()
    out = {"train_seconds": [], "eval_seconds": [], "loss": [], "val_loss": [], "val_accuracy": []}
    for epoch in range(1, args.epochs + 1):
        if epoch == 2:
            load.begin()
        t0 = time.perf_counter()
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for xb, yb in train_loader:
            optimizer.zero_grad()
            logits = model(xb)
            loss = criterion(logits, yb)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            correct += int(((logits > 0).float() == yb).sum())
            seen += len(yb)
        t1 = time.perf_counter()
        model.eval()
        val_sum, val_correct = 0.0, 0
        with torch.no_grad():
            for xb, yb in val_loader:
                logits = model(xb)
                val_sum += criterion(logits, yb).item()
                val_correct += int(((logits > 0).float() == yb).sum())
        t2 = time.perf_counter()
        out["train_seconds"].append(t1 - t0)
        out["eval_seconds"].append(t2 - t1)
        out["loss"].append(loss_sum / seen)
        out["val_loss"].append(val_sum / len(y_val))
        out["val_accuracy"].append(val_correct / len(y_val))
    emit({**out, "foreign_load": load.end(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
          "train_images": len(y_train), "val_images": len(y_val)})


# --------------------------------------------------------------------------- parent
def run_worker(side: str, args, env: dict, extra=()) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--side", side, "--epochs", str(args.epochs),
           "--threads", str(args.threads), "--arrays", args.arrays, "--runs-dir", args.runs_dir,
           "--data-kind", args.data_kind, *extra]
    if args.synthetic_npz:
        cmd += ["--synthetic-npz", args.synthetic_npz]
    time.sleep(args.gap)  # BLAS / OpenMP threads of the previous process stop spinning
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"train_run.py: the {side} worker failed (exit {proc.returncode})")
    res = json.loads(lines[-1][len(RESULT):])
    res["process_seconds"] = time.perf_counter() - t0
    return res


def summarize(side: str, res: dict) -> dict:
    """Images per second over epochs 2..E: training images x (E-1) / the summed epoch times."""
    if side == "cnncli":
        train_s, eval_s, wall = res["fit_seconds"], res["eval_seconds"], res["epoch_wall"]
    else:
        train_s, eval_s, wall = res["train_seconds"], res["eval_seconds"], None
    n = res["train_images"] * (len(train_s) - 1)
    t_train, t_eval = sum(train_s[1:]), sum(eval_s[1:])
    return {"ips": n / (t_train + t_eval), "ips_train": n / t_train,
            "ips_wall": n / sum(wall[1:]) if wall else None,
            "epoch_ms": 1e3 * (t_train + t_eval) / (len(train_s) - 1), "eval_ms": 1e3 * t_eval / (len(train_s) - 1)}


def make_synthetic(path: str) -> None:
    """1,598 images 28x28x3 (798 of class 0, 800 of class 1, uint8, scaled by cnncli like
    Caltech's), with a learnable difference between the classes."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], [798, 800])
    x = rng.normal(120, 40, size=(len(y), 28, 28, 3))
    x[y == 1, 8:20, :, 2] += 50  # class 1: a blue horizontal band
    x = np.clip(x, 0, 255).astype(np.uint8)
    order = rng.permutation(len(y))
    np.savez(path, x=x[order], y=y[order])


def git_describe() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=REPO, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "cnncli"], capture_output=True, text=True,
                               cwd=REPO, check=True).stdout.strip()
        return head + (" with uncommitted changes in cnncli/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt(v, spec=".0f") -> str:
    return "-" if v is None else format(v, spec)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4, help="epochs per run; epochs 2..E are timed (default 4)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of cnncli + torch (default 3)")
    p.add_argument("--threads", type=int, default=2,
                   help="BLAS / OpenMP threads in every worker and torch.set_num_threads (default 2); cnncli's "
                        "engine threads follow the BLAS count")
    p.add_argument("--gap", type=float, default=0.3, help="pause before each worker, seconds (default 0.3)")
    p.add_argument("--data", default=CALTECH, help="the Caltech motorbikes/airplanes folder registered with "
                   "`cnncli data add caltech101` (default ../shared/datasets/caltech101-motorbikes-airplanes)")
    p.add_argument("--synthetic", action="store_true",
                   help="use the synthetic stand-in even when the Caltech folder exists")
    p.add_argument("--no-torch", action="store_true", help="run the cnncli side only")
    p.add_argument("--no-profile", action="store_true", help="skip the profile run of cnncli's epoch")
    p.add_argument("--keep", metavar="DIR", help="work in DIR (kept) instead of a temporary folder")
    p.add_argument("--json", metavar="PATH", help="also write every worker's result to this JSON file")
    # workers (``--side torch`` is the plain PyTorch script on its own; it needs --arrays)
    p.add_argument("--side", choices=("prepare", "cnncli", "torch", "profile"),
                   help="run one worker only (the parent starts these): e.g. `--side torch --arrays A.npz` is the "
                        "plain PyTorch script on the arrays in A.npz (x_train, y_train, x_val, y_val; NHWC)")
    p.add_argument("--arrays", help="with --side: the npz of train / validation arrays")
    p.add_argument("--runs-dir", help=argparse.SUPPRESS)
    p.add_argument("--data-kind", default="caltech101", help=argparse.SUPPRESS)
    p.add_argument("--synthetic-npz", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.epochs < 2 or args.rounds < 1 or args.threads < 1:
        p.error("--epochs must be >= 2 (the first is not timed); --rounds and --threads >= 1")
    if args.side and (not args.arrays or (args.side != "torch" and not args.runs_dir)):
        p.error("--side needs --arrays (and, except for torch, --runs-dir)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    for var in THREAD_VARS:  # before any NumPy import, here and in the workers
        os.environ[var] = str(args.threads)
    sys.path.insert(0, REPO)
    if args.side:
        {"prepare": prepare_worker, "cnncli": cnncli_worker, "torch": torch_worker,
         "profile": lambda a: cnncli_worker(a, profile=True)}[args.side](args)
        return 0

    have_torch = importlib.util.find_spec("torch") is not None and not args.no_torch
    work = args.keep or tempfile.mkdtemp(prefix="cnncli-train-run-")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, CNNCLI_DATA_DIR=os.path.join(work, "datasets"), MPLBACKEND="Agg")
    env.pop("CNNCLI_THREADS", None)
    args.runs_dir = os.path.join(work, "runs")
    args.arrays = os.path.join(work, "arrays.npz")
    args.synthetic_npz = None
    started = time.time()
    try:
        if os.path.isdir(args.data) and not args.synthetic:
            args.data_kind = "caltech101"
            added = subprocess.run([sys.executable, "-m", "cnncli.cli", "data", "add", "caltech101", args.data],
                                   env=env, cwd=REPO, capture_output=True, text=True)
            if added.returncode != 0:
                raise SystemExit(f"train_run.py: cnncli data add caltech101 {args.data} failed:\n"
                                 f"{added.stdout}{added.stderr}")
            data_line = (f"Caltech-101 Motorbikes + airplanes from `{os.path.relpath(args.data, REPO)}` "
                         f"(registered with `cnncli data add caltech101` in a temporary CNNCLI_DATA_DIR)")
        else:
            args.data_kind = "synthetic"
            args.synthetic_npz = os.path.join(work, "synthetic.npz")
            make_synthetic(args.synthetic_npz)
            data_line = ("SYNTHETIC stand-in (" + ("--synthetic" if args.synthetic else f"{args.data} is missing")
                         + "): 1,598 random uint8 images 28x28x3 (798 / 800 per class), an npz, normalize: scale")
        prep = run_worker("prepare", args, env)
        results = {"cnncli": [], "torch": []}
        for r in range(args.rounds):
            for side in ("cnncli", "torch") if have_torch else ("cnncli",):
                res = run_worker(side, args, env)
                res["summary"] = summarize(side, res)
                results[side].append(res)
                print(f"[round {r + 1} {side}: {res['summary']['ips']:.0f} images/s, process "
                      f"{res['process_seconds']:.1f} s]", file=sys.stderr, flush=True)
        profile = None if args.no_profile else run_worker("profile", args, env)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    c0 = results["cnncli"][0]
    t0 = results["torch"][0] if have_torch else {}
    cmd = "python benchmarks/train_run.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    print(f"# cnncli whole-run benchmark, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print()
    print(f"- command: `{cmd}` ({time.time() - started:.0f} s)")
    print(f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs; {platform.platform()}; python "
          f"{platform.python_version()}")
    print(f"- cnncli engine: git {git_describe()}; threads: BLAS/OpenMP {args.threads}, cnncli engine "
          f"{c0.get('engine_threads')}" + (f", torch.set_num_threads {t0['torch_threads']} (torch {t0['torch']})"
                                           if have_torch else " (torch not measured)"))
    for pool in c0.get("pools") or []:
        print(f"- threadpoolctl (cnncli worker): {pool['internal_api']} {pool.get('version') or ''}, kernel "
              f"{pool.get('architecture') or '-'}, {pool['num_threads']} threads")
    print(f"- data: {data_line}; {prep['train']} training / {prep['validation']} validation images "
          f"{prep['shape']} {prep['dtype']}; classes {prep['classes']}")
    same = all(r.get("same_arrays") for r in results["cnncli"] + ([profile] if profile else []))
    print(f"- arrays: one worker ran `cnncli.experiment.prepare` on the config and saved the decoded, scaled "
          f"train / validation arrays to an npz; every cnncli run checked (on_ready) that its dataset equals "
          f"those arrays: {'yes' if same else 'NO - MISMATCH'}; the torch script reads the same npz (NHWC -> NCHW)")
    print(f"- runs: {args.rounds} round(s) x (cnncli, torch), each its own process, {args.epochs} epochs each, "
          f"epochs 2..{args.epochs} timed ({args.epochs - 1} x {prep['train']} training images per run)")
    print()
    print("| round | cnncli images/s | torch images/s | cnncli/torch | cnncli train-loop images/s | "
          "torch train-loop images/s | cnncli eval ms/epoch | torch eval ms/epoch | cnncli whole epoch images/s | "
          "foreign CPU load cnncli / torch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    ratios = []
    for i, c in enumerate(results["cnncli"]):
        cs = c["summary"]
        t = results["torch"][i] if have_torch else None
        ts = t["summary"] if t else {}
        ratio = cs["ips"] / ts["ips"] if t else None
        if ratio:
            ratios.append(ratio)
        loads = " / ".join(fmt(None if v is None else 100 * v, ".0f") + "%" for v in
                           (c.get("foreign_load"), t.get("foreign_load") if t else None))
        print(f"| {i + 1} | {cs['ips']:.0f} | {fmt(ts.get('ips'))} | {fmt(ratio, '.2f')} | {cs['ips_train']:.0f} | "
              f"{fmt(ts.get('ips_train'))} | {cs['eval_ms']:.0f} | {fmt(ts.get('eval_ms'))} | "
              f"{cs['ips_wall']:.0f} | {loads} |")
    med = lambda side, key: statistics.median(r["summary"][key] for r in results[side])  # noqa: E731
    if have_torch:
        print(f"| **median** | **{med('cnncli', 'ips'):.0f}** | **{med('torch', 'ips'):.0f}** | "
              f"**{statistics.median(ratios):.2f}** | {med('cnncli', 'ips_train'):.0f} | "
              f"{med('torch', 'ips_train'):.0f} | {med('cnncli', 'eval_ms'):.0f} | {med('torch', 'eval_ms'):.0f} | "
              f"{med('cnncli', 'ips_wall'):.0f} | |")
        print()
        print(f"Median of the per-round ratios cnncli/torch (images/s; above 1 = cnncli faster): "
              f"**{statistics.median(ratios):.2f}** (rounds: {', '.join(f'{r:.2f}' for r in ratios)}).")
    print()
    print("What is timed, per epoch, epochs 2..E: cnncli: `fit`'s own `seconds` (metrics.jsonl: from just after the "
          "epoch's shuffle to the end of its last batch, i.e. batch gathering, forward, backward, update, the "
          "epoch's dynamics record, running loss/accuracy) + the epoch's `cnncli.training.evaluate` call (timed "
          "by a wrapper; validation at batch 256). torch: from just before iterating the DataLoader (its shuffle "
          "included) to the end of the validation pass (`no_grad`, batch 256), the loop also summing "
          "`loss.item()` and the correct count. \"whole epoch\" (cnncli) also counts what `cnncli train` does "
          "after the evaluation: metrics.jsonl row, best.npz / last.npz checkpoints, status.json.")
    if have_torch:
        last = lambda res, k: res[k][-1]  # noqa: E731
        print()
        print("Sanity (round 1, after the last epoch; the initial weights differ): cnncli train loss "
              f"{last(c0, 'loss'):.4f}, val loss {last(c0, 'val_loss'):.4f}, val accuracy "
              f"{last(c0, 'val_accuracy'):.3f}; torch {last(t0, 'loss'):.4f}, {last(t0, 'val_loss'):.4f}, "
              f"{last(t0, 'val_accuracy'):.3f}.")
    if profile:
        ep = slice(1, None)
        n_ep = args.epochs - 1
        avg = lambda v: 1e3 * sum(v[ep]) / n_ep  # noqa: E731
        fb, upd, dyn = (avg(profile["parts"][k]) for k in ("forward+backward", "update", "dynamics"))
        loop, ev, wall = avg(profile["fit_seconds"]), avg(profile["eval_seconds"]), avg(profile["epoch_wall"])
        total = loop + ev
        print()
        print(f"## Profile of a cnncli epoch (a separate run, mean of epochs 2..{args.epochs}, ms per epoch)")
        print()
        print("Method: the same `cnncli.train` run with timing wrappers on `network.loss_and_gradients` "
              "(forward + loss + backward), `cnncli.training._apply_update` (optimizer step with its finiteness "
              "check), `cnncli.training.record_dynamics` and `cnncli.training.evaluate`; \"rest of the loop\" = "
              "fit's `seconds` minus the three, i.e. batch gathering (`x[idx]`), targets, the engine scope, "
              "loss/accuracy sums, the dynamics batch's extra gradient norms and weight copies, per-batch "
              "callbacks.")
        print()
        print("| part | ms / epoch | % of epoch (loop + evaluation) |")
        print("|---|---:|---:|")
        for name, v in (("training step: forward + backward", fb), ("training step: optimizer update", upd),
                        ("dynamics record (one batch per epoch)", dyn),
                        ("rest of the loop", loop - fb - upd - dyn), ("evaluation (validation, batch 256)", ev)):
            print(f"| {name} | {v:.1f} | {100 * v / total:.1f}% |")
        print(f"| **epoch (loop + evaluation)** | **{total:.1f}** | 100% |")
        print(f"| after it: metrics row, checkpoints, status (RunWriter) | {wall - total:.1f} | "
              f"+{100 * (wall - total) / total:.1f}% |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": {k: v for k, v in vars(args).items()}, "prepare": prep, "results": results,
                       "profile": profile}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
