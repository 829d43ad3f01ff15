r"""``gelu``, the Gaussian error linear unit (Hendrycks & Gimpel), exactly as
``torch.nn.GELU(approximate=...)`` defines it.

``approximate: none`` (the default), with ``Phi`` the standard normal CDF:

.. math::  a = z\,\Phi(z) = \frac{z}{2}\Big(1 + \mathrm{erf}\big(z/\sqrt{2}\big)\Big), \qquad
           g'(z) = \Phi(z) + z\,\varphi(z), \quad \varphi(z) = \frac{e^{-z^2/2}}{\sqrt{2\pi}}

``approximate: tanh``:

.. math::  a = \frac{z}{2}\big(1 + \tanh u\big), \quad u = \sqrt{2/\pi}\,(z + 0.044715\, z^3), \qquad
           g'(z) = \tfrac{1}{2}(1 + \tanh u) + \tfrac{z}{2}(1 - \tanh^2 u)\sqrt{2/\pi}\,(1 + 0.134145\, z^2)

Range about [-0.17, inf): the minimum, near ``z = -0.75``, makes ``g`` non-monotonic, so
max pooling cannot run before it, and ``g'`` needs ``z`` (``a`` has two preimages).

**Precision.** ``Phi(z)`` is evaluated as ``erfc(-z/sqrt 2) / 2`` and ``(1 + tanh u) / 2`` as
``sigmoid(2u)``: the same values, but without the cancellation of ``1 + erf`` and
``1 + tanh`` for negative ``z``, so ``a`` keeps its relative precision where it is tiny
(PyTorch's float64 kernels, which write ``1 + erf`` and ``1 + tanh``, agree to a few
1e-16 relative to ``max(1, |a|)``).
Where ``e^{-z^2/2}`` is 0 (|z| > 40) or ``tanh u`` is exactly +-1 (|z| > 100), ``z`` is
clipped inside those terms, so that ``z^2`` and ``z^3`` overflow nothing.

**erf.** NumPy has no vectorized erf (and SciPy is not a dependency), so :func:`erf` and
:func:`erfc` evaluate on whole arrays the rational approximations of Sun's fdlibm
``s_erf.c`` (the coefficients of FreeBSD's ``lib/msun/src/s_erf.c``); against Python's
``math.erf`` and ``math.erfc`` they measure within 1 and 4 ulp in float64 (the 4: NumPy's
``exp``). The intervals of ``|x|``:

* ``|x| < 0.84375``: ``erf(x) = x + x P(x^2)/Q(x^2)``;
* ``0.84375 <= |x| < 1.25``: ``erf(|x|) = c + P1(s)/Q1(s)``, ``s = |x| - 1``, ``c`` = erf(1) to 24 bits;
* ``1.25 <= |x| < 28``: ``erfc(|x|) = e^{-x^2 - 0.5625 + R(1/x^2)/S(1/x^2)} / |x|``, with one
  (R, S) pair below ``1/0.35`` and another above; ``x^2`` is split as ``h^2 + (h - x)(h + x)``
  with ``h`` the top 21 bits of ``x``, so that ``h^2`` is exact and ``e^{-x^2}`` loses nothing
  to the rounding of ``x^2``;
* beyond: ``erf = +-1``, ``erfc`` = 0 or 2.

Float32 inputs are evaluated in float64 and rounded back.
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.nn import validate
from cnncli.nn.activations.base import Activation
from cnncli.nn.functional import sigmoid
from cnncli.nn.registry import register

# -------------------------------------------------------------------------------- erf, erfc
# Coefficients from FreeBSD lib/msun/src/s_erf.c (Sun fdlibm), constant term first.
_PP = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
       -5.77027029648944159157e-03, -2.37630166566501626084e-05)
_QQ = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03,
       1.32494738004321644526e-04, -3.96022827877536812320e-06)
_PA = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
       3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
       -2.16637559486879084300e-03)
_QA = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02,
       1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02)
_RA = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
       -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
       -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_SA = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
       6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
       6.57024977031928170135e+00, -6.04244152148580987438e-02)
_RB = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
       -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
       -4.83519191608651397019e+02)
_SB = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
       3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
       -2.24409524465858183362e+01)
#: erf(1) rounded to 24 bits: P1/Q1 approximates erf(1 + s) minus it.
_ERX = 8.45062911510467529297e-01
#: Where each approximation takes over (|x|); beyond the last, erf is +-1 and erfc 0 or 2
#: to double precision (erfc(28) underflows).
_SMALL_END, _NEAR_ONE_END, _RA_END, _TAIL_END = 0.84375, 1.25, 1 / 0.35, 28.0
#: Keeps the sign bit, exponent and top 20 bits of a float64's fraction: h * h is exact.
_HIGH_BITS = np.uint64(0xFFFFFFFF00000000)
#: Elements per block: large enough that the overhead of the ~110 NumPy calls per block
#: is small, small enough that the temporaries stay in cache. Measured 1.3-1.7x faster
#: than one block for the whole array; splitting over the engine's threads was no faster
#: (the calls between the loops hold the GIL).
_BLOCK = 16384


def _stacked(numerator: tuple[float, ...], denominator: tuple[float, ...]) -> np.ndarray:
    """The coefficients of a rational function as (degree + 1, 2, 1): row k holds both
    polynomials' t^k coefficient (0 above a polynomial's degree)."""
    out = np.zeros((max(len(numerator), len(denominator)), 2, 1))
    out[:len(numerator), 0, 0] = numerator
    out[:len(denominator), 1, 0] = denominator
    return out


_SMALL = _stacked(_PP, _QQ)
_NEAR_ONE = _stacked(_PA, _QA)
_TAIL_INNER = _stacked(_RA, _SA)
_TAIL_OUTER = _stacked(_RB, _SB)


def _rational(t: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """P(t) / Q(t), both polynomials by Horner's rule in the same passes."""
    pq = np.empty((2, t.size))
    pq[...] = coefficients[-1]
    for c in coefficients[-2::-1]:
        pq *= t
        pq += c
    return pq[0] / pq[1]


def _tail(ax: np.ndarray) -> np.ndarray:
    """erfc(|x|) for 1.25 <= |x| < 28."""
    s = 1.0 / (ax * ax)
    inner = ax < _RA_END
    ratio = np.empty_like(ax)
    ratio[inner] = _rational(s[inner], _TAIL_INNER)
    ratio[~inner] = _rational(s[~inner], _TAIL_OUTER)
    high = (ax.view(np.uint64) & _HIGH_BITS).view(np.float64)
    # e^{-x^2} = e^{-h^2} e^{(h - x)(h + x)}: h^2 is exact, the small rest carries the rounding
    out = np.exp(-high * high - 0.5625)
    out *= np.exp((high - ax) * (high + ax) + ratio)
    out /= ax
    return out


def _erf_block(x: np.ndarray, out: np.ndarray, complement: bool) -> None:
    """erf(x), or erfc(x) with ``complement``, of the float64 block ``x`` into ``out``."""
    ax = np.abs(x)
    # |x| >= 28, +-inf, nan: erf = sign(x), erfc = 1 - sign(x)
    np.sign(x, out=out)
    if complement:
        np.subtract(1.0, out, out=out)
    small = ax < _SMALL_END
    if small.any():
        xs = x[small]
        xy = xs * _rational(xs * xs, _SMALL)
        if not complement:
            out[small] = xs + xy
        else:  # from x = 1/4 on, x - 1/2 is exact: 1/2 - ((x - 1/2) + x y) rounds less than 1 - (x + x y)
            out[small] = np.where(xs < 0.25, 1.0 - (xs + xy), 0.5 - ((xs - 0.5) + xy))
    near = (ax >= _SMALL_END) & (ax < _NEAR_ONE_END)
    if near.any():
        rest, xn = _rational(ax[near] - 1.0, _NEAR_ONE), x[near]
        if not complement:
            out[near] = np.copysign(_ERX + rest, xn)
        else:
            out[near] = np.where(xn > 0, (1.0 - _ERX) - rest, 1.0 + (_ERX + rest))
    tail = (ax >= _NEAR_ONE_END) & (ax < _TAIL_END)
    if tail.any():
        rest, xt = _tail(ax[tail]), x[tail]
        out[tail] = np.copysign(1.0 - rest, xt) if not complement else np.where(xt > 0, rest, 2.0 - rest)


def _elementwise(x, complement: bool) -> np.ndarray:
    """erf or erfc of an array, in float64 blocks; the result has ``x``'s float dtype
    (float64 for other inputs)."""
    x = np.asarray(x)
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    out = np.empty_like(flat)
    for start in range(0, max(flat.size, 1), _BLOCK):
        _erf_block(flat[start:start + _BLOCK], out[start:start + _BLOCK], complement)
    return out.reshape(x.shape).astype(dtype, copy=False)


def erf(x) -> np.ndarray:
    """The error function, elementwise, within 1 ulp in float64 (fdlibm's method)."""
    return _elementwise(x, complement=False)


def erfc(x) -> np.ndarray:
    """The complementary error function ``1 - erf(x)``, elementwise, within a few ulp in
    float64 and without the cancellation of ``1 - erf(x)`` for large ``x``."""
    return _elementwise(x, complement=True)


# ------------------------------------------------------------------------------------- gelu
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_KAPPA = 0.044715
#: e^{-z^2/2} is 0 beyond this |z| in float64 and float32: clipping z there changes nothing.
_DENSITY_CLIP = 40.0
#: tanh(u) is exactly +-1 and sigmoid(2u)(1 - sigmoid(2u)) exactly 0 beyond this |z|.
_CUBIC_CLIP = 100.0
#: The minimum of g for each form, at z = -0.75179 and -0.75246 (where g'(z) = 0).
_LOWEST = {"none": -0.16997120747990369, "tanh": -0.170040750571254}


@register("gelu")
class GELU(Activation):
    """a = z Phi(z), Phi the standard normal CDF (approximate: tanh, its tanh approximation)."""

    def __init__(self, *, approximate: str = "none"):
        self.approximate = validate.choice("approximate", approximate, ("none", "tanh"))
        self.output_range = (_LOWEST[self.approximate], math.inf)
        # counting erf, exp and sigmoid as one each: see derivative()
        self.backward_flops = 15 if self.approximate == "tanh" else 10

    def config(self):
        return {"name": self.name, "approximate": self.approximate}

    def _cdf(self, z):
        """Phi(z) = erfc(-z / sqrt 2) / 2."""
        return 0.5 * erfc(-z * _SQRT_HALF)

    @staticmethod
    def _twice_inner(zc):
        """2u = 2 sqrt(2/pi) (z + 0.044715 z^3), of z clipped to +-100 (where it no longer matters)."""
        return (2 * _SQRT_2_OVER_PI) * (zc + _KAPPA * (zc * zc * zc))

    def forward(self, z):
        if self.approximate == "tanh":
            return z * sigmoid(self._twice_inner(np.clip(z, -_CUBIC_CLIP, _CUBIC_CLIP)))
        return z * self._cdf(z)

    def derivative(self, z):
        if self.approximate == "tanh":
            zc = np.clip(z, -_CUBIC_CLIP, _CUBIC_CLIP)
            two_u = self._twice_inner(zc)
            d_two_u = (2 * _SQRT_2_OVER_PI) * (1 + (3 * _KAPPA) * (zc * zc))
            # (1 - tanh^2 u) / 2 = 2 sigmoid(2u) sigmoid(-2u), each factor to full precision
            s = sigmoid(two_u)
            return s + zc * d_two_u * s * sigmoid(-two_u)
        zc = np.clip(z, -_DENSITY_CLIP, _DENSITY_CLIP)
        return self._cdf(z) + zc * (np.exp(-0.5 * (zc * zc)) * _INV_SQRT_2PI)

    def formula(self):
        if self.approximate == "tanh":
            return ("a = 0.5 z (1 + tanh(u)),  u = sqrt(2/pi) (z + 0.044715 z^3)",
                    r"a = \tfrac{1}{2} z\,(1 + \tanh u),\quad u = \sqrt{2/\pi}\,(z + 0.044715\, z^3)")
        return ("a = z Phi(z) = 0.5 z (1 + erf(z / sqrt(2)))",
                r"a = z\,\Phi(z) = \tfrac{1}{2} z\,\big(1 + \mathrm{erf}(z/\sqrt{2})\big)")

    def derivative_formula(self):
        if self.approximate == "tanh":
            return ("g'(z) = 0.5 (1 + t) + 0.5 z (1 - t^2) sqrt(2/pi) (1 + 0.134145 z^2),  t = tanh(u)",
                    r"g'(z) = \tfrac{1}{2}(1 + t) + \tfrac{1}{2} z\,(1 - t^2)\sqrt{2/\pi}\,(1 + 0.134145\, z^2),"
                    r"\quad t = \tanh u")
        return ("g'(z) = Phi(z) + z e^(-z^2/2) / sqrt(2 pi)",
                r"g'(z) = \Phi(z) + \frac{z\, e^{-z^2/2}}{\sqrt{2\pi}}")
