"""Data augmentation (cnncli.data.augment) against slow per-image, per-pixel references.

The references below are written from the module docstring's definitions with plain Python
loops; ``reference_draw`` makes the documented rng calls in the documented order. A test
that compares ``Augmenter`` with them therefore proves the formulas and the draw order, not
just that the code runs.
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnncli.data.augment import (AUGMENT_KEYS, Augmenter, adjust_brightness, adjust_contrast, cutout, flip,
                                 random_crop, rotate, translate)
from cnncli.errors import ConfigError, InputError

EVERYTHING = {"flip_horizontal": True, "flip_vertical": True, "random_crop": {"padding": 2}, "translate": 2,
              "rotate": 40, "brightness": 0.5, "contrast": 0.4, "cutout": {"size": 3}}


# ---------------------------------------------------------------- slow references
def reference_draw(config: dict, n: int, rng: np.random.Generator, hw: tuple[int, int]) -> dict:
    """The draws of the module docstring, one call per enabled operation, in its order."""
    params = {}
    if config["flip_horizontal"]:
        params["flip_horizontal"] = rng.random(n) < 0.5
    if config["flip_vertical"]:
        params["flip_vertical"] = rng.random(n) < 0.5
    p = config["random_crop"]["padding"]
    if p:
        params["random_crop"] = rng.integers(0, 2 * p + 1, size=(n, 2))
    t = config["translate"]
    if t:
        params["translate"] = rng.integers(-t, t + 1, size=(n, 2))
    if config["rotate"]:
        params["rotate"] = config["rotate"] * (2 * rng.random(n) - 1)
    if config["brightness"]:
        params["brightness"] = config["brightness"] * (2 * rng.random(n) - 1)
    if config["contrast"]:
        params["contrast"] = 1 + config["contrast"] * (2 * rng.random(n) - 1)
    if config["cutout"]["size"]:
        params["cutout"] = rng.integers(0, hw, size=(n, 2))
    return params


def padded_value(img, i, j):
    """x~[i, j]: the pixel (C,) inside the image, zeros outside."""
    h, w, _ = img.shape
    return img[i, j] if 0 <= i < h and 0 <= j < w else np.zeros(img.shape[2], img.dtype)


def ref_flip_horizontal(x, flags):
    y = x.copy()
    for n in range(len(x)):
        if flags[n]:
            for i in range(x.shape[1]):
                for j in range(x.shape[2]):
                    y[n, i, j] = x[n, i, x.shape[2] - 1 - j]
    return y


def ref_flip_vertical(x, flags):
    y = x.copy()
    for n in range(len(x)):
        if flags[n]:
            for i in range(x.shape[1]):
                for j in range(x.shape[2]):
                    y[n, i, j] = x[n, x.shape[1] - 1 - i, j]
    return y


def ref_random_crop(x, corners, p):
    y = np.empty_like(x)
    for n in range(len(x)):
        top, left = corners[n]
        for i in range(x.shape[1]):
            for j in range(x.shape[2]):
                y[n, i, j] = padded_value(x[n], i + top - p, j + left - p)
    return y


def ref_translate(x, shifts):
    y = np.empty_like(x)
    for n in range(len(x)):
        dy, dx = shifts[n]
        for i in range(x.shape[1]):
            for j in range(x.shape[2]):
                y[n, i, j] = padded_value(x[n], i - dy, j - dx)
    return y


def ref_rotate(x, degrees):
    _, h, w, _ = x.shape
    ci, cj = (h - 1) / 2, (w - 1) / 2
    y = np.zeros_like(x)
    for n in range(len(x)):
        t = math.radians(degrees[n])
        for i in range(h):
            for j in range(w):
                r = ci + (i - ci) * math.cos(t) + (j - cj) * math.sin(t)
                s = cj - (i - ci) * math.sin(t) + (j - cj) * math.cos(t)
                for rr in (math.floor(r), math.floor(r) + 1):
                    for ss in (math.floor(s), math.floor(s) + 1):
                        weight = (1 - abs(r - rr)) * (1 - abs(s - ss))
                        y[n, i, j] += weight * padded_value(x[n], rr, ss)
    return y


def ref_brightness(x, deltas):
    y = np.empty_like(x)
    for n in range(len(x)):
        y[n] = x[n] + deltas[n]
    return y


def ref_contrast(x, factors):
    y = np.empty_like(x)
    for n in range(len(x)):
        for c in range(x.shape[3]):
            channel = x[n, :, :, c]
            mean = math.fsum(channel.ravel().tolist()) / channel.size
            y[n, :, :, c] = mean + factors[n] * (channel - mean)
    return y


def ref_cutout(x, centres, size):
    y = x.copy()
    for n in range(len(x)):
        top, left = centres[n][0] - size // 2, centres[n][1] - size // 2
        for i in range(max(top, 0), min(top + size, x.shape[1])):
            for j in range(max(left, 0), min(left + size, x.shape[2])):
                y[n, i, j] = 0
    return y


def reference_apply(config, x, params):
    """Every enabled operation, in the documented order, by the references above."""
    y = x
    steps = {
        "flip_horizontal": lambda y, p: ref_flip_horizontal(y, p),
        "flip_vertical": lambda y, p: ref_flip_vertical(y, p),
        "random_crop": lambda y, p: ref_random_crop(y, p, config["random_crop"]["padding"]),
        "translate": lambda y, p: ref_translate(y, p),
        "rotate": lambda y, p: ref_rotate(y, p),
        "brightness": lambda y, p: ref_brightness(y, p),
        "contrast": lambda y, p: ref_contrast(y, p),
        "cutout": lambda y, p: ref_cutout(y, p, config["cutout"]["size"]),
    }
    for key in AUGMENT_KEYS:
        if key in params:
            y = steps[key](y, params[key])
    return y


def batch(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def assert_same_draws(got, expected):
    assert list(got) == list(expected)  # same operations, same order
    for key in expected:
        assert got[key].dtype.kind == expected[key].dtype.kind
        np.testing.assert_array_equal(got[key], expected[key])


# ---------------------------------------------------------------- each operation and the pipeline
ONE_OP = {
    "flip_horizontal": True, "flip_vertical": True, "random_crop": {"padding": 3}, "translate": 3,
    "rotate": 180, "brightness": 2.0, "contrast": 0.9, "cutout": {"size": 4},
}


@pytest.mark.parametrize("key", AUGMENT_KEYS)
@pytest.mark.parametrize("shape", [(6, 7, 5, 3), (5, 6, 6, 1)])
def test_each_operation_matches_the_per_image_reference(key, shape):
    aug = Augmenter.from_config({key: ONE_OP[key]}, shape[1:])
    assert aug.operations == (key,)
    x = batch(shape, seed=1)
    kept = x.copy()
    expected_params = reference_draw(aug.config(), len(x), np.random.default_rng(7), shape[1:3])
    assert_same_draws(aug.draw(len(x), np.random.default_rng(7)), expected_params)
    got = aug(x, np.random.default_rng(7))
    np.testing.assert_allclose(got, reference_apply(aug.config(), x, expected_params), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(x, kept)  # the input is untouched


@pytest.mark.parametrize("shape", [(8, 6, 6, 3), (5, 7, 4, 1), (4, 5, 8, 4)])
def test_every_operation_together_matches_the_reference_in_the_documented_order(shape):
    aug = Augmenter.from_config(EVERYTHING, shape[1:])
    assert aug.operations == AUGMENT_KEYS
    x = batch(shape, seed=2)
    rng = np.random.default_rng(11)
    got = aug(x, rng)
    reference_rng = np.random.default_rng(11)
    params = reference_draw(aug.config(), len(x), reference_rng, shape[1:3])
    np.testing.assert_allclose(got, reference_apply(aug.config(), x, params), rtol=0, atol=1e-12)
    # ... and consumed exactly the documented draws: both generators stand at the same place.
    assert rng.bit_generator.state == reference_rng.bit_generator.state


def test_float32_is_computed_in_float32_and_agrees_with_float64():
    aug = Augmenter.from_config(EVERYTHING, (9, 9, 3))
    x64 = batch((6, 9, 9, 3), seed=3)
    y32 = aug(x64.astype(np.float32), np.random.default_rng(5))
    y64 = aug(x64, np.random.default_rng(5))
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, rtol=0, atol=2e-5)


# ---------------------------------------------------------------- flips, crops, shifts
def test_flips_are_exactly_the_mirrored_pixels():
    x = batch((4, 5, 6, 3))
    flags = np.array([True, False, True, False])
    left_right = flip(x, flags, axis=2)
    up_down = flip(x, flags, axis=1)
    for n in range(4):
        np.testing.assert_array_equal(left_right[n], x[n, :, ::-1] if flags[n] else x[n])
        np.testing.assert_array_equal(up_down[n], x[n, ::-1] if flags[n] else x[n])
    assert left_right[0, 2, 0, 1] == x[0, 2, 5, 1]


def test_flip_probability_is_one_half():
    aug = Augmenter.from_config({"flip_horizontal": True}, (2, 2, 1))
    flags = aug.draw(20000, np.random.default_rng(0))["flip_horizontal"]
    assert abs(flags.mean() - 0.5) < 0.015  # 4.2 standard deviations


def test_crop_with_padding_0_and_translate_0_are_the_identity():
    x = batch((3, 5, 5, 2))
    for spec in ({"random_crop": {"padding": 0}}, {"translate": 0}, {"random_crop": 0}):
        aug = Augmenter.from_config(spec, (5, 5, 2))
        assert not aug.enabled
        rng = np.random.default_rng(0)
        before = rng.bit_generator.state
        y = aug(x, rng)
        assert y is not x and np.array_equal(y, x)
        assert rng.bit_generator.state == before  # nothing drawn
    # The centred window of any padding, and a zero shift of any range, are the identity too.
    np.testing.assert_array_equal(random_crop(x, np.full((3, 2), 4), 4), x)
    np.testing.assert_array_equal(translate(x, np.zeros((3, 2), int), 4), x)


def test_crop_corner_0_0_moves_the_image_down_right_over_zero_padding():
    x = batch((1, 6, 6, 3)) + 10  # no pixel is 0
    y = random_crop(x, np.array([[0, 0]]), 2)
    assert np.all(y[0, :2] == 0) and np.all(y[0, :, :2] == 0)
    np.testing.assert_array_equal(y[0, 2:, 2:], x[0, :4, :4])
    z = translate(x, np.array([[-1, 2]]), 3)  # up 1, right 2
    np.testing.assert_array_equal(z[0, :5, 2:], x[0, 1:, :4])
    assert np.all(z[0, 5] == 0) and np.all(z[0, :, :2] == 0)


def test_crop_offsets_and_shifts_cover_their_whole_range_uniformly():
    aug = Augmenter.from_config({"random_crop": {"padding": 4}, "translate": 3}, (28, 28, 3))
    params = aug.draw(45000, np.random.default_rng(0))
    for values, low, high in ((params["random_crop"], 0, 8), (params["translate"], -3, 3)):
        counts = np.array([np.sum(values == v) for v in range(low, high + 1)])
        assert values.min() == low and values.max() == high
        expected = values.size / (high - low + 1)
        assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


# ---------------------------------------------------------------- rotation
def test_rotate_by_0_is_the_identity():
    x = batch((3, 7, 5, 2))
    np.testing.assert_allclose(rotate(x, np.zeros(3)), x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rotate(x, np.full(3, 360.0)), x, rtol=0, atol=1e-12)


def test_rotate_by_plus_minus_90_on_a_square_is_rot90():
    aug = Augmenter.from_config({"rotate": 90}, (6, 6, 3))
    x = batch((2, 6, 6, 3))
    y = aug.apply(x, {"rotate": np.array([90.0, -90.0])})
    np.testing.assert_allclose(y[0], np.rot90(x[0], k=1), rtol=0, atol=1e-12)  # counter-clockwise
    np.testing.assert_allclose(y[1], np.rot90(x[1], k=-1), rtol=0, atol=1e-12)


def test_rotate_by_180_is_the_point_mirror_on_any_rectangle():
    x = batch((2, 5, 8, 3))
    np.testing.assert_allclose(rotate(x, np.array([180.0, -180.0])), x[:, ::-1, ::-1], rtol=0, atol=1e-12)


def test_rotation_keeps_a_constant_image_inside_the_inscribed_circle():
    h = w = 15
    x = np.full((16, h, w, 2), 3.25)
    degrees = np.linspace(-179, 179, 16)
    y = rotate(x, degrees)
    i, j = np.mgrid[0:h, 0:w]
    inside = np.hypot(i - (h - 1) / 2, j - (w - 1) / 2) <= (h - 1) / 2 - 1  # every neighbour in the image
    np.testing.assert_allclose(y[:, inside], 3.25, rtol=0, atol=1e-12)
    assert np.all(y[:, 0, 0] < 3.25)  # a corner samples outside (0) for a non-trivial angle
    assert np.all((y >= -1e-12) & (y <= 3.25 + 1e-12))  # a convex mix of the image and 0


def test_rotation_angles_are_uniform_in_plus_minus_D():
    aug = Augmenter.from_config({"rotate": 30}, (4, 4, 1))
    angles = aug.draw(20000, np.random.default_rng(3))["rotate"]
    assert angles.min() >= -30 and angles.max() < 30
    assert abs(angles.mean()) < 0.5 and abs(angles.std() - 30 / np.sqrt(3)) < 0.3


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(4, 9, 9, 3), (3, 6, 11, 2)])
def test_rotation_agrees_with_torch_grid_sample(shape):
    """An independent implementation: grid_sample, bilinear, zeros outside, align_corners."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    n, h, w, _ = shape
    x = batch(shape, seed=4)
    degrees = np.array([33.0, -71.5, 145.0, 12.25][:n])
    t = np.radians(degrees)
    ci, cj = (h - 1) / 2, (w - 1) / 2
    # Output (x_n, y_n) in [-1, 1] -> source, the rotation of the docstring in normalized units.
    theta = np.stack([np.stack([np.cos(t), -np.sin(t) * ci / cj, 0 * t], 1),
                      np.stack([np.sin(t) * cj / ci, np.cos(t), 0 * t], 1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(torch.from_numpy(theta), (n, shape[3], h, w), align_corners=True)
    expected = F.grid_sample(torch.from_numpy(x).permute(0, 3, 1, 2), grid, mode="bilinear",
                             padding_mode="zeros", align_corners=True).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(rotate(x, degrees), expected, rtol=0, atol=1e-10)


# ---------------------------------------------------------------- brightness, contrast, cutout
def test_brightness_shifts_every_pixel_of_an_image_by_one_uniform_delta():
    aug = Augmenter.from_config({"brightness": 0.8}, (5, 4, 3))
    x = batch((4000, 5, 4, 3))
    deltas = aug.draw(4000, np.random.default_rng(9))["brightness"]
    y = aug(x, np.random.default_rng(9))
    shift = y - x
    np.testing.assert_allclose(shift, np.broadcast_to(deltas[:, None, None, None], x.shape), rtol=0, atol=1e-12)
    assert deltas.min() >= -0.8 and deltas.max() < 0.8
    assert abs(deltas.mean()) < 0.03 and abs(deltas.var() - 0.8**2 / 3) < 0.02
    np.testing.assert_allclose(adjust_brightness(x[:2], np.array([1.0, -2.0])) - x[:2],
                               np.array([1.0, -2.0])[:, None, None, None] + 0 * x[:2], atol=1e-12)


def test_contrast_keeps_each_channel_mean_and_scales_the_spread():
    aug = Augmenter.from_config({"contrast": 0.5}, (6, 5, 3))
    x = batch((3000, 6, 5, 3)) * np.array([1.0, 2.0, 0.5]) + np.array([0.3, -1.0, 2.0])
    factors = aug.draw(3000, np.random.default_rng(2))["contrast"]
    y = aug(x, np.random.default_rng(2))
    np.testing.assert_allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=(1, 2)), factors[:, None] * x.std(axis=(1, 2)), rtol=1e-12)
    assert factors.min() >= 0.5 and factors.max() < 1.5 and abs(factors.mean() - 1) < 0.02
    np.testing.assert_allclose(adjust_contrast(x[:3], np.ones(3)), x[:3], rtol=0, atol=1e-14)  # factor 1


def test_cutout_zeroes_exactly_S_by_S_pixels_when_inside_and_the_clipped_square_otherwise():
    x = batch((4, 10, 12, 3)) + 100  # no pixel is 0
    centres = np.array([[5, 6], [2, 2], [0, 0], [9, 11]])
    y = cutout(x, centres, 4)
    zeroed = np.all(y == 0, axis=3)  # (N, H, W)
    assert np.all((y == 0) == zeroed[..., None])  # every channel of a pixel, or none
    # Rows and columns [c - 2, c + 2), clipped: 4 x 4 inside, 2 x 2 at (0, 0), 3 x 3 at (9, 11).
    assert zeroed.sum(axis=(1, 2)).tolist() == [16, 16, 2 * 2, 3 * 3]
    assert zeroed[0, 3:7, 4:8].all() and zeroed[2, :2, :2].all() and zeroed[3, 7:, 9:].all()
    np.testing.assert_array_equal(y[~zeroed], x[~zeroed])
    odd = cutout(x[:1], centres[:1], 3)  # odd size: rows [4, 7)
    assert np.all(odd[0, 4:7, 5:8] == 0) and np.sum(np.all(odd[0] == 0, axis=2)) == 9


# ---------------------------------------------------------------- determinism, inputs, draws
def test_the_same_generator_state_gives_the_same_batch_bit_for_bit():
    aug = Augmenter.from_config(EVERYTHING, (8, 8, 3))
    x = batch((5, 8, 8, 3), dtype=np.float32)
    a = aug(x, np.random.default_rng(42))
    b = aug(x, np.random.default_rng(42))
    c = aug(x, np.random.default_rng(43))
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


def test_resuming_from_a_saved_generator_state_reproduces_the_following_batches():
    """The checkpoint scenario: save the generator's state between batches, restore it later."""
    aug = Augmenter.from_config(EVERYTHING, (8, 8, 3))
    batches = [batch((4, 8, 8, 3), seed=s) for s in range(3)]
    rng = np.random.default_rng(1)
    aug(batches[0], rng)
    saved = rng.bit_generator.state
    uninterrupted = [aug(b, rng) for b in batches[1:]]
    resumed_rng = np.random.default_rng(999)
    resumed_rng.bit_generator.state = saved
    for expected, b in zip(uninterrupted, batches[1:]):
        np.testing.assert_array_equal(aug(b, resumed_rng), expected)
    # Skipped batches can also be replayed by drawing alone (no images).
    replay = np.random.default_rng(1)
    aug.draw(4, replay)
    assert replay.bit_generator.state == saved


def test_the_draws_depend_on_the_config_and_batch_size_only():
    aug = Augmenter.from_config(EVERYTHING, (6, 6, 2))
    states = []
    for x in (batch((3, 6, 6, 2), seed=1), np.zeros((3, 6, 6, 2)), batch((3, 6, 6, 2), seed=2) * 1e6):
        rng = np.random.default_rng(0)
        aug(x, rng)
        states.append(rng.bit_generator.state)
    only_draws = np.random.default_rng(0)
    aug.draw(3, only_draws)
    assert states[0] == states[1] == states[2] == only_draws.bit_generator.state
    # A no-op operation draws nothing: a config with flips off draws brightness first.
    bright = Augmenter.from_config({"brightness": 1.0, "flip_horizontal": False}, (6, 6, 2))
    np.testing.assert_array_equal(bright.draw(3, np.random.default_rng(0))["brightness"],
                                  2 * np.random.default_rng(0).random(3) - 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 3])
def test_shape_and_dtype_are_kept_for_any_batch_size_and_channel_count(dtype, n):
    for channels in (1, 3, 5):
        aug = Augmenter.from_config(EVERYTHING, (7, 6, channels))
        x = batch((n, 7, 6, channels), dtype=dtype)
        kept = x.copy()
        y = aug(x, np.random.default_rng(0))
        assert y.shape == x.shape and y.dtype == dtype and y.flags.writeable
        assert not np.shares_memory(x, y)
        np.testing.assert_array_equal(x, kept)


def test_an_empty_config_is_a_copying_no_op():
    for spec in (None, {}, {"rotate": None}, {"flip_horizontal": False, "cutout": {"size": 0}}):
        aug = Augmenter.from_config(spec, (4, 4, 3))
        assert not aug.enabled and aug.operations == ()
        x = batch((2, 4, 4, 3))
        y = aug(x, np.random.default_rng(0))
        assert y is not x and np.array_equal(x, y)
    # Augmentation off is fine for a dense model's flat input too.
    flat = Augmenter.from_config({}, (784,))
    assert flat(np.zeros((2, 784)), np.random.default_rng(0)).shape == (2, 784)


def test_bad_batches_and_generators_are_refused():
    aug = Augmenter.from_config({"rotate": 10}, (4, 4, 3))
    with pytest.raises(TypeError, match="float array"):
        aug(np.zeros((2, 4, 4, 3), dtype=np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"shape \(2, 5, 4, 3\)"):
        aug(np.zeros((2, 5, 4, 3)), np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        aug(np.zeros((2, 4, 4, 3)), np.random.RandomState(0))
    with pytest.raises(ValueError, match="params lack rotate"):
        aug.apply(np.zeros((2, 4, 4, 3)), {})
    with pytest.raises(ValueError, match="3 entries for a batch of 2"):
        aug.apply(np.zeros((2, 4, 4, 3)), {"rotate": np.zeros(3)})


# ---------------------------------------------------------------- configuration
def test_config_fills_every_default_and_round_trips():
    yaml = pytest.importorskip("yaml")
    aug = Augmenter.from_config({"flip_horizontal": True, "cutout": 8, "rotate": 15}, (28, 28, 3))
    assert aug.config() == {"flip_horizontal": True, "flip_vertical": False, "random_crop": {"padding": 0},
                            "translate": 0, "rotate": 15.0, "brightness": 0.0, "contrast": 0.0,
                            "cutout": {"size": 8}}
    assert list(aug.config()) == list(AUGMENT_KEYS)
    assert yaml.safe_load(yaml.safe_dump(aug.config())) == aug.config()
    again = Augmenter.from_config(yaml.safe_load(yaml.safe_dump(aug.config())), (28, 28, 3))
    assert again.config() == aug.config() and again.operations == ("flip_horizontal", "rotate", "cutout")
    assert Augmenter.from_config(None, (28, 28, 3)).config() == Augmenter((28, 28, 3)).config()
    assert repr(aug) == "Augmenter([28, 28, 3], flip_horizontal=True, rotate=15.0, cutout={'size': 8})"


ALLOWED = "flip_horizontal, flip_vertical, random_crop, translate, rotate, brightness, contrast, cutout"


@pytest.mark.parametrize("spec, shape, message", [
    ([1], (28, 28, 3), "augment: expected a mapping; got [1]"),
    ({"rotation": 3}, (28, 28, 3), f"augment.rotation: unknown key (did you mean 'rotate'?); allowed keys: {ALLOWED}"),
    ({"flip": True}, (28, 28, 3), f"augment.flip: unknown key; allowed keys: {ALLOWED}"),
    ({"flip_horizontal": "yes"}, (28, 28, 3), "augment.flip_horizontal: expected true or false; got 'yes'"),
    ({"flip_vertical": 1}, (28, 28, 3), "augment.flip_vertical: expected true or false; got 1"),
    ({"rotate": -5}, (28, 28, 3), "augment.rotate: expected a number >= 0; got -5"),
    ({"rotate": float("inf")}, (28, 28, 3), "augment.rotate: expected a number >= 0; got inf"),
    ({"rotate": True}, (28, 28, 3), "augment.rotate: expected a number >= 0; got True"),
    ({"brightness": -0.1}, (28, 28, 3), "augment.brightness: expected a number >= 0; got -0.1"),
    ({"brightness": "0.2"}, (28, 28, 3), "augment.brightness: expected a number >= 0; got '0.2'"),
    ({"contrast": 1}, (28, 28, 3), "augment.contrast: expected a number >= 0 and < 1; got 1"),
    ({"contrast": -0.5}, (28, 28, 3), "augment.contrast: expected a number >= 0 and < 1; got -0.5"),
    ({"translate": 1.5}, (28, 28, 3), "augment.translate: expected an int >= 0; got 1.5"),
    ({"translate": -1}, (28, 28, 3), "augment.translate: expected an int >= 0; got -1"),
    ({"translate": 29}, (28, 28, 3), "augment.translate: expected an int <= 28 (the image is 28x28); got 29"),
    ({"random_crop": {"pad": 4}}, (28, 28, 3),
     "augment.random_crop.pad: unknown key (did you mean 'padding'?); allowed keys: padding"),
    ({"random_crop": {}}, (28, 28, 3), "augment.random_crop.padding: missing; for example random_crop: {padding: 4}"),
    ({"random_crop": {"padding": -1}}, (28, 28, 3), "augment.random_crop.padding: expected an int >= 0; got -1"),
    ({"random_crop": {"padding": 2.0}}, (28, 28, 3), "augment.random_crop.padding: expected an int >= 0; got 2.0"),
    ({"random_crop": True}, (28, 28, 3), "augment.random_crop: expected {padding: int >= 0} or an int >= 0; got True"),
    ({"random_crop": {"padding": 29}}, (28, 28, 3),
     "augment.random_crop.padding: expected an int <= 28 (the image is 28x28); got 29"),
    ({"random_crop": 33}, (32, 40, 3), "augment.random_crop: expected an int <= 32 (the image is 32x40); got 33"),
    ({"cutout": {"size": 29}}, (28, 28, 3), "augment.cutout.size: expected an int <= 28 (the image is 28x28); got 29"),
    ({"cutout": 21}, (32, 20, 3), "augment.cutout: expected an int <= 20 (the image is 32x20); got 21"),
    ({"cutout": "8"}, (28, 28, 3), "augment.cutout: expected {size: int >= 0} or an int >= 0; got '8'"),
    ({"cutout": {"size": 4, "count": 2}}, (28, 28, 3), "augment.cutout.count: unknown key; allowed keys: size"),
    ({"rotate": 10}, (784,), "augment: needs images [height, width, channels]; the input shape is [784]"),
])
def test_bad_values_are_refused_in_one_line_naming_the_key(spec, shape, message):
    with pytest.raises(ConfigError) as info:
        Augmenter.from_config(spec, shape)
    assert str(info.value) == message
    assert isinstance(info.value, InputError)
    # The config layer puts its part in front.
    assert str(info.value.prefixed("data")) == "data." + message


def test_the_largest_sizes_that_fit_are_accepted():
    aug = Augmenter.from_config({"random_crop": {"padding": 5}, "translate": 5, "cutout": 5}, (5, 9, 1))
    y = aug(batch((3, 5, 9, 1)), np.random.default_rng(0))
    assert y.shape == (3, 5, 9, 1) and np.isfinite(y).all()


def test_keywords_validate_like_the_config():
    with pytest.raises(ConfigError, match=r"^augment.rotate: expected a number >= 0; got -1$"):
        Augmenter((8, 8, 3), rotate=-1)
    assert Augmenter((8, 8, 3), crop_padding=2, flip_horizontal=True).config() == \
        Augmenter.from_config({"random_crop": {"padding": 2}, "flip_horizontal": True}, (8, 8, 3)).config()


# ---------------------------------------------------------------- any valid config
@st.composite
def configs_and_batches(draw):
    h, w, c = draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 4))
    small = min(h, w)
    spec = {}
    if draw(st.booleans()):
        spec["flip_horizontal"] = draw(st.booleans())
    if draw(st.booleans()):
        spec["flip_vertical"] = draw(st.booleans())
    if draw(st.booleans()):
        padding = draw(st.integers(0, small))
        spec["random_crop"] = draw(st.sampled_from([padding, {"padding": padding}]))
    if draw(st.booleans()):
        spec["translate"] = draw(st.integers(0, small))
    if draw(st.booleans()):
        spec["rotate"] = draw(st.one_of(st.integers(0, 720), st.floats(0, 1e6)))
    if draw(st.booleans()):
        spec["brightness"] = draw(st.floats(0, 1e3))
    if draw(st.booleans()):
        spec["contrast"] = draw(st.floats(0, 1, exclude_max=True))
    if draw(st.booleans()):
        size = draw(st.integers(0, small))
        spec["cutout"] = draw(st.sampled_from([size, {"size": size}]))
    n = draw(st.integers(0, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    return spec, (h, w, c), n, dtype, seed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=configs_and_batches())
def test_any_valid_config_keeps_shape_dtype_and_finite_values(case):
    spec, shape, n, dtype, seed = case
    aug = Augmenter.from_config(spec, shape)
    assert Augmenter.from_config(aug.config(), shape).config() == aug.config()
    x = np.random.default_rng(seed).normal(0, 3, (n,) + shape).astype(dtype)
    kept = x.copy()
    y = aug(x, np.random.default_rng(seed))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(x, kept)
    assert y.tobytes() == aug(x, np.random.default_rng(seed)).tobytes()
