"""Optimizers and learning-rate schedules of ``cnncli.nn.optimizers``.

Each optimizer is compared over many steps with a re-implementation, written here from
the module docstring and ERRATA 6-10 of docs/MATH.md §7 (not from the code), then with ``torch.optim``
where PyTorch is installed. Hyperparameters are mostly not the defaults, and some cases
use a large epsilon, so that a misplaced epsilon, a wrong bias correction or a step
counter off by one changes the numbers far beyond the tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine_modes import serial_and_split
from cnncli.errors import CheckpointError, ConfigError
from cnncli.nn import make_optimizer
from cnncli.nn.optimizers import Optimizer

# Every test twice: serially and with the work split over the engine's threads.
engine_mode = serial_and_split()

SHAPES = {"conv": (2, 3, 2, 4), "bias": (4,), "dense": (5, 3)}
ALL = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam")


# ----------------------------------------------------------------------------- helpers
def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def make_grads(steps, seed=1, scale_range=(-2.0, 1.0)):
    """Random gradients whose overall size changes from step to step (1e-2 .. 1e1)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        scale = 10.0 ** rng.uniform(*scale_range)
        out.append({k: scale * rng.standard_normal(s) for k, s in SHAPES.items()})
    return out


def copy(d):
    return {k: np.array(v, copy=True) for k, v in d.items()}


def assert_close(actual, expected, tol=1e-12):
    """Max abs difference relative to the scale of the expected values."""
    for k in expected:
        a, e = np.asarray(actual[k], np.float64), np.asarray(expected[k], np.float64)
        assert a.shape == e.shape, k
        scale = max(1.0, float(np.max(np.abs(e))))
        err = float(np.max(np.abs(a - e))) / scale
        assert err <= tol, f"{k}: relative difference {err:.3g} > {tol:g}"


class Reference:
    """The update rules as written in the docstring / ERRATA, one parameter at a time."""

    def __init__(self, name, *, lr, weight_decay=0.0, clip_norm=None, lr_at=None, **hp):
        self.name, self.lr, self.wd, self.clip = name, lr, weight_decay, clip_norm
        self.lr_at = lr_at or (lambda t: lr)
        self.hp = hp
        self.t = 0
        self.state = {}
        self.norms = []

    def step(self, params, grads):
        eta = self.lr_at(self.t)
        norm = math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in grads.values()))
        self.norms.append(norm)
        g_all = dict(grads)
        if self.clip is not None:
            coef = self.clip / (norm + 1e-6)
            if coef < 1.0:
                g_all = {k: g * coef for k, g in g_all.items()}
        if self.wd:
            g_all = {k: g + self.wd * params[k] for k, g in g_all.items()}
        for k in params:
            params[k] = self._rule(k, params[k], g_all[k], eta)
        self.t += 1

    def _rule(self, k, w, g, eta):
        s = self.state.setdefault(k, {})
        hp = self.hp
        if self.name == "sgd":
            return w - eta * g
        if self.name == "momentum":
            gamma = hp.get("momentum", 0.9)
            s["M"] = gamma * s.get("M", 0.0) + eta * g
            return w - s["M"]
        if self.name == "nesterov":
            gamma = hp.get("momentum", 0.9)
            s["M"] = gamma * s.get("M", 0.0) + eta * g
            return w - (eta * g + gamma * s["M"])
        if self.name == "adagrad":
            eps = hp.get("epsilon", 1e-10)
            s["G"] = s.get("G", 0.0) + g ** 2
            return w - eta * g / (np.sqrt(s["G"]) + eps)
        if self.name == "adadelta":
            rho, eps = hp.get("rho", 0.9), hp.get("epsilon", 1e-6)
            s["Eg"] = rho * s.get("Eg", 0.0) + (1 - rho) * g ** 2
            d = np.sqrt(s.get("Ed", 0.0) + eps) / np.sqrt(s["Eg"] + eps) * g
            s["Ed"] = rho * s.get("Ed", 0.0) + (1 - rho) * d ** 2
            return w - eta * d
        if self.name == "rmsprop":
            rho, eps = hp.get("rho", 0.9), hp.get("epsilon", 1e-8)
            s["E"] = rho * s.get("E", 0.0) + (1 - rho) * g ** 2
            return w - eta * g / (np.sqrt(s["E"]) + eps)
        if self.name == "adam":
            b1, b2 = hp.get("beta1", 0.9), hp.get("beta2", 0.999)
            eps = hp.get("epsilon", 1e-8)
            n = self.t + 1  # updates so far, this one included
            s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
            s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g ** 2
            m_hat = s["m"] / (1 - b1 ** n)
            v_hat = s["v"] / (1 - b2 ** n)
            return w - eta * m_hat / (np.sqrt(v_hat) + eps)
        raise AssertionError(self.name)


def run_both(spec, ref, steps=8, params_seed=0, grads_seed=1, scale_range=(-2.0, 1.0)):
    opt = make_optimizer(dict(spec))
    ours = make_params(params_seed)
    theirs = copy(ours)
    for grads in make_grads(steps, grads_seed, scale_range):
        opt.step(ours, copy(grads))
        ref.step(theirs, copy(grads))
        assert_close(ours, theirs)
    return opt, ref


# Non-default hyperparameters; the "big eps" cases make eps placement visible.
CASES = {
    "sgd": ({"lr": 0.1}, {}),
    "momentum": ({"lr": 0.05, "momentum": 0.8}, {"momentum": 0.8}),
    "nesterov": ({"lr": 0.05, "momentum": 0.7}, {"momentum": 0.7}),
    "adagrad": ({"lr": 0.1, "epsilon": 1e-10}, {"epsilon": 1e-10}),
    "adagrad-big-eps": ({"lr": 0.1, "epsilon": 0.3}, {"epsilon": 0.3}),
    "adadelta": ({"lr": 1.0, "rho": 0.8, "epsilon": 1e-6}, {"rho": 0.8, "epsilon": 1e-6}),
    "adadelta-lr-eps": ({"lr": 0.5, "rho": 0.95, "epsilon": 1e-2}, {"rho": 0.95, "epsilon": 1e-2}),
    "rmsprop": ({"lr": 0.01, "rho": 0.8, "epsilon": 1e-8}, {"rho": 0.8, "epsilon": 1e-8}),
    "rmsprop-big-eps": ({"lr": 0.01, "rho": 0.95, "epsilon": 0.1}, {"rho": 0.95, "epsilon": 0.1}),
    "adam": ({"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "epsilon": 1e-8},
             {"beta1": 0.8, "beta2": 0.99, "epsilon": 1e-8}),
    "adam-big-eps": ({"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 0.1},
                     {"beta1": 0.9, "beta2": 0.999, "epsilon": 0.1}),
}


def case(cid):
    ours, hp = CASES[cid]
    name = cid.split("-")[0]
    return {"name": name, **ours}, Reference(name, lr=ours["lr"], **hp)


# ---------------------------------------------------------------- rules vs re-implementation
@pytest.mark.parametrize("cid", sorted(CASES))
def test_rule_matches_written_update(cid):
    spec, ref = case(cid)
    run_both(spec, ref, steps=8)


@pytest.mark.parametrize("name", ALL)
def test_defaults_match_docstring(name):
    """Default hyperparameters (docstring table): eta, gamma, rho, eps, betas."""
    default_lr = {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01,
                  "adadelta": 1.0, "rmsprop": 0.001, "adam": 0.001}[name]
    opt = make_optimizer(name)
    assert opt.lr == default_lr
    assert opt.current_lr() == default_lr
    run_both({"name": name}, Reference(name, lr=default_lr), steps=6)


@pytest.mark.parametrize("name", ALL)
def test_weight_decay(name):
    spec, ref = {"name": name, "lr": 0.03, "weight_decay": 0.05}, Reference(name, lr=0.03,
                                                                             weight_decay=0.05)
    run_both(spec, ref, steps=7)


@pytest.mark.parametrize("name", ALL)
def test_clip_norm_is_global(name):
    """Clip by the norm over all parameters together; steps both above and below the limit."""
    spec = {"name": name, "lr": 0.02, "clip_norm": 2.0, "weight_decay": 0.01}
    ref = Reference(name, lr=0.02, clip_norm=2.0, weight_decay=0.01)
    opt, _ = run_both(spec, ref, steps=10, scale_range=(-1.5, 0.5))
    norms = np.array(ref.norms)
    assert (norms > 2.0).any() and (norms < 2.0).any(), "the case must clip some steps only"
    assert opt.last_grad_norm == pytest.approx(ref.norms[-1], rel=1e-12)


def test_clip_scales_every_parameter_by_one_global_factor():
    params = {"a": np.zeros(3), "b": np.zeros(2)}
    grads = {"a": np.array([3.0, 0.0, 0.0]), "b": np.array([0.0, 4.0])}  # global norm 5
    opt = make_optimizer({"name": "sgd", "lr": 1.0, "clip_norm": 1.0})
    opt.step(params, copy(grads))
    coef = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(params["a"], [-3.0 * coef, 0, 0], rtol=1e-15)
    np.testing.assert_allclose(params["b"], [0, -4.0 * coef], rtol=1e-15)
    assert opt.last_grad_norm == pytest.approx(5.0, rel=1e-15)
    # Below the limit: untouched (the coefficient would be above 1).
    opt = make_optimizer({"name": "sgd", "lr": 1.0, "clip_norm": 10.0})
    params = {"a": np.zeros(3), "b": np.zeros(2)}
    opt.step(params, copy(grads))
    assert np.array_equal(params["a"], -grads["a"]) and np.array_equal(params["b"], -grads["b"])


def test_gradient_norm_and_precomputed_norm():
    grads = make_grads(1, seed=7)[0]
    expected = math.sqrt(sum(float(np.sum(g ** 2)) for g in grads.values()))
    assert Optimizer.gradient_norm(grads) == pytest.approx(expected, rel=1e-14)
    bad = dict(grads, bias=np.array([1.0, np.nan, 0.0, 0.0]))
    assert math.isnan(Optimizer.gradient_norm(bad))
    bad = dict(grads, bias=np.array([1.0, np.inf, 0.0, 0.0]))
    assert Optimizer.gradient_norm(bad) == math.inf
    # passing the norm the caller computed gives the same update, bit for bit
    spec = {"name": "adam", "clip_norm": 0.5 * expected}
    a, b = make_optimizer(dict(spec)), make_optimizer(dict(spec))
    pa, pb = make_params(), make_params()
    a.step(pa, copy(grads))
    b.step(pb, copy(grads), grad_norm=Optimizer.gradient_norm(grads))
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)


@pytest.mark.parametrize("name", ALL)
def test_norm_summed_during_the_update_is_the_gradient_norm(name):
    """Without clipping or weight decay, step() sums the squares in its update pass."""
    grads = make_grads(1, seed=3)[0]
    opt = make_optimizer({"name": name})
    opt.step(make_params(), copy(grads))
    assert opt.last_grad_norm == pytest.approx(Optimizer.gradient_norm(grads), rel=1e-14)
    bad = dict(grads, bias=np.array([1.0, np.nan, 0.0, 0.0]))
    opt.step(make_params(), bad)
    assert math.isnan(opt.last_grad_norm)


def test_step_does_not_modify_the_gradients_and_updates_in_place():
    for name in ALL:
        opt = make_optimizer({"name": name, "weight_decay": 0.1, "clip_norm": 0.5})
        params = make_params()
        arrays = dict(params)
        grads = make_grads(1)[0]
        before = copy(grads)
        opt.step(params, grads)
        for k in grads:
            assert np.array_equal(grads[k], before[k]), name
            assert params[k] is arrays[k], name  # the network's arrays are updated in place


@pytest.mark.parametrize("name", ALL)
def test_float32_parameters_stay_float32(name):
    opt = make_optimizer(name)
    params = make_params(dtype=np.float32)
    for grads in make_grads(3):
        opt.step(params, {k: g.astype(np.float32) for k, g in grads.items()})
    assert all(p.dtype == np.float32 for p in params.values())
    assert all(s.dtype == np.float32 for s in opt.state_dict().values() if s.ndim)


# -------------------------------------------------------------------------------- schedules
SCHEDULES = {
    "constant": ({"name": "constant"}, lambda t: 0.2),
    "step": ({"name": "step", "step_size": 3, "gamma": 0.5}, lambda t: 0.2 * 0.5 ** (t // 3)),
    "exponential": ({"name": "exponential", "gamma": 0.7, "decay_steps": 2},
                    lambda t: 0.2 * 0.7 ** (t / 2)),
    "cosine": ({"name": "cosine", "t_max": 6, "min_lr": 0.01},
               lambda t: 0.01 + (0.2 - 0.01) * (1 + math.cos(math.pi * min(t, 6) / 6)) / 2),
    "decay": ({"name": "decay", "decay": 0.25}, lambda t: 0.2 / (1 + 0.25 * t)),
}


@pytest.mark.parametrize("sched", sorted(SCHEDULES))
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_schedule(sched, name):
    spec, formula = SCHEDULES[sched]
    opt = make_optimizer({"name": name, "lr": 0.2, "schedule": dict(spec)})
    ref = Reference(name, lr=0.2, lr_at=formula)
    params = make_params()
    theirs = copy(params)
    for t, grads in enumerate(make_grads(10)):  # past t_max for the cosine
        assert opt.t == t
        assert opt.current_lr() == pytest.approx(formula(t), rel=1e-14, abs=0), (sched, t)
        opt.step(params, copy(grads))
        ref.step(theirs, copy(grads))
        assert_close(params, theirs)
    assert opt.current_lr() == pytest.approx(formula(10), rel=1e-14)


def test_schedule_values_by_hand():
    """A few values written out, independent of any formula in code."""
    def lrs(sched, n):
        opt = make_optimizer({"name": "sgd", "lr": 1.0, "schedule": sched})
        out = []
        p = {"w": np.zeros(1)}
        for _ in range(n):
            out.append(opt.current_lr())
            opt.step(p, {"w": np.zeros(1)})
        return out

    assert lrs({"name": "step", "step_size": 2, "gamma": 0.1}, 5) == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01])
    assert lrs({"name": "exponential", "gamma": 0.25, "decay_steps": 2}, 3) == pytest.approx(
        [1, 0.5, 0.25])
    assert lrs({"name": "cosine", "t_max": 2}, 4) == pytest.approx([1, 0.5, 0, 0], abs=1e-15)
    assert lrs({"name": "decay", "decay": 1.0}, 4) == pytest.approx([1, 0.5, 1 / 3, 0.25])
    assert lrs("constant", 3) == [1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------------ state
@pytest.mark.parametrize("name", ALL)
def test_state_dict_save_load_continues_bit_for_bit(name, tmp_path):
    spec = {"name": name, "lr": 0.05, "weight_decay": 0.01, "clip_norm": 3.0,
            "schedule": {"name": "decay", "decay": 0.1}}
    if name in ("adadelta",):
        spec["lr"] = 1.0
    grads = make_grads(10)
    a = make_optimizer(dict(spec))
    params_a = make_params()
    for g in grads[:5]:
        a.step(params_a, copy(g))

    state = a.state_dict()
    slots = type(a).slots
    expected_keys = {"t"} | {f"{k}/{s}" for k in SHAPES for s in slots}
    assert set(state) == expected_keys
    assert int(state["t"]) == 5
    for key, arr in state.items():
        assert isinstance(arr, np.ndarray) and arr.dtype != object, key
        if key != "t":
            assert arr.shape == SHAPES[key.split("/")[0]]
    # state_dict gives copies
    for key in state:
        if key != "t":
            state[key] += 1.0
    assert not any(np.array_equal(state[k], v) for k, v in a.state_dict().items() if k != "t")
    state = a.state_dict()

    path = tmp_path / "opt.npz"
    np.savez(path, **state)
    with np.load(path, allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}
    assert set(loaded) == expected_keys

    b = make_optimizer(dict(spec))
    params_b = copy(params_a)
    b.load_state_dict(loaded, params_b)
    assert b.t == 5 and b.current_lr() == a.current_lr()
    for g in grads[5:]:
        a.step(params_a, copy(g))
        b.step(params_b, copy(g))
    for k in params_a:
        assert np.array_equal(params_a[k], params_b[k]), k
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k


def test_state_dict_of_fresh_optimizer_round_trips():
    a = make_optimizer("adam")
    assert set(a.state_dict()) == {"t"}
    b = make_optimizer("adam")
    params = make_params()
    b.load_state_dict(a.state_dict(), params)
    p1, p2 = make_params(), make_params()
    g = make_grads(2)
    for gg in g:
        a.step(p1, copy(gg))
        b.step(p2, copy(gg))
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)


def _adam_state():
    opt = make_optimizer("adam")
    params = make_params()
    for g in make_grads(3):
        opt.step(params, g)
    return opt.state_dict(), params


def test_load_state_wrong_shape_raises():
    state, params = _adam_state()
    state["dense/v"] = np.zeros((3, 5))
    with pytest.raises(CheckpointError, match=r"dense/v"):
        make_optimizer("adam").load_state_dict(state, params)


def test_load_state_missing_slot_raises():
    state, params = _adam_state()
    del state["bias/m"]
    with pytest.raises(CheckpointError, match=r"bias/m"):
        make_optimizer("adam").load_state_dict(state, params)


def test_load_state_missing_counter_raises():
    state, params = _adam_state()
    del state["t"]
    with pytest.raises(CheckpointError, match=r"'t'"):
        make_optimizer("adam").load_state_dict(state, params)


def test_load_state_of_another_optimizer_raises():
    state, params = _adam_state()
    with pytest.raises(CheckpointError, match=r"velocity"):
        make_optimizer("momentum").load_state_dict(state, params)


def test_failed_load_leaves_the_optimizer_unchanged():
    state, params = _adam_state()
    opt = make_optimizer("adam")
    opt.step(make_params(), make_grads(1)[0])
    before = opt.state_dict()
    del state["bias/v"]
    with pytest.raises(CheckpointError):
        opt.load_state_dict(state, params)
    after = opt.state_dict()
    assert set(after) == set(before) and all(np.array_equal(after[k], before[k]) for k in after)


# ---------------------------------------------------------------------- bad hyperparameters
@pytest.mark.parametrize("spec, fragments", [
    ({"name": "sgd", "lr": 0}, ["optimizer.lr", "expected a number > 0", "got 0"]),
    ({"name": "adam", "lr": -1e-3}, ["optimizer.lr", "> 0"]),
    ({"name": "momentum", "momentum": 1.0}, ["optimizer.momentum", "< 1", "got 1.0"]),
    ({"name": "nesterov", "momentum": -0.1}, ["optimizer.momentum", ">= 0"]),
    ({"name": "rmsprop", "rho": 1.0}, ["optimizer.rho", "< 1"]),
    ({"name": "adam", "beta2": 1.0}, ["optimizer.beta2", "< 1"]),
    ({"name": "adagrad", "epsilon": 0}, ["optimizer.epsilon", "> 0"]),
    ({"name": "sgd", "weight_decay": -0.1}, ["optimizer.weight_decay", ">= 0"]),
    ({"name": "sgd", "clip_norm": 0}, ["optimizer.clip_norm", "> 0"]),
    ({"name": "sgd", "lr": "fast"}, ["optimizer.lr", "expected a number", "got 'fast'"]),
    ({"name": "sgd", "lr": True}, ["optimizer.lr", "expected a number"]),
    ({"name": "sgd", "lr": float("nan")}, ["optimizer.lr"]),
    ("adamm", ["unknown optimizer 'adamm'", "did you mean 'adam'", "nesterov"]),
    ({"name": "adamm"}, ["optimizer.name", "unknown optimizer 'adamm'", "did you mean 'adam'"]),
    ({"name": "adam", "betas1": 0.9}, ["optimizer.betas1", "unknown key", "did you mean 'beta1'",
                                       "allowed keys"]),
    ({"name": "sgd", "momentum": 0.9}, ["optimizer.momentum", "unknown key"]),
    ({"name": "sgd", "schedule": {"name": "step"}}, ["step_size", "missing"]),
    ({"name": "sgd", "schedule": {"name": "cosine", "t_max": 0}}, ["t_max", "positive int"]),
    ({"name": "sgd", "schedule": "cosinus"}, ["did you mean 'cosine'"]),
])
def test_bad_hyperparameters(spec, fragments):
    with pytest.raises(ConfigError) as info:
        make_optimizer(spec)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"


def test_make_optimizer_passes_instances_through():
    opt = make_optimizer("adam")
    assert make_optimizer(opt) is opt
    assert isinstance(opt, Optimizer)


# ---------------------------------------------------------------------------------- PyTorch
TORCH_STEPS = 12


# Non-default hyperparameters for the "custom" variant: (ours, torch's keywords).
TORCH_CUSTOM = {
    "sgd": ({}, {}),
    "momentum": ({"momentum": 0.7}, {"momentum": 0.7}),
    "nesterov": ({"momentum": 0.6}, {"momentum": 0.6}),
    "adagrad": ({"epsilon": 0.3}, {"eps": 0.3}),
    "adadelta": ({"rho": 0.8, "epsilon": 1e-2}, {"rho": 0.8, "eps": 1e-2}),
    "rmsprop": ({"rho": 0.8, "epsilon": 0.1}, {"alpha": 0.8, "eps": 0.1}),
    "adam": ({"beta1": 0.8, "beta2": 0.99, "epsilon": 0.1}, {"betas": (0.8, 0.99), "eps": 0.1}),
}


def _torch_optimizer(torch, name, tparams, *, lr, weight_decay, **kw):
    o = torch.optim
    if name == "sgd":
        return o.SGD(tparams, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return o.SGD(tparams, lr=lr, **{"momentum": 0.9, **kw}, weight_decay=weight_decay)
    if name == "nesterov":
        return o.SGD(tparams, lr=lr, **{"momentum": 0.9, **kw}, nesterov=True, weight_decay=weight_decay)
    if name == "adagrad":
        return o.Adagrad(tparams, lr=lr, **{"eps": 1e-10, **kw}, weight_decay=weight_decay)
    if name == "adadelta":
        return o.Adadelta(tparams, lr=lr, **{"rho": 0.9, "eps": 1e-6, **kw}, weight_decay=weight_decay)
    if name == "rmsprop":
        return o.RMSprop(tparams, lr=lr, **{"alpha": 0.9, "eps": 1e-8, **kw}, weight_decay=weight_decay)
    if name == "adam":
        return o.Adam(tparams, lr=lr, **{"betas": (0.9, 0.999), "eps": 1e-8, **kw},
                      weight_decay=weight_decay)
    raise AssertionError(name)


TORCH_LR = {"sgd": 0.05, "momentum": 0.02, "nesterov": 0.02, "adagrad": 0.1, "adadelta": 1.0,
            "rmsprop": 0.01, "adam": 0.01}


@pytest.mark.torch
@pytest.mark.parametrize("variant", ["plain", "custom", "weight_decay", "clip_norm", "both"])
@pytest.mark.parametrize("name", ALL)
def test_matches_torch(name, variant):
    torch = pytest.importorskip("torch")
    lr = TORCH_LR[name]
    wd = 0.02 if variant in ("weight_decay", "both") else 0.0
    clip = 3.0 if variant in ("clip_norm", "both") else None
    params = make_params(3)
    tparams = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    ours_hp, torch_hp = TORCH_CUSTOM[name] if variant == "custom" else ({}, {})
    topt = _torch_optimizer(torch, name, list(tparams.values()), lr=lr, weight_decay=wd, **torch_hp)
    spec = {"name": name, "lr": lr, "weight_decay": wd, **ours_hp}
    if clip is not None:
        spec["clip_norm"] = clip
    opt = make_optimizer(spec)
    # gradients from 0.03 to 30 in global norm: the clip case clips some steps and not others
    grads_seq = make_grads(TORCH_STEPS, seed=4, scale_range=(-1.5, 0.8))
    clipped = []
    for grads in grads_seq:
        for k, p in tparams.items():
            p.grad = torch.tensor(grads[k], dtype=torch.float64)
        if clip is not None:
            total = float(torch.nn.utils.clip_grad_norm_(list(tparams.values()), max_norm=clip))
            clipped.append(total > clip)
        topt.step()
        opt.step(params, copy(grads))
        with torch.no_grad():
            expected = {k: p.detach().numpy().copy() for k, p in tparams.items()}
        assert_close(params, expected, tol=1e-10)
    if clip is not None:
        assert any(clipped) and not all(clipped)
