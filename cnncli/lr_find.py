"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks", section 3.3), as fastai's ``lr_find`` and PyTorch Lightning's ``Tuner.lr_find``
run it.

Train a fresh network for at most ``steps`` mini-batches while the learning rate grows
exponentially from ``start`` to ``end``,

    lr_i = start * (end / start) ** (i / (steps - 1)),      i = 0 .. steps - 1,

one optimizer update per batch at ``lr_i``, and record each batch's loss (mean per
example, as :func:`cnncli.training.fit` reports it) and its smoothed value, an
exponential moving average with bias correction (``beta = 0.98``):

    avg_i = beta * avg_{i-1} + (1 - beta) * loss_i,      smoothed_i = avg_i / (1 - beta ** (i + 1)).

The test stops early when the smoothed loss exceeds 4 times the lowest smoothed loss so
far (the rate is far too high by then), or when a loss or gradient is not finite.

:func:`suggest` picks the rate where the loss falls fastest against ``log10(lr)``,
looking only past the first ``skip_begin`` points and before the loss's minimum (past it
the rate no longer trains). The curve it reads is not the moving average but a
*centered* moving average (:func:`centered`, about three quarters of a decade of rates
wide): the moving average is what a test can compute as it goes, so it decides when to
stop, but its value at a step averages the ~49 (``beta / (1 - beta)``) steps before it,
four decades of rate at 100 steps over eight; while the loss keeps falling its slope
keeps growing, so its steepest point lands at the end of the fall, next to the minimum,
where the rate is already too high. On the paper's network (SGD, sum) the moving average's steepest point
was 7.1e-3, which does not train (validation accuracy 0.50 after 5 epochs); the centered
curve's, 3.4e-3, reaches 0.975 in 5 epochs, against 0.94 after 20 at the paper's 1e-4.

Nothing of the test is kept but its record: the weights it trained are thrown away and
no checkpoint is written. Its folder ``<runs_dir>/<time>-<name>-lr-find/`` holds
``config.yaml``, ``lr_find.csv``, ``lr_find.json``, ``lr_find.png`` and ``status.json``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cnncli import plugins, runs, yamlfiles
from cnncli.config import Config
from cnncli.data import seeded_rng
from cnncli.errors import CnnCliError
from cnncli.experiment import AUGMENT_STREAM, SHUFFLE_STREAM, prepare
from cnncli.nn import parallel
from cnncli.nn.schedules import make_schedule
from cnncli.training import _apply_update, targets_for

#: Weight of the past in the moving average of the loss (fastai's and Lightning's).
SMOOTHING_BETA = 0.98
#: The test stops once the smoothed loss exceeds this multiple of its lowest value so far.
DIVERGENCE_FACTOR = 4.0
#: Points at the start of the curve that :func:`suggest` does not look at (Lightning's skip_begin).
SKIP_BEGIN = 10
#: The fewest points between ``skip_begin`` and the minimum from which a slope is worth reading.
MIN_POINTS_FOR_SLOPE = 3
#: Width of the centered average that :func:`suggest` reads, in decades of rate.
CENTERED_DECADES = 0.75
CSV_FIELDS = ("step", "lr", "loss", "smoothed_loss", "centered_loss")


@dataclass
class LRFindResult:
    """The record of one range test.

    ``lrs``, ``losses``, ``smoothed`` (the moving average) and ``centered`` (the curve
    the suggestion reads) have one entry per update made (a batch whose loss or
    gradient was not finite is not among them). ``suggestion`` is None when the
    curve gives none; ``rationale`` then says why. ``stopped`` says why the test ended.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float | None
    slope: float | None
    rationale: str
    stopped: str
    path: Path
    min_loss_lr: float | None = None
    suggestion_index: int | None = None
    settings: dict = field(default_factory=dict)
    centered: np.ndarray | None = None

    @property
    def steps_run(self) -> int:
        return len(self.lrs)


def learning_rates(start: float, end: float, steps: int) -> np.ndarray:
    """The ``steps`` rates of the test: ``start * (end / start) ** (i / (steps - 1))``."""
    return start * (end / start) ** (np.arange(steps) / (steps - 1))


def check_settings(start: float, end: float, steps: int) -> None:
    """Refuse a range that cannot make a test (a :class:`CnnCliError`), before any work."""
    if not (isinstance(start, (int, float)) and math.isfinite(start) and start > 0):
        raise CnnCliError(f"lr-find: --start must be a positive rate; got {start}")
    if not (isinstance(end, (int, float)) and math.isfinite(end) and end > start):
        raise CnnCliError(f"lr-find: --end must be a rate above --start ({start:g}); got {end}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 20:
        raise CnnCliError(f"lr-find: --steps must be at least 20 (a curve to read a slope from); got {steps}")


def smooth_step(avg: float, value: float, i: int, beta: float = SMOOTHING_BETA) -> tuple[float, float]:
    """One step of the moving average: (the new running sum ``avg``, the bias-corrected
    smoothed value after loss ``i`` (0-based))."""
    avg = beta * avg + (1 - beta) * value
    return avg, avg / (1 - beta ** (i + 1))


def smooth(losses, beta: float = SMOOTHING_BETA) -> np.ndarray:
    """The bias-corrected exponential moving average of ``losses`` (see the module docstring)."""
    out, avg = [], 0.0
    for i, value in enumerate(losses):
        avg, smoothed = smooth_step(avg, value, i, beta)
        out.append(smoothed)
    return np.asarray(out, dtype=np.float64)


def suggest(lrs, smoothed, skip_begin: int = SKIP_BEGIN, *, losses=None) -> tuple[int | None, float | None, str]:
    """The steepest descent of a smoothed range-test curve: (index, slope, reason).

    The slope is ``np.gradient(smoothed, log10(lrs))`` (loss per decade of rate), read
    only at indices ``skip_begin`` up to (not including) the smoothed loss's minimum.
    ``index`` is where it is most negative and ``reason`` the one-line rationale; when
    the curve is too short, or does not fall there, ``index`` and ``slope`` are None
    and ``reason`` says why.

    With the raw ``losses`` of the batches, a fall of the smoothed loss smaller than
    their noise from batch to batch gives no suggestion either: the steepest point of
    a flat curve is where the noise happened to dip, not a rate that trains. (A network
    that needs more updates to leave its starting loss than the test gives it at each
    rate draws such a curve; more ``steps`` give it more.)
    """
    lrs = np.asarray(lrs, dtype=np.float64)
    smoothed = np.asarray(smoothed, dtype=np.float64)
    n = len(smoothed)
    needed = skip_begin + MIN_POINTS_FOR_SLOPE + 1
    if n < needed:
        return None, None, (f"no suggestion: the test ran {n} step{'s' * (n != 1)}, too few to read a slope "
                            f"(at least {needed}: the first {skip_begin} are skipped while the average settles)")
    lowest = int(np.argmin(smoothed))
    if lowest - skip_begin < MIN_POINTS_FOR_SLOPE:
        return None, None, (f"no suggestion: the smoothed loss is lowest at step {lowest + 1} (lr {lrs[lowest]:.1e}), "
                            f"before it has fallen for long; the loss rose almost from the start, so try a "
                            f"lower --start")
    # The gradient over the whole curve, so that the window's first and last points get central differences.
    slopes = np.gradient(smoothed, np.log10(lrs))
    window = np.arange(skip_begin, lowest)
    steepest = int(window[np.argmin(slopes[window])])
    slope = float(slopes[steepest])
    if not slope < 0:
        return None, None, (f"no suggestion: the smoothed loss does not fall between step {skip_begin + 1} and its "
                            f"minimum at step {lowest + 1} (lr {lrs[lowest]:.1e})")
    if losses is not None:
        fall = float(np.max(smoothed[skip_begin:lowest + 1]) - smoothed[lowest])
        noise = batch_noise(np.asarray(losses, dtype=np.float64)[:lowest + 1])
        if fall < noise:
            return None, None, (f"no suggestion: the smoothed loss falls by only {fall:.3g} before its minimum at "
                                f"{lrs[lowest]:.1e}, less than the noise of the batch losses ({noise:.3g}); the "
                                f"network hardly learned during the test (give it more --steps, or a narrower "
                                f"range)")
    if lowest == n - 1:  # the loss never turned: the rates that are too high lie beyond the test
        after = (f"its minimum is at {lrs[lowest]:.1e}, the last rate of the test, where it was still falling "
                 f"(a higher --end shows where the rate becomes too high)")
    else:
        after = f"its minimum is at {lrs[lowest]:.1e}; past it the loss rises"
    return steepest, slope, (f"suggested lr {lrs[steepest]:.1e}: the smoothed loss falls fastest there "
                             f"({slope:.2f} per decade); {after}")


def batch_noise(losses: np.ndarray) -> float:
    """The spread of the batch losses about their trend: the standard deviation of
    consecutive differences over sqrt(2), which a falling or rising trend hardly moves."""
    if len(losses) < 3:
        return 0.0
    return float(np.std(np.diff(losses)) / math.sqrt(2))


def set_value(lr: float) -> str:
    """``lr`` to two significant digits in positional notation (``0.0032``, ``2.0``): a
    value ``--set optimizer.lr=...`` reads as a float whatever YAML's exponent rules."""
    return np.format_float_positional(float(f"{lr:.2g}"), trim="0")


# ------------------------------------------------------------------------------ the test
def _notices(values: dict, on_notice: Callable[[str], None] | None) -> None:
    """Say once each which of the config's training settings the test does not follow."""
    if on_notice is None:
        return
    schedule = values["optimizer"].get("schedule") or {"name": "constant"}
    if schedule.get("name") != "constant":
        on_notice(f"the {schedule['name']} learning-rate schedule of the config is ignored: the range test sets "
                  f"the rate of every step itself")
    if values["train"].get("early_stopping"):
        on_notice("train.early_stopping is ignored: the range test runs at most --steps batches and stops when "
                  "the loss diverges")
    if values["train"].get("on_nan") == "skip_batch":
        on_notice("train.on_nan: skip_batch is ignored: the range test stops at the first loss or gradient that "
                  "is not finite")


def _batches(n: int, batch_size: int, rng: np.random.Generator):
    """Endless (epoch, batch, indices) in shuffled epochs of full batches.

    Shuffled whatever ``train.shuffle`` says: in a split stored in order (one class after
    another) the curve would read the change of class as the rate's doing.

    A last partial batch is left out (fastai's ``drop_last``): a batch of a few examples
    has a noisy loss that the curve would read as the rate's doing. A training split
    smaller than one batch is one batch.
    """
    size = min(batch_size, n)
    per_epoch = n // size
    epoch = 0
    while True:
        epoch += 1
        order = rng.permutation(n)
        for b in range(per_epoch):
            yield epoch, b, order[b * size:(b + 1) * size]


def centered(losses, lrs, decades: float = CENTERED_DECADES) -> np.ndarray:
    """The centered moving average of ``losses``: each point the mean of the points
    within about ``decades / 2`` of it on either side (an odd window of at least 5
    points; the ends padded with their own value), so that the curve does not lag."""
    losses = np.asarray(losses, dtype=np.float64)
    if len(losses) < 3:
        return losses.copy()
    lrs = np.asarray(lrs, dtype=np.float64)
    per_decade = (len(lrs) - 1) / max(math.log10(lrs[-1] / lrs[0]), 1e-12)
    half = max(2, int(round(decades * per_decade / 2)))
    half = min(half, (len(losses) - 1) // 2)
    padded = np.pad(losses, (half, half), mode="edge")  # (n + 2 half,)
    return np.convolve(padded, np.full(2 * half + 1, 1.0 / (2 * half + 1)), mode="valid")  # (n,)


def run_test(network, loss, optimizer, train, *, lrs: np.ndarray, batch_size: int, shuffle_rng,
             augment=None, augment_seed: int = 0, class_weights: np.ndarray | None = None,
             on_step: Callable[[int, int, float, float, float], None] | None = None):
    """Train ``network`` one batch per rate of ``lrs``; returns (lrs, losses, smoothed, stopped).

    The optimizer's schedule is replaced by a constant one and its base rate set before
    each update, so ``lrs[i]`` is exactly the rate of update ``i``. ``on_step(step, steps,
    lr, loss, smoothed)`` hears of each update made.
    """
    optimizer.schedule = make_schedule(None)
    done_lrs, losses, smoothed = [], [], []
    avg, lowest = 0.0, math.inf
    stopped = f"ran all {len(lrs)} steps"
    batches = _batches(len(train), batch_size, shuffle_rng)
    for i, lr in enumerate(lrs):
        epoch, b, idx = next(batches)
        xb, yb = train.x[idx], train.y[idx]
        if augment is not None and augment.enabled:
            xb = augment(xb, np.random.default_rng([augment_seed, epoch, b]))
        optimizer.lr = float(lr)
        with parallel.engine():  # one scope for the whole step, as in fit
            weights = class_weights[yb] if class_weights is not None else None
            value, _ = network.loss_and_gradients(xb, targets_for(network, yb, loss), loss, sample_weight=weights)
            # The training loop's own rule (on_nan: stop): a non-finite loss or gradient is not applied.
            applied = _apply_update(network, optimizer, value, "stop")
        if not applied:
            what = f"the loss ({value})" if not math.isfinite(value) else "the gradient"
            stopped = f"{what} was not finite at step {i + 1} (lr {lr:.2e})"
            break
        per_example = value / len(idx) if loss.reduction == "sum" else value
        avg, current = smooth_step(avg, per_example, i)
        done_lrs.append(float(lr))
        losses.append(float(per_example))
        smoothed.append(float(current))
        if on_step is not None:
            on_step(i + 1, len(lrs), float(lr), float(per_example), float(current))
        lowest = min(lowest, current)
        if lowest > 0 and current > DIVERGENCE_FACTOR * lowest:  # a ratio means nothing for a loss below 0
            stopped = (f"diverged at step {i + 1} (lr {lr:.2e}): the smoothed loss {current:.4g} exceeds "
                       f"{DIVERGENCE_FACTOR:g}x its lowest, {lowest:.4g}")
            break
    return (np.asarray(done_lrs, dtype=np.float64), np.asarray(losses, dtype=np.float64),
            np.asarray(smoothed, dtype=np.float64), stopped)


def find_lr(config: Config | dict | str, *, overrides=(), runs_dir: str | Path = "runs", name: str | None = None,
            start: float = 1e-7, end: float = 10.0, steps: int = 100,
            on_notice: Callable[[str], None] | None = None, on_fetch=None,
            on_step: Callable[[int, int, float, float, float], None] | None = None) -> LRFindResult:
    """Run the range test of a config into its own folder and return the :class:`LRFindResult`.

    The config, network and data are checked first (:func:`cnncli.experiment.prepare`),
    so a bad config or data set leaves no folder. Augmentation and class weights are the
    config's; its schedule and early stopping are not followed (``on_notice`` hears so).
    """
    check_settings(start, end, steps)
    config, built, data = prepare(config, overrides, runs_dir, on_fetch)
    network, loss, optimizer = built
    values = config.values
    _notices(values, on_notice)
    from cnncli.data.augment import Augmenter

    augment = Augmenter.from_config(values["data"]["augment"], values["model"]["input_shape"])
    weights = data.info["class_weights"]
    if not len(data.train):
        raise CnnCliError("lr-find: the training split is empty; the range test trains on it")
    settings = {"start": float(start), "end": float(end), "steps": int(steps), "config": values["name"],
                "batch_size": values["train"]["batch_size"], "smoothing_beta": SMOOTHING_BETA,
                "divergence_factor": DIVERGENCE_FACTOR, "skip_begin": SKIP_BEGIN}

    run_dir = runs.create_run_dir(runs_dir, f"{name or values['name']}-lr-find", checkpoints=False)
    runs.write_status(run_dir, "running", step=0)
    try:
        # As train writes it: the folder keeps its own copy of every plugin, and its config names the copies.
        in_folder = {**values, "plugins": plugins.copy_into(run_dir, values["plugins"])}
        runs.atomic_write_text(run_dir / "config.yaml", yamlfiles.dump(in_folder))
        lrs, losses, smoothed, stopped = run_test(
            network, loss, optimizer, data.train, lrs=learning_rates(start, end, steps),
            batch_size=values["train"]["batch_size"], shuffle_rng=seeded_rng(values["seed"], SHUFFLE_STREAM),
            augment=augment, augment_seed=seeded_rng(values["seed"], AUGMENT_STREAM).integers(2**63),
            class_weights=None if weights is None else np.asarray(weights), on_step=on_step)
        curve = centered(losses, lrs)
        index, slope, rationale = suggest(lrs, curve, losses=losses)
        result = LRFindResult(lrs=lrs, losses=losses, smoothed=smoothed,
                              suggestion=None if index is None else float(lrs[index]), slope=slope,
                              rationale=rationale, stopped=stopped, path=run_dir,
                              min_loss_lr=float(lrs[np.argmin(curve)]) if len(curve) else None,
                              suggestion_index=index, settings=settings, centered=curve)
        write_record(result)
        runs.write_status(run_dir, "completed", step=result.steps_run, stopped=stopped,
                          suggested_lr=result.suggestion)
    except KeyboardInterrupt:
        runs.write_status(run_dir, "interrupted", reason="the range test was interrupted; run it again")
        raise
    except BaseException as err:
        runs.write_status(run_dir, "failed", reason=f"{type(err).__name__}: {err}")
        raise
    return result


# ---------------------------------------------------------------------------- the record
def write_record(result: LRFindResult) -> None:
    """lr_find.csv, lr_find.json and lr_find.png in ``result.path``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    curve = result.centered if result.centered is not None else centered(result.losses, result.lrs)
    for i, (lr, value, smoothed, mid) in enumerate(zip(result.lrs, result.losses, result.smoothed, curve)):
        writer.writerow([i + 1, repr(float(lr)), repr(float(value)), repr(float(smoothed)), repr(float(mid))])
    runs.atomic_write_text(result.path / "lr_find.csv", buf.getvalue())
    runs.write_json(result.path / "lr_find.json", {
        "settings": result.settings, "steps_run": result.steps_run, "stopped": result.stopped,
        "suggested_lr": result.suggestion, "slope_per_decade": result.slope, "min_loss_lr": result.min_loss_lr,
        "rationale": result.rationale})
    plot_png(result, result.path / "lr_find.png")


def plot_limits(losses: np.ndarray, smoothed: np.ndarray) -> tuple[float, float] | None:
    """y-limits that show the fall of the loss, not the explosion at the end: from just
    below the lowest points to just above the smoothed loss before its minimum."""
    if not len(smoothed):
        return None
    lowest = int(np.argmin(smoothed))
    top = float(np.max(smoothed[:lowest + 1]))
    # The raw losses may dip below the average; a few outliers should not stretch the axis.
    bottom = min(float(smoothed[lowest]), float(np.percentile(losses[:lowest + 1], 5)))
    pad = 0.08 * max(top - bottom, 1e-12 + 0.05 * abs(top))
    return bottom - pad, top + 2 * pad


def plot_png(result: LRFindResult, path: Path) -> Path:
    """The range test: raw and smoothed loss against the rate (log axis), the suggestion
    marked; the rationale (or why there is none) under the axes."""
    import textwrap

    from cnncli.visualize import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    curve = result.centered if result.centered is not None else centered(result.losses, result.lrs)
    if result.steps_run:
        ax.plot(result.lrs, result.losses, color="tab:blue", alpha=0.3, linewidth=1, label="loss of the batch")
        ax.plot(result.lrs, result.smoothed, color="tab:orange", linewidth=1, linestyle="--",
                label="moving average (lags; decides when to stop)")
        ax.plot(result.lrs, curve, color="tab:blue", linewidth=2, label="centered average (the suggestion's)")
        ax.set_ylim(*plot_limits(result.losses, curve))
    ax.set_xscale("log")
    start, end = result.settings.get("start"), result.settings.get("end")
    if result.steps_run and start and end:
        # Up to the last rate tried (a little past it), not to an --end the test never reached.
        ax.set_xlim(start, min(end, result.lrs[-1] * (end / start) ** 0.02))
    if result.min_loss_lr is not None:
        ax.axvline(result.min_loss_lr, color="dimgray", linestyle=":", linewidth=1.2,
                   label=f"lowest centered loss, lr {result.min_loss_lr:.1e}")
    if result.suggestion_index is not None:
        at = result.suggestion_index
        ax.axvline(result.suggestion, color="tab:red", linestyle="--", linewidth=1.5,
                   label=f"suggested lr {result.suggestion:.1e} (steepest fall, {result.slope:.2f} per decade)")
        ax.plot([result.suggestion], [curve[at]], marker="o", color="tab:red", zorder=3)
        # The label sits at the foot of the line, on white: the noisy raw losses run through the middle.
        ax.text(result.suggestion, 0.03, f" {result.suggestion:.1e} ", transform=ax.get_xaxis_transform(),
                color="tab:red", fontsize=9, ha="right", va="bottom",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1})
    name = result.settings.get("config")
    title = "learning-rate range test" + (f" of {name}" if name else "")
    ax.set(xlabel="learning rate (log scale)", ylabel="loss (mean per example)",
           title=title if result.suggestion is not None else f"{title}: no suggestion")
    ax.grid(alpha=0.3)  # one line a decade: the minor ticks' lines would hide the raw losses
    ax.legend(fontsize=8, loc="best")
    footer = f"{result.stopped}. {result.rationale}"
    fig.text(0.01, 0.01, "\n".join(textwrap.wrap(footer, 150)), fontsize=7, color="dimgray", va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path)


__all__ = ["LRFindResult", "centered", "find_lr", "learning_rates", "run_test", "set_value", "smooth", "suggest"]
